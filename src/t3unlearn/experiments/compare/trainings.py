"""One comparison over several trainings of the benchmark's own tiny models.

The tiny models (the pretrained base, the full model, the oracle) come out differently from one training seed to
the next, and from one machine to the next. A table from one training says how the methods did on those models;
a table over several says what holds. ``compare(..., trainings=[0, 1, 2])`` runs the whole comparison on each
training (its own sweeps, selections, calibration and oracle, under ``OUT/SPLIT/training-S/``) and
:func:`combine` puts every evaluated run into one table: mean ± sd over trainings × seeds, with each training's
figures and selections beside it, and what an exact unlearner reads there (each training's oracle scored against
each other training's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from t3unlearn.errors import T3Error
from t3unlearn.experiments.compare.report import cell, cell_value, markdown_table, plot, verdict
from t3unlearn.experiments.compare.selection import aggregate, mean_and_stdev, title


def parse_trainings(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; anything else is one clear error."""
    try:
        values = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        values = []
    if not values or any(v < 0 for v in values):
        raise T3Error(f"must be comma-separated training seeds >= 0, e.g. 0,1,2; not {text!r}.", option="trainings")
    return values


def check_trainings(trainings: Sequence[int], benchmark: str, model, retain_model, pretrained) -> list[int]:
    """The training seeds, each once, in order; only for the benchmark's own tiny models."""
    seeds = list(dict.fromkeys(int(t) for t in trainings))
    if not seeds or any(t < 0 for t in seeds):
        raise T3Error(f"must be training seeds >= 0, e.g. 0,1,2; not {list(trainings)}.", option="trainings")
    if model or retain_model or pretrained:
        raise T3Error(f"trains the {benchmark} benchmark's own tiny models with each seed; it does not apply to a model "
                      "you give (--model, --oracle, --pretrained): compare each of your trainings on its own.",
                      option="trainings")
    return seeds


def combine(done: Sequence[tuple[int, dict, dict]], methods: Sequence[str], benchmark: str, split: str, selection,
            out: Path, exact: Sequence[dict] = ()) -> tuple[dict, str, Path]:
    """``done``: ``(training seed, its report, its records by method)`` for each training; ``exact``: each training's
    oracle scored against each other one (:func:`t3unlearn.eval.runner.cross_reference`). Returns the report over
    all of them (rows: mean ± sd over every training's seeds), its markdown and its plot."""
    trainings = [t for t, _, _ in done]
    rows = []
    for m in ["full", *methods]:
        labels = [next((r["setting"] for r in rep["rows"] if r["method"] == m), "?") for _, rep, _ in done]
        if len(set(labels)) == 1:
            label = labels[0]
        else:  # each training chose its own (listed below the table)
            label = "calibrated per training and seed" if all(lab.startswith("calibrated") for lab in labels) else "per training"
        row = aggregate(m, label, [r for _, _, records in done for r in records[m]])
        row["trainings"] = trainings
        rows.append(row)
    full_mu = rows[0]["model_utility"][0]
    seeds = done[0][1]["seeds"]
    name = f"{benchmark} {split}"
    png = plot(rows, out / f"fq_vs_mu_{split}.png", f"{name}, {len(trainings)} trainings", note="mean; bars: range")
    report = {"benchmark": benchmark, "split": split, "trainings": trainings, "seeds": seeds, "full_utility": full_mu,
              "rows": rows, "per_training": [{"training": t, "rows": rep["rows"], "chosen": rep["chosen"],
                                              "sweeps": {m: [r["setting"] for r in rs] for m, rs in rep["sweeps"].items()}}
                                             for t, rep, _ in done],
              "config": done[0][1]["config"], "wall_seconds": sum(rep.get("wall_seconds", 0.0) for _, rep, _ in done),
              "exact_unlearner": list(exact)}
    return report, _markdown(name, rows, done, selection, full_mu, exact), png


def _exact_unlearner_line(exact: Sequence[dict]) -> list[str]:
    """What an exact unlearner reads here: each training's oracle against each other training's, in one sentence."""
    fq = [p["forget_quality"] for p in exact if p["forget_quality"] is not None]
    pl = [p["privleak"] for p in exact if p["privleak"] is not None]
    if not fq or not pl:
        return []
    return [f"An exact unlearner, each training's oracle scored against each other training's ({len(exact)} pairs; "
            f"`benchmarks/oracle_noise.py`), reads forget quality {cell('forget_quality', mean_and_stdev(fq))} (lowest "
            f"{cell_value('forget_quality', min(fq))}) and privleak {cell('privleak', mean_and_stdev(pl))} (within ±15 on "
            f"{sum(abs(x) <= 15 for x in pl)} of {len(pl)}): what a method that forgets exactly can expect here.", ""]


def _markdown(name: str, rows: list[dict], done, selection, full_mu, exact: Sequence[dict] = ()) -> str:
    trainings = [t for t, _, _ in done]
    n_seeds = len(done[0][1]["seeds"])
    listed = ", ".join(str(t) for t in trainings)
    per = ["| method | " + " | ".join(f"training {t}" for t in trainings) + " |", "|---|" + "---:|" * len(trainings)]
    for r in rows:
        cells = []
        for _, rep, _ in done:
            row = next((x for x in rep["rows"] if x["method"] == r["method"]), None)
            cells.append("–" if row is None else
                         f"{cell_value('forget_quality', row['forget_quality'][0])} / {cell_value('privleak', row['privleak'][0])}")
        per.append(f"| {title(r['method'])} | " + " | ".join(cells) + " |")
    calibrated = []
    for r in rows:
        labels = [next((x["setting"] for x in rep["rows"] if x["method"] == r["method"]), "?") for _, rep, _ in done]
        if any(lab.startswith("calibrated") for lab in labels):
            calibrated += [f"{title(r['method'])}, " + "; ".join(f"training {t}: {lab.removeprefix('calibrated: ')}"
                                                                   for t, lab in zip(trainings, labels)), ""]
    if calibrated:
        calibrated = ["Calibrated settings (each seed's, in seed order):", "", *calibrated]
    swept = [m for m in done[0][1]["sweeps"] if done[0][1]["sweeps"][m]]
    sweeps = []
    if swept:
        sweeps = ["Each fine-tuning method's sweep (the same settings in every training, first seed, "
                  f"{selection.eval} evaluation, chosen by the rule of T3's calibration) and the setting each training chose:",
                  "", "| method | settings swept | " + " | ".join(f"chosen, training {t}" for t in trainings) + " |",
                  "|---|---|" + "---|" * len(trainings)]
        for m in swept:
            labels = [r["setting"] for r in done[0][1]["sweeps"][m]]
            chosen = [rep["sweeps"][m][rep["chosen"][m]]["setting"] for _, rep, _ in done]
            sweeps.append(f"| {title(m)} | {'; '.join(labels)} | " + " | ".join(chosen) + " |")
        sweeps.append("")
    return "\n".join([
        f"### {name}: {len(trainings)} model trainings × {n_seeds} seed(s) per method",
        "",
        f"Model trainings {listed}: the pretrained base, the full model and the oracle trained again with each seed "
        + ("(`t3unlearn world train --seed S`)" if name.startswith("world") else "(on first use)") + ". Cells are mean ± sd over every training's seeds (the full model and the "
        "oracle: over the trainings); each run's forget quality and privleak are against its own training's oracle, and "
        "each training has its own sweeps and selections.",
        "",
        markdown_table(rows),
        "",
        *verdict(rows, full_mu, selection.utility_tolerance),
        "",
        *_exact_unlearner_line(exact),
        "Per training (forget quality / privleak, mean over seeds):",
        "",
        *per,
        "",
        *calibrated,
        *sweeps,
        *(["The leakage probes' tables are each training's own: OUT/SPLIT/training-S/compare.md.", ""]
          if any("probes" in rep for _, rep, _ in done) else []),
    ])


__all__ = ["check_trainings", "combine", "parse_trainings"]
