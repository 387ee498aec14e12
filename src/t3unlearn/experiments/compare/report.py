"""The comparison's table, sweep table, verdict and plot, and the generated sections of a ``--doc`` file.

Cells are formatted and tables and the plot drawn by :mod:`t3unlearn.eval.report` (the same code as
``t3unlearn report``); this module only says what goes in them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence

from t3unlearn.experiments.compare.config import Selection
from t3unlearn.experiments.compare.selection import feasible, title
from t3unlearn.eval.report import PlotPoint, fmt, plot_points, table

COLUMNS = (
    ("forget_quality", "forget quality ↑"),
    ("model_utility", "model utility ↑"),
    ("forget_Q_A_ROUGE", "forget ROUGE ↓"),
    ("forget_truth_ratio", "forget truth ratio"),
    ("privleak", "privleak (→0)"),
    ("extraction_strength", "extraction strength ↓"),
)
# the verdict's wall-time ratios, in this order
COST_METHODS = ("graddiff", "npo", "gradascent", "simnpo", "idkdpo", "rmu", "uld")


def number(x) -> str:
    """A short number for log lines."""
    return "n/a" if x is None else f"{x:.3g}"


def cell_value(metric: str, v: float | None) -> str:
    """Like the evaluation report's cells, plus the cost columns."""
    if v is not None and metric in ("wall_seconds", "peak_rss_mb"):
        return f"{v:.1f}" if v < 100 else f"{v:.0f}"
    return fmt(metric, v)


def cell(metric: str, pair) -> str:
    """``mean ± stdev`` (the stdev left out when it is 0 or unknown)."""
    mu, sd = pair if isinstance(pair, (tuple, list)) else (pair, None)
    if mu is None:
        return "n/a"
    return cell_value(metric, mu) if not sd else f"{cell_value(metric, mu)} ± {cell_value(metric, sd)}"


def param_count(n) -> str:
    if n is None:
        return "n/a"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def markdown_table(rows: Sequence[dict]) -> str:
    """One row per method: the TOFU columns (mean ± std over seeds) and the cost columns."""
    head = ["method", "setting", "seeds", *(t for _, t in COLUMNS), "trainable params", "wall time (s)", "peak RSS (MB)"]
    body = []
    for r in rows:
        cells = [r["title"], r["setting"], str(len(r["seeds"]))]
        cells += [cell(k, r[k]) for k, _ in COLUMNS]
        cells += [param_count(r["trainable_params"]), cell("wall_seconds", r["wall_seconds"]), cell("peak_rss_mb", r["peak_rss_mb"])]
        body.append(cells)
    return table(head, body, "ll" + "r" * (len(head) - 2))


def sweep_table(sweeps: dict[str, list[dict]], chosen: dict[str, int], selection: Selection,
                full_utility: float | None = None) -> str:
    """Every sweep setting's first-seed selection metrics, the chosen one ticked ("✓ none feasible" where no setting
    met the constraints and the rule took the one that misses them by least)."""
    metrics = [m for m in (selection.metric, selection.mia_metric, selection.utility_metric) if m]
    body = []
    for method, recs in sweeps.items():
        none_ok = not any(feasible(r, full_utility, selection) for r in recs)
        for i, r in enumerate(recs):
            s = r["summary"]
            tick = ("✓ none feasible" if none_ok else "✓") if chosen.get(method) == i else ""
            body.append([title(method), r["setting"], *(cell_value("x", s.get(m)) for m in metrics), tick])
    return table(["method", "setting (first seed)", *metrics, "chosen"], body, "ll" + "r" * len(metrics) + "c")


def verdict(rows: Sequence[dict], full_utility: float | None, tol: float) -> list[str]:
    """Plain-language checks: does T3 beat every baseline on forget quality within the utility band; wall-time ratios."""
    by = {r["method"]: r for r in rows}
    out = []
    if "t3" in by and full_utility is not None:
        floor = full_utility * (1 - tol)
        fq, mu = by["t3"]["forget_quality"][0], by["t3"]["model_utility"][0]
        others = [r for r in rows if r["method"] not in ("t3", "full", "retrain") and r["forget_quality"][0] is not None]
        in_band = [r for r in others if r["model_utility"][0] is not None and r["model_utility"][0] >= floor]
        beaten = [r for r in in_band if fq is not None and r["forget_quality"][0] >= fq]
        status = "within" if mu is not None and mu >= floor else "outside"
        out.append(
            f"- T3: forget quality {cell_value('forget_quality', fq)} at model utility {cell_value('x', mu)} ({status} {1 - tol:g}x the full "
            f"model's {full_utility:.3f}). Methods within that utility band: "
            + (", ".join(f"{r['title']} ({cell_value('forget_quality', r['forget_quality'][0])})" for r in in_band) or "none")
            + ". "
            + ("T3 has the highest forget quality among them." if not beaten and status == "within" else
               ("Not beaten within the band, but T3 itself is outside it." if not beaten else
                "T3 is matched or beaten by: " + ", ".join(r["title"] for r in beaten) + "."))
        )
    if "t3" in by and by["t3"]["wall_seconds"][0]:
        t = by["t3"]["wall_seconds"][0]
        ratios = [f"{by[m]['title']} {by[m]['wall_seconds'][0] / t:.1f}x" for m in COST_METHODS if m in by and by[m]["wall_seconds"][0]]
        if ratios:
            what = "feature extraction + head training" + (" + calibration" if str(by["t3"]["setting"]).startswith("calibrated") else "")
            out.append(f"- Unlearning wall time relative to T3's {t:.1f}s ({what}): " + ", ".join(ratios) + ".")
    return out


def plot(rows: Sequence[dict], path: Path, title: str, note: str = "mean over seeds; bars: seed range") -> Path:
    """Forget quality (log x) vs model utility: one marker per method (mean over seeds) with a legend,
    horizontal bars from the lowest to the highest seed's forget quality; the oracle starred."""
    points = [PlotPoint(r["title"] + (" (reference)" if r["method"] == "retrain" else ""), r["forget_quality"][0],
                        r["model_utility"][0], reference=r["method"] == "retrain", start=r["method"] == "full",
                        fq_range=tuple(r.get("fq_range") or (None, None)))
              for r in rows]
    return plot_points(points, path, title=f"{title}: forget quality vs model utility ({note})",
                       legend=True)


def doc_key(benchmark: str | None, split: str, trainings: Sequence[int] | None = None) -> str:
    """What names one report's section and plot in a ``--doc`` file: the split for a world, ``tofu SPLIT``
    for TOFU, so TOFU's forget10 does not overwrite the world's in the same document; a table over several
    model trainings adds them (``forget10 trainings 0-1-2``), beside the one-training table."""
    key = f"tofu {split}" if benchmark == "tofu" else split
    return key + (" trainings " + "-".join(str(t) for t in trainings) if trainings else "")


def doc_markers(split: str, benchmark: str | None = None, trainings: Sequence[int] | None = None) -> tuple[str, str]:
    """The markers around one report's generated section of a ``--doc`` file."""
    key = doc_key(benchmark, split, trainings)
    return (f"<!-- t3unlearn compare {key}: generated, do not edit by hand -->", f"<!-- end of generated section {key} -->")


def check_doc(doc: str | os.PathLike) -> None:
    """A T3Error (before any work) unless ``--doc`` can take generated sections: not a directory, in a writable
    place, and every generated section's begin marker followed by its end marker (a stray marker would make
    the next replacement delete the hand-written text after it)."""
    import re

    from t3unlearn.errors import T3Error
    from t3unlearn.t3.options import check_writable

    doc = Path(doc)
    if doc.is_dir():
        raise T3Error(f"{doc} is a directory; give a markdown file.", option="doc")
    check_writable(doc.parent, option="doc")
    if doc.is_file():
        text = doc.read_text(encoding="utf-8")
        for key in re.findall(r"<!-- t3unlearn compare (.+?): generated, do not edit by hand -->", text):
            begin, end = (f"<!-- t3unlearn compare {key}: generated, do not edit by hand -->",
                          f"<!-- end of generated section {key} -->")
            if text.count(begin) != 1 or end not in text.split(begin, 1)[1]:
                raise T3Error(f"{doc}: the generated section {key!r} has no single begin marker followed by its end "
                              f"marker ({end!r}); restore the missing marker or delete the stray one, then rerun.",
                              option="doc")


def write_doc(doc: str | os.PathLike, reports: Sequence[dict], command: str) -> Path:
    """Put each report's table and plot into ``doc``, one generated section per split (replaced when
    present, appended otherwise, each with the command that made it); plots are copied beside the document."""
    from t3unlearn.io import atomic_write, replace_section

    doc = Path(doc)
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = doc.read_text(encoding="utf-8") if doc.is_file() else "# Comparison\n"
    for rep in reports:
        begin, end = doc_markers(rep["split"], rep.get("benchmark"), rep.get("trainings"))
        png = Path(rep["plot"])
        target = doc.parent / f"comparison_{doc_key(rep.get('benchmark'), rep['split'], rep.get('trainings')).replace(' ', '_')}.png"
        if png.resolve() != target.resolve():
            with atomic_write(target, "wb") as fh, open(png, "rb") as src:
                shutil.copyfileobj(src, fh)
        block = "\n".join([begin, "", "```bash", command, "```", "", rep["markdown"],
                           f"![forget quality vs model utility, {rep['split']}]({target.name})", "", end])
        try:
            text = replace_section(text, begin, end, block)
        except ValueError as e:
            from t3unlearn.errors import T3Error

            raise T3Error(f"{doc} {e}.", option="doc") from None
    with atomic_write(doc, "w", encoding="utf-8") as fh:
        fh.write(text)
    return doc


__all__ = ["COLUMNS", "check_doc", "doc_markers", "markdown_table", "plot", "sweep_table", "verdict", "write_doc"]
