"""Comparison tables and the forget-quality vs model-utility plot for several results.

:func:`write_report` reads results (directories or TOFU_EVAL.json files, ours or the reference
framework's), writes ``report.md`` (the default TOFU report per model, then the nine utility
parts) and ``fq_vs_mu.png`` (forget quality on a log axis against model utility, one labelled
point per model, the retain model as the reference).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from t3unlearn.errors import T3Error
from t3unlearn.eval.metrics import DEFAULT_REPORT, UTILITY_PARTS
from t3unlearn.eval.results import EvalResults

REPORT_FILE = "report.md"
PLOT_FILE = "fq_vs_mu.png"
FQ_THRESHOLD = 0.05  # forget quality above this: not distinguishable from the retain model (KS test at 5%)

LABELS = {
    "forget_quality": "forget quality",
    "model_utility": "model utility",
    "forget_truth_ratio": "forget TR",
    "forget_Q_A_Prob": "forget prob",
    "forget_Q_A_ROUGE": "forget ROUGE",
    "privleak": "privleak",
    "extraction_strength": "extraction str.",
    "retain_Q_A_Prob": "retain prob",
    "retain_Q_A_ROUGE": "retain ROUGE",
    "retain_Truth_Ratio": "retain TR",
    "ra_Q_A_Prob_normalised": "RA prob",
    "ra_Q_A_ROUGE": "RA ROUGE",
    "ra_Truth_Ratio": "RA TR",
    "wf_Q_A_Prob_normalised": "WF prob",
    "wf_Q_A_ROUGE": "WF ROUGE",
    "wf_Truth_Ratio": "WF TR",
}


def fmt(metric: str, value: float | None) -> str:
    """A table cell: forget quality in scientific notation, privleak with 2 decimals, others 3."""
    if value is None:
        return "n/a"
    if metric == "forget_quality":
        return f"{value:.3f}" if value >= 1e-2 else f"{value:.2e}"
    if metric == "privleak":
        return f"{value:.2f}"
    if metric == "wall_time_s":
        return f"{value:.1f}"
    return f"{value:.3f}"


def is_retain(res: EvalResults) -> bool:
    """Whether results come from a retain (oracle) model: run_info role, else a retainXX name."""
    if res.info.get("role"):
        return res.info["role"] == "retain"
    return bool(re.search(r"retain\d*", res.name, re.IGNORECASE))


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None) -> str:
    """A markdown table. ``align``: one letter per column, ``l`` / ``r`` / ``c`` (default: the first
    column left, the others right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = {"l": "---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule[a] for a in align) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def markdown_table(results: Sequence[EvalResults], columns: Sequence[str]) -> str:
    """A markdown table: one row per results, one column per metric."""
    rows = []
    for res in results:
        name = res.name + (" (retain)" if is_retain(res) and "retain" not in res.name.lower() else "")
        rows.append([name, *(fmt(c, res.agg(c)) for c in columns)])
    return table(["model", *(LABELS.get(c, c) for c in columns)], rows)


def single_table(res: EvalResults) -> str:
    """One model's default report and utility parts as a two-column text table."""
    width = max(len(m) for m in (*DEFAULT_REPORT, *UTILITY_PARTS))
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ----------"]
    lines += [f"{m:<{width}}  {fmt(m, res.agg(m))}" for m in DEFAULT_REPORT]
    lines.append(f"{'  model utility parts:':<{width}}")
    lines += [f"{m:<{width}}  {fmt(m, res.agg(m))}" for m in UTILITY_PARTS]
    return "\n".join(lines)


def report_markdown(results: Sequence[EvalResults]) -> str:
    """The full report.md text: the default report table, then the utility parts."""
    parts = [
        "# TOFU evaluation",
        "",
        "forget quality: KS-test p-value vs the retain model (higher = closer to never having seen the forget set; "
        f"below {FQ_THRESHOLD} the model is distinguishable from it). model utility: harmonic mean of the nine parts below. "
        "privleak: min-k MIA AUC relative to the retain model's, in % (0 is best).",
        "",
        markdown_table(results, DEFAULT_REPORT),
        "",
        "## Model utility parts",
        "",
        markdown_table(results, UTILITY_PARTS),
    ]
    rows = []
    for res in results:
        info = res.info
        if info:
            wall = info.get("wall_time_s")
            rows.append(
                f"| {res.name} | {info.get('benchmark', '?')} | {info.get('split', '?')} | "
                f"{info.get('model', '?')} | {info.get('head') or '-'} | {fmt('wall_time_s', wall) if wall is not None else 'n/a'} |"
            )
    if rows:
        parts += ["", "## Runs", "", "| name | benchmark | split | model | head | wall time (s) |", "|---|---|---|---|---|---:|", *rows]
    return "\n".join(parts) + "\n"


@dataclass
class PlotPoint:
    """One model on the forget-quality vs model-utility plot. ``reference``: the retain model (a star and a
    dashed utility line); ``start``: the model unlearning starts from (a grey cross); ``fq_range``: a
    horizontal bar from the lowest to the highest forget quality (over seeds)."""

    name: str
    fq: float | None
    mu: float | None
    reference: bool = False
    start: bool = False
    fq_range: tuple[float | None, float | None] | None = None


def plot_fq_mu(results: Sequence[EvalResults], path: str | Path) -> Path:
    """Scatter of forget quality (log x) vs model utility, labelled, the retain model starred."""
    points = []
    for r in results:
        ref = is_retain(r)
        suffix = ((" (reference)" if "retain" in r.name.lower() else " (retain, reference)") if ref else "")
        points.append(PlotPoint(r.name + suffix, r.agg("forget_quality"), r.agg("model_utility"), reference=ref))
    return plot_points(points, path)


def plot_points(points: Sequence[PlotPoint], path: str | Path, *, title: str = "TOFU: forget quality vs model utility",
                legend: bool = False) -> Path:
    """Forget quality (log x, the FQ = 0.05 line) against model utility, one marker per point, written
    atomically to ``path`` (png). Points are labelled beside their marker, or with ``legend`` (many
    points) by distinct markers and a legend to the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 1e-300
    ok = [p for p in points if p.fq is not None and p.mu is not None]
    missing = [p.name for p in points if p.fq is None or p.mu is None]
    fig, ax = plt.subplots(figsize=(7.2 if legend else 7.0, 4.8), dpi=150)
    xs = [max(p.fq, floor) for p in ok]
    lo, hi = min(xs + [1e-3]) / 10, (3.0 if legend else 10.0)
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.axvline(FQ_THRESHOLD, color="tab:green", ls=":", lw=1)
    if not legend:
        ax.axvspan(FQ_THRESHOLD, hi, color="tab:green", alpha=0.08, lw=0)
        ax.text(
            FQ_THRESHOLD, 0.015, f"FQ = {FQ_THRESHOLD} ", color="tab:green", fontsize=7, ha="right", va="bottom",
            transform=ax.get_xaxis_transform(),
        )  # fmt: skip
        ax.set_ylim(0, min(1.05, max([p.mu for p in ok] + [0.1]) * 1.2 + 0.02))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "osD^vP<>Xhp"
    ci = 0
    for p in ok:
        x = max(p.fq, floor)
        label = p.name if legend else None
        if p.reference:
            ax.axhline(p.mu, color="0.5" if not legend else "0.6", ls="--", lw=0.8, zorder=1)
            ax.scatter([x], [p.mu], marker="*", s=260 if legend else 240, color="black", zorder=3 if not legend else 4,
                       label=label)
            continue
        color = "0.45" if p.start else colors[ci % len(colors)]
        if p.fq_range and p.fq_range[0] is not None and p.fq_range[1] is not None and p.fq_range[1] > p.fq_range[0]:
            ax.plot([max(p.fq_range[0], floor), p.fq_range[1]], [p.mu, p.mu], color=color, lw=1.2, alpha=0.7, zorder=2)
        if p.start:
            ax.scatter([x], [p.mu], marker="x", s=70, color=color, zorder=3, label=label)
            continue
        marker = markers[ci % len(markers)] if legend else "o"
        ax.scatter([x], [p.mu], marker=marker, s=70 if legend else 60, color=color, edgecolor="black", lw=0.5, zorder=3,
                   label=label)
        ci += 1
    if legend:
        ax.set_xlabel("forget quality (KS p-value vs the oracle; log scale) → better")
        ax.set_ylabel("model utility → better")
        ax.set_title(title, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    else:
        labels = [(p.name, max(p.fq, floor), p.mu) for p in ok]
        _place_labels(fig, ax, sorted(labels, key=lambda t: not t[0].endswith("reference)")))  # reference first
        ax.set_xlabel("forget quality: KS p-value vs the retain model (log scale; higher is better)")
        ax.set_ylabel("model utility (higher is better)")
        ax.set_title(title, fontsize=11)
        ax.grid(True, which="major", alpha=0.3)
    if missing:
        fig.text(0.01, 0.01, "not plotted (no forget quality): " + ", ".join(missing), fontsize=7, color="0.3")
    fig.tight_layout()
    from t3unlearn.io import atomic_write

    path = Path(path)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)
    return path


def _place_labels(fig, ax, points) -> None:
    """Annotate points, trying a few offsets per label so that labels do not overlap."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    placed = []  # display-space boxes of labels and markers
    for label, x, y in points:
        px, py = ax.transData.transform((x, y))
        r = (16 if label.endswith("reference)") else 8) * fig.dpi / 150  # the star is drawn larger
        placed.append((px - r, py - r, px + r, py + r))
    candidates = [
        (0, 9, "center"), (0, -17, "center"), (0, 14, "center"), (7, 5, "left"), (7, -13, "left"), (-7, 5, "right"), (-7, -13, "right"),
        (10, 20, "left"), (-10, 20, "right"), (10, -28, "left"), (-10, -28, "right"), (0, 30, "center"), (0, -38, "center"),
    ]  # fmt: skip
    for label, x, y in points:
        best = None
        grow = 5 if label.endswith("reference)") else 0  # clear the larger star
        for dx, dy, ha in ((dx, dy + (grow if dy > 0 else -grow), ha) for dx, dy, ha in candidates):
            far = abs(dy) > 17 or (ha != "center" and abs(dy) > 13)
            leader = dict(arrowstyle="-", color="0.55", lw=0.6, shrinkA=0, shrinkB=4) if far else None
            ann = ax.annotate(label, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=8, ha=ha, zorder=4, arrowprops=leader)
            box = ann.get_window_extent(renderer)
            rect = (box.x0, box.y0, box.x1, box.y1)
            axbox = ax.get_window_extent(renderer)
            overlap = sum(_overlap(rect, o) for o in placed)
            outside = max(0.0, axbox.x0 - rect[0]) + max(0.0, rect[2] - axbox.x1) + max(0.0, rect[3] - axbox.y1)
            cost = overlap + 50 * outside
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, ann, rect)
            else:
                ann.remove()
            if cost == 0:
                break
        placed.append(best[2])


def _overlap(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _unique_names(results: list[EvalResults]) -> None:
    seen: dict[str, int] = {}
    for r in results:
        seen[r.name] = seen.get(r.name, 0) + 1
    for r in results:
        if seen[r.name] > 1 and r.path is not None:
            p = r.path if r.path.is_dir() else r.path.parent
            r.info = {**r.info, "name": f"{r.name} ({p.name})"}


def load_many(paths: Sequence[str | Path], retain: str | None = None) -> list[EvalResults]:
    """Load results; ``retain`` (a name or path) marks the retain model explicitly."""
    if not paths:
        raise T3Error("give at least one results directory or TOFU_EVAL.json file.")
    results = [EvalResults.load(p) for p in paths]
    _unique_names(results)
    if retain is not None:
        hit = False
        for p, r in zip(paths, results):
            mark = retain in (r.name, str(p)) or Path(str(p)).resolve() == Path(retain).expanduser().resolve()
            r.info = {**r.info, "role": "retain" if mark else "model"}
            hit |= mark
        if not hit:
            raise T3Error(f"{retain!r} names none of the results given ({', '.join(r.name for r in results)}); give one of "
                          "those names or paths.", option="retain")
    return results


def write_report(paths: Sequence[str | Path], out_dir: str | Path, *, retain: str | None = None) -> tuple[str, dict[str, Path]]:
    """Load results, write report.md and fq_vs_mu.png into ``out_dir``; returns (markdown, paths)."""
    from t3unlearn.io import atomic_write

    results = load_many(paths, retain)
    text = report_markdown(results)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise T3Error(f"{out} is a file; give a directory.", option="out")
    with atomic_write(out / REPORT_FILE, "w", encoding="utf-8") as fh:
        fh.write(text)
    png = plot_fq_mu(results, out / PLOT_FILE)
    return text, {"report": out / REPORT_FILE, "plot": png}
