"""The README is a manual and the docs hold together: README prose within 1,500 words, no dated or
machine-bound passages in it or in the user docs and results pages (history lives in docs/notes/), and
every relative link (and its #anchor) in README.md and docs/**/*.md
points at something that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_PROSE_WORDS = 1500

_FENCE = re.compile(r"^\s*(```|~~~)")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_DATED = re.compile(r"20\d\d-\d\d-\d\d|this machine", re.IGNORECASE)


def prose_lines(text: str, tables: bool = False) -> list[str]:
    """The lines outside fenced code blocks and (unless ``tables``) outside tables."""
    out, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if fenced or (not tables and line.lstrip().startswith("|")):
            continue
        out.append(line)
    return out


def prose_words(text: str) -> int:
    return sum(len(line.split()) for line in prose_lines(text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(text):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(doc: Path, root: Path = ROOT) -> list[str]:
    """Every relative link of ``doc`` (outside code, tables included) whose file, or whose #anchor in a markdown
    file, is missing."""
    text = doc.read_text(encoding="utf-8")
    bad = []
    for line in prose_lines(text, tables=True):
        for url in _LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", url, re.IGNORECASE):  # http:, https:, mailto:
                continue
            path, _, anchor = url.partition("#")
            target = (doc.parent / path).resolve() if path else doc.resolve()
            where = f"{doc.relative_to(root)}: ({url})"
            if not target.exists():
                bad.append(f"{where} -> no such file")
            elif anchor and target.suffix == ".md" and anchor not in anchors(target.read_text(encoding="utf-8")):
                bad.append(f"{where} -> no heading '#{anchor}' in {target.relative_to(root)}")
    return bad


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def test_readme_prose_is_at_most_1500_words():
    words = prose_words((ROOT / "README.md").read_text(encoding="utf-8"))
    assert words <= README_PROSE_WORDS, f"README.md has {words} words of prose (outside code and tables); keep it <= {README_PROSE_WORDS}"


def test_readme_has_no_dated_or_machine_bound_passages():
    hits = [line.strip() for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines() if _DATED.search(line)]
    assert not hits, "README.md has dated or machine-bound passages (move them to docs/notes/):\n" + "\n".join(hits)


def test_user_docs_and_results_have_no_dated_passages():
    """Dated history lives in docs/notes/; the other pages may link to a note (its file name has a date)."""
    pages = sorted((ROOT / "docs").glob("*.md")) + sorted((ROOT / "docs" / "results").glob("*.md"))
    hits = [f"{page.relative_to(ROOT)}: {line.strip()}" for page in pages
            for line in prose_lines(page.read_text(encoding="utf-8"))
            if _DATED.search(re.sub(r"\]\([^)]*\)", "]()", line))]
    assert not hits, "dated or machine-bound passages outside docs/notes/:\n" + "\n".join(hits)


def test_every_relative_link_in_readme_and_docs_resolves():
    bad = [b for doc in doc_files() for b in broken_links(doc)]
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_the_checks_catch_what_they_should(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Deploying it: `serve`\n", encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# x\n\n[ok](docs/a.md) [ok too](docs/a.md#deploying-it-serve) [gone](docs/b.md) [bad anchor](docs/a.md#nope)\n"
        "```bash\n[in code](docs/c.md)\n```\n| [in a table](docs/a.md) | [gone in a table](docs/a.md#gone) |\n"
        "[web](https://example.com)\n",
        encoding="utf-8")
    bad = broken_links(readme, tmp_path)
    assert len(bad) == 3 and "docs/b.md" in bad[0] and "#nope" in bad[1] and "#gone" in bad[2]
    assert prose_words("one two\n```\nthree four five\n```\n| six | seven |\neight\n") == 3
    assert _DATED.search("on 2026-12-04 it printed") and _DATED.search("on This machine")
    assert not _DATED.search("issue #34, 1,500 words")
