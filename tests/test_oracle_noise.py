"""``benchmarks/oracle_noise.py``: every training's oracle scored against every other training's."""

from __future__ import annotations

from pathlib import Path

import pytest

from t3unlearn.eval.results import EvalResults


def _oracle(truth_ratios, auc: float, utility: float) -> EvalResults:
    return EvalResults(metrics={
        "forget_truth_ratio": {"agg_value": sum(truth_ratios) / len(truth_ratios),
                               "value_by_index": {str(i): {"score": v} for i, v in enumerate(truth_ratios)}},
        "mia_min_k": {"agg_value": auc, "auc": auc},
        "model_utility": {"agg_value": utility}})


@pytest.fixture
def noise(benchmark_script, monkeypatch):
    mod = benchmark_script("oracle_noise")
    # trainings 0 and 1 are the same oracle; training 2's truth ratios all lie above theirs, its AUC lower
    same = [0.1 * i for i in range(1, 10)]
    oracles = {0: _oracle(same, 0.40, 0.5), 1: _oracle(same, 0.40, 0.5), 2: _oracle([v + 1 for v in same], 0.25, 0.6)}
    asked = []

    class Bench:
        label = "world"

        def data(self, split):
            return {"split": split}

        def models(self, names, log=None, progress=True, seed=0):
            asked.append((tuple(names), seed))
            return {n: Path(f"/models/seed{seed}/{n}") for n in names}

    def cached_evaluation(path, *, name, split, data, role, **_):
        assert role == "retain" and data == {"split": split} and name.endswith(f"-t{int(path.parent.name[4:])}")
        return oracles[int(path.parent.name[4:])]

    monkeypatch.setattr("t3unlearn.benchmarks.cached_evaluation", cached_evaluation)
    return mod, Bench(), asked, oracles


def test_every_ordered_pair_of_trainings_is_scored(noise):
    mod, bench, asked, oracles = noise
    rec = mod.split_pairs(bench, "forget05", [0, 1, 2], log=lambda *_: None, progress=False)
    assert asked == [(("retain95",), 0), (("retain95",), 1), (("retain95",), 2)]  # each training's own oracle
    pairs = {(p["method"], p["reference"]): p for p in rec["pairs"]}
    assert sorted(pairs) == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    assert pairs[(0, 1)]["forget_quality"] == pytest.approx(1.0) and pairs[(0, 1)]["privleak"] == pytest.approx(0.0)
    assert pairs[(0, 2)]["forget_quality"] < 1e-3 and pairs[(2, 0)]["forget_quality"] < 1e-3
    # privleak of A against B: (AUC_B - AUC_A) / (1 - AUC_B), in %
    assert pairs[(2, 0)]["privleak"] == pytest.approx(25.0) and pairs[(0, 2)]["privleak"] == pytest.approx(-20.0)
    assert pairs[(2, 1)]["model_utility_ratio"] == pytest.approx(1.2)
    assert rec["oracles"][2]["min_k_auc"] == 0.25
    # scoring a pair leaves the oracles' own (cached) results as they were
    assert all("forget_quality" not in o.metrics and "retain_reference" not in o.info for o in oracles.values())

    lines = mod.report(rec)
    assert "2 of 6 >= 0.05" in lines[-2] and "2 of 6 within ±15" in lines[-1]
    rows = mod.table([rec], "world")
    assert rows[-1].startswith("| forget05 | 0.400 / 0.400 / 0.250 |") and rows[-1].endswith("| 2 of 6 |")


@pytest.mark.parametrize("args, says", [(["--trainings", "0,0"], "at least two different"),
                                        (["--trainings", "0,x"], "training seeds >= 0"),
                                        (["--splits", "forget10,forget7"], "unknown split 'forget7'")])
def test_bad_arguments_are_one_line(benchmark_script, capsys, args, says):
    mod = benchmark_script("oracle_noise")
    with pytest.raises(SystemExit):
        mod.main(args)
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
