"""A candidate (not used by the package): perturbed answers for TOFU's never-seen calibration authors.

TOFU writes perturbed answers (the same kind of statement with wrong facts) for its evaluation sets only, so
its calibration authors have none, and calibration's never-seen reference (the base's truth ratios on authors
it never saw; ``t3unlearn.t3.calibrate``) cannot be used on TOFU. This module makes them without a model and
without reading any evaluation file; ``reference_truth_ratios.py tofu`` measures how well the resulting reference
matches the oracle's forget truth ratios (docs/notes/2026-12-06-tofu-calibration-perturbations.md: worse than the
pretrained checkpoint's, so the package does not use it):

- an item's **perturbed answers** are the answers of :data:`N_PERTURBED` other authors of the same set to the
  questions most like its own (TF-IDF cosine of the questions with every author's name masked; at most one
  question per author), with that author's name written as this item's author's: a statement of the same kind
  about this author, carrying another author's facts;
- its **paraphrased answer** is its own answer (the model never saw either wording).

An author's name is the longest run of capitalised words found in at least half as many of their questions as the
most frequent one, which is how TOFU's questions refer to their author. A question that does not name its author
("What is the full name of the author born in ...?") asks for the name, so there the other authors' names stay:
they are the wrong fact. The other author's pronouns are turned into this author's (he/she, his/her, ...) where
the two authors' answers use different ones.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Sequence

N_PERTURBED = 5  # as many as TOFU's forget sets carry per item
_RUN = re.compile(r"[A-Z][\w\-]*(?:\s+[A-Z][\w\-]*)*")


def author_name(questions: Sequence[str]) -> str:
    """The author's name in one author's questions: the longest capitalised run (or part of one) found in at least
    half as many questions as the most frequent one."""
    counts: Counter = Counter()
    for q in questions:
        grams = set()
        for run in _RUN.findall(q):
            words = run.split()
            grams |= {" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)}
        counts.update(grams)
    if not counts:
        raise ValueError("no capitalised name found in an author's questions; these items do not look like TOFU's.")
    top = max(counts.values())
    return max((g for g in counts if 2 * counts[g] >= top), key=lambda g: (len(g.split()), counts[g], g))


_PRONOUNS = {"he": "she", "she": "he", "his": "her", "her": "his", "him": "her", "himself": "herself",
             "herself": "himself", "hers": "his"}
_PRONOUN = re.compile(r"\b(" + "|".join(_PRONOUNS) + r")\b", re.IGNORECASE)


def pronoun_of(answers: Sequence[str]) -> str:
    """``"he"`` or ``"she"``, whichever set of pronouns the answers use more (``"she"`` on a tie)."""
    words = Counter(w.lower() for a in answers for w in _PRONOUN.findall(a))
    male = words["he"] + words["his"] + words["him"] + words["himself"]
    return "he" if male > words["she"] + words["her"] + words["herself"] + words["hers"] else "she"


def swap_pronouns(text: str) -> str:
    """``text`` with he/she, his/her, him/her, himself/herself swapped (keeping capitals)."""
    def one(m):
        w = _PRONOUNS[m.group(0).lower()]
        return w.capitalize() if m.group(0)[0].isupper() else w
    return _PRONOUN.sub(one, text)


def rename(text: str, old: str, new: str) -> str:
    """``text`` with author ``old`` written as ``new``: the full name, then its first and last words alone."""
    out = text.replace(old, new)
    o, n = old.split(), new.split()
    for a, b in ({(o[0], n[0]), (o[-1], n[-1])} if len(o) > 1 else set()):
        out = re.sub(rf"\b{re.escape(a)}\b", b, out)
    return out


def with_perturbations(rows: Sequence[dict[str, Any]], items_per_author: int, *,
                       n_perturbed: int = N_PERTURBED) -> list[dict[str, Any]]:
    """``rows`` (whole authors of ``items_per_author`` contiguous items, in TOFU's order) with a
    ``paraphrased_answer`` and ``n_perturbed`` ``perturbed_answer`` each (the module doc)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    rows = [dict(r) for r in rows]
    n_authors = len(rows) // items_per_author
    if len(rows) % items_per_author or n_authors <= n_perturbed:
        raise ValueError(f"perturbed answers need whole authors of {items_per_author} items and more than "
                         f"{n_perturbed} authors; got {len(rows)} items.")
    author = [i // items_per_author for i in range(len(rows))]
    block = [rows[a * items_per_author:(a + 1) * items_per_author] for a in range(n_authors)]
    names = [author_name([r["question"] for r in b]) for b in block]
    pronoun = [pronoun_of([r["answer"] for r in b]) for b in block]
    masked = [rows[i]["question"].replace(names[author[i]], " ") for i in range(len(rows))]
    vectors = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(masked)
    similarity = (vectors @ vectors.T).toarray()
    for i, row in enumerate(rows):
        picked: list[int] = []
        for j in sorted(range(len(rows)), key=lambda j: (-similarity[i, j], j)):
            if author[j] != author[i] and all(author[j] != author[k] for k in picked):
                picked.append(j)
                if len(picked) == n_perturbed:
                    break
        row["paraphrased_answer"] = row["answer"]
        named = names[author[i]] in row["question"]
        row["perturbed_answer"] = [_transplant(rows[j]["answer"], names[author[j]], names[author[i]], named,
                                               pronoun[author[j]] != pronoun[author[i]]) for j in picked]
    return rows


def _transplant(answer: str, old: str, new: str, named: bool, swap: bool) -> str:
    """Another author's answer about this author: renamed when the question names its author, pronouns swapped
    when the two authors' differ."""
    out = rename(answer, old, new) if named else answer
    return swap_pronouns(out) if swap else out
