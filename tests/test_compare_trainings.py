"""``t3unlearn compare --trainings``: the comparison on each training of the benchmark's tiny models, one table
over all of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from t3unlearn.errors import T3Error

SUMMARY = ("forget_quality", "model_utility", "privleak")


def _record(seed: int, fq: float, mu: float, pl: float) -> dict:
    return {"seed": seed, "summary": {"forget_quality": fq, "model_utility": mu, "privleak": pl},
            "cost": {"wall_seconds": 1.0, "trainable_params": 10}}


def _oracle_results(t: int):
    """Training t's oracle: trainings 0 and 2 alike except for the min-k AUC (0.4 and 0.25)."""
    from t3unlearn.eval.results import EvalResults

    ratios = [0.1 * i for i in range(1, 10)]
    return EvalResults(metrics={
        "forget_truth_ratio": {"agg_value": 0.5, "value_by_index": {str(i): {"score": v} for i, v in enumerate(ratios)}},
        "mia_min_k": {"agg_value": 0.4 if t == 0 else 0.25, "auc": 0.4 if t == 0 else 0.25},
        "model_utility": {"agg_value": 0.5}})


def _fake_training(calls: list):
    """What ``_compare_training`` returns, made up from the training seed: T3's forget quality is 0.1 × (seed + 1)
    on every run, the full model's utility 0.5 + 0.01 × seed; GradDiff chose its second setting in training 2."""
    from t3unlearn.experiments.compare.selection import aggregate

    def run(*, out: Path, training: dict, seeds: int, **_):
        calls.append((out, dict(training)))
        t = training["seed"]
        records = {"full": [_record(0, 1e-20, 0.5 + 0.01 * t, -100.0)],
                   "t3": [_record(s, 0.1 * (t + 1), 0.5, 2.0 * t) for s in range(seeds)],
                   "graddiff": [_record(s, 1e-9, 0.45, -50.0) for s in range(seeds)],
                   "retrain": [_record(0, 1.0, 0.52, 0.0)]}
        chosen = {"t3": 0, "graddiff": 1 if t == 2 else 0, "retrain": 0}
        labels = {"full": "-", "t3": f"calibrated: T={2 + t}", "graddiff": ["lr=1e-4", "lr=1e-3"][chosen["graddiff"]],
                  "retrain": "default"}
        rows = [aggregate(m, labels[m], recs) for m, recs in records.items()]
        sweeps = {"graddiff": [{"setting": lab, "summary": {}, "cost": {}} for lab in ("lr=1e-4", "lr=1e-3")]}
        out.mkdir(parents=True, exist_ok=True)
        _oracle_results(t).save(out / "reference")  # the training's oracle, as _oracle_reference saves it
        png = out / "fq.png"
        png.write_bytes(b"png")
        report = {"benchmark": "world", "split": "forget10", "seeds": list(range(seeds)), "rows": rows, "chosen": chosen,
                  "sweeps": sweeps, "config": {}, "wall_seconds": 1.0, "training": t}
        return report, "one training", png, records

    return run


def test_one_table_over_every_training(tmp_path, monkeypatch):
    from t3unlearn.experiments.compare import driver
    from t3unlearn.experiments.compare.report import doc_markers, write_doc

    calls = []
    monkeypatch.setattr(driver, "_compare_training", _fake_training(calls))
    rep = driver.compare("world", "forget10", ["t3", "graddiff", "retrain"], seeds=2, out=tmp_path / "cmp",
                         trainings=[0, 2, 0], log=lambda *_: None)
    split_dir = tmp_path / "cmp" / "forget10"
    assert calls == [(split_dir / "training-0", {"seed": 0}), (split_dir / "training-2", {"seed": 2})]  # each once
    for t in (0, 2):
        assert json.loads((split_dir / f"training-{t}" / "compare.json").read_text())["training"] == t
    saved = json.loads((split_dir / "compare.json").read_text())
    assert saved["trainings"] == [0, 2] and [p["training"] for p in saved["per_training"]] == [0, 2]
    rows = {r["method"]: r for r in saved["rows"]}
    assert rows["t3"]["seeds"] == [0, 1, 0, 1]  # every training's seeds
    assert rows["t3"]["forget_quality"][0] == pytest.approx(0.2)  # 0.1 and 0.3, two seeds each
    assert rows["t3"]["forget_quality"][1] > 0  # the trainings differ: a spread
    assert rows["full"]["model_utility"][0] == pytest.approx(0.51)
    assert rows["retrain"]["seeds"] == [0, 0]  # one oracle per training
    assert rows["t3"]["setting"] == "calibrated per training and seed" and rows["graddiff"]["setting"] == "per training"
    text = rep["markdown"]
    assert "2 model trainings × 2 seed(s)" in text
    assert "| T3 | 0.100 / 0.00 | 0.300 / 4.00 |" in text  # each training's own figures
    assert "| GradDiff | lr=1e-4; lr=1e-3 | lr=1e-4 | lr=1e-3 |" in text  # the sweep, and each training's choice
    assert "training 0: T=2; training 2: T=4" in text
    assert "leakage probes" not in text  # none were run
    # what an exact unlearner reads: each training's oracle against the other's (privleak +25 and -20)
    assert [(p["method"], p["reference"]) for p in saved["exact_unlearner"]] == [(0, 2), (2, 0)]
    assert "(2 pairs; `benchmarks/oracle_noise.py`), reads forget quality 1.000 (lowest 1.000) and privleak 2.50 ± 31.82 (within ±15 on 0 of 2)" in text

    # in a --doc file, the table over trainings sits beside the one-training table of the same split
    doc = tmp_path / "doc.md"
    one = {"split": "forget10", "benchmark": "world", "plot": str(split_dir / "training-0" / "fq.png"), "markdown": "ONE"}
    write_doc(doc, [one, rep], "cmd")
    out = doc.read_text()
    assert "ONE" in out and "2 model trainings" in out
    assert doc_markers("forget10")[0] in out and doc_markers("forget10", "world", [0, 2])[0] in out
    assert (tmp_path / "comparison_forget10_trainings_0-2.png").is_file()


def test_the_training_seed_reaches_every_model_the_comparison_resolves(monkeypatch):
    from t3unlearn.experiments.compare import driver

    asked = []

    class Bench:
        kind = "world"

        def models(self, names, log=None, **overrides):
            asked.append((tuple(names), overrides))
            return {n: f"/models/seed{overrides.get('seed', 0)}/{n}" for n in names}

    monkeypatch.setattr("t3unlearn.benchmarks.get_benchmark", lambda name: Bench())
    bench, model, oracle, pretrained = driver._resolve_models("world", "forget10", None, None, None, None, print, {"seed": 3})
    assert (model, oracle) == ("/models/seed3/full", "/models/seed3/retain90")
    refs = driver._calibration_references(bench, {}, None, print, None, {"seed": 3})
    assert refs == {}  # nothing names a reference here; with one, the same training's pretrained base:
    monkeypatch.setattr(driver, "_reference_name", lambda setting: "pretrained")
    refs = driver._calibration_references(bench, {"t3": [object()]}, None, print, None, {"seed": 3})
    assert refs == {"pretrained": "/models/seed3/pretrained"}
    assert all(o == {"seed": 3} for _, o in asked)


def test_trainings_are_checked(tmp_path, capsys):
    from t3unlearn.commands.main import main
    from t3unlearn.experiments.compare import compare
    from t3unlearn.experiments.compare.trainings import parse_trainings

    assert parse_trainings("0, 1,2") == [0, 1, 2]
    for bad in ("", "a", "1,-1"):
        with pytest.raises(T3Error, match="training seeds"):
            parse_trainings(bad)
    with pytest.raises(T3Error, match="does not apply to a model you give"):
        compare("world", "forget10", ["t3"], out=tmp_path, model="some/model", trainings=[0, 1])
    assert main(["compare", "--trainings", "x", "--out", str(tmp_path)]) == 2
    assert "--trainings" in capsys.readouterr().err
