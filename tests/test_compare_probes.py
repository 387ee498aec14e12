"""``t3unlearn compare --probes``: the leakage probes of every evaluated model beside TOFU's, in a table of their
own, equal to what ``t3unlearn probe`` says of the same unit's model; nothing of them without the flag."""

from __future__ import annotations

import copy
import json

import pytest

pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIG = {
    "eval": {"batch_size": 32, "max_new_tokens": 4},
    "train": {"epochs": 1, "batch_size": 16, "grad_accum": 1},
    "isolate": False,
    "methods": {
        "graddiff": {"params": {}, "train": {"lr": 1e-3}, "sweep": []},
        "t3": {"params": {"temperature": 2.5, "hidden_size": 4, "epochs": 2, "batch_size": 8}, "sweep": []},
    },
}


@pytest.fixture(scope="module")
def models(random_lm, tmp_path_factory):
    """A random full model, and an oracle with other weights (so reading one for the other shows)."""
    import torch

    model, tok = random_lm
    root = tmp_path_factory.mktemp("probe_models")
    model.save_pretrained(root / "full")
    tok.save_pretrained(root / "full")
    oracle = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in oracle.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=gen))
    oracle.save_pretrained(root / "retain")
    tok.save_pretrained(root / "retain")
    return root


def _same(got: dict, want: dict) -> None:
    """Two probe results: every generation and per-item score equal, every number equal to float precision."""
    assert got["answers"] == want["answers"]
    for name, leak in want["leakage"].items():
        assert got["leakage"][name]["per_item"] == leak["per_item"] and got["leakage"][name]["examples"] == leak["examples"]
    assert got["entity"] == want["entity"]
    for k in ("nonword_rate", "words", "judge_loss", "judge_tokens"):
        assert got["fluency"][k] == pytest.approx(want["fluency"][k], rel=1e-6)


def test_compare_probes_equal_t3unlearn_probe_and_are_absent_without_the_flag(tiny_world, models, tmp_path, monkeypatch, capsys):
    from t3unlearn.benchmarks import Benchmark
    from t3unlearn.commands.main import main
    from t3unlearn.eval import runner
    from t3unlearn.eval.probe import metrics
    from t3unlearn.experiments.compare import units

    monkeypatch.setenv("T3UNLEARN_HOME", str(tmp_path / "home"))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(CONFIG))
    out = tmp_path / "cmp" / "forget10"
    argv = ["compare", "--world", str(tiny_world), "--model", str(models / "full"), "--oracle", str(models / "retain"),
            "--pretrained", str(models / "retain"), "--methods", "t3,graddiff,retrain", "--seeds", "1", "--config", str(cfg),
            "--out", str(tmp_path / "cmp"), "--quiet", "--keep-models"]

    # without --probes: no probe table, no probe files, no probes in the records
    assert main(argv) == 0
    assert "Leakage probes" not in capsys.readouterr().out
    rep = json.loads((out / "compare.json").read_text())
    assert "probes" not in rep and "Leakage probes" not in (out / "compare.md").read_text()
    assert not list(out.rglob("PROBES.json")) and not list(out.rglob("probes.md"))
    assert not any("probes" in json.loads(p.read_text()) for p in out.rglob("record.json"))

    # with --probes: the TOFU evaluations done above are reused (not rerun), the probes added
    def no_tofu_eval(*a, **k):
        raise AssertionError("the TOFU evaluation was run again")

    monkeypatch.setattr(runner, "evaluate", no_tofu_eval)
    assert main([*argv, "--probes"]) == 0
    printed = capsys.readouterr().out
    assert "#### Leakage probes" in printed and "not TOFU metrics" in printed and "not used for selection" in printed
    probed = json.loads((out / "compare.json").read_text())
    assert [r[k] for r in probed["rows"] for k in ("method", "forget_quality")] == \
        [r[k] for r in rep["rows"] for k in ("method", "forget_quality")]  # the TOFU table is what it was
    table = probed["probes"]
    assert [r["method"] for r in table["rows"]] == ["full", "t3", "graddiff"]  # Retrain is the oracle's row
    assert table["oracle"]["name"] == "retain90" and "greedy leak" in table["columns"] and "non-word rate" in table["columns"]
    records = {}
    for p in out.glob("runs/*/*-seed0/record.json"):
        rec = json.loads(p.read_text())
        if "probes" in rec:
            records[rec["method"]] = (p.parent, rec)
            assert (p.parent / "PROBES.json").is_file() and (p.parent / "eval" / "TOFU_EVAL.json").is_file()
            assert not any(k in rec["summary"] for k in rec["probes"])  # beside TOFU's, not in them
    assert set(records) == {"full", "t3", "graddiff", "retrain"}
    retrain = json.loads((records["retrain"][0] / "PROBES.json").read_text())["results"]
    assert metrics(retrain["retrain"]) == metrics(retrain["retain90"]) == table["oracle"]["values"]

    # the same unit's model probed by `t3unlearn probe` (its oracle and judge: compare's): the same numbers
    monkeypatch.setattr(Benchmark, "model", lambda self, name, **kw: models / "retain")
    cli = ["--world", str(tiny_world), "--max-new-tokens", "4", "--batch-size", "32", "--quiet", "--threads", "1"]
    heads = {"t3": ["--model", str(models / "full"), "--head", records["t3"][1]["cost"]["artifact"]],
             "graddiff": ["--model", str(next((out / "artifacts").glob("graddiff-*-seed0")))],
             "full": ["--model", str(models / "full")]}
    rows = {r["method"]: r for r in table["rows"]}
    for method, model in heads.items():
        assert main(["probe", *model, *cli, "--name", method, "--out", str(tmp_path / method)]) == 0
        assert "probing the retain model" not in capsys.readouterr().err  # compare's cached oracle
        want = json.loads((tmp_path / method / "PROBES.json").read_text())["results"]
        got = json.loads((records[method][0] / "PROBES.json").read_text())["results"]
        _same(got[method], want[method])
        _same(got["retain90"], want["retain90"])
        assert {k: v[0] for k, v in rows[method]["values"].items()} == pytest.approx(metrics(want[method]), rel=1e-6)
        assert table["oracle"]["values"] == pytest.approx(metrics(want["retain90"]), rel=1e-6)
    # the models differ, so reading one for another would show
    assert len({json.dumps(rows[m]["values"]["judge loss (nats/token)"]) for m in heads}) == 3

    # a rerun with --probes resumes: nothing runs again
    def boom(spec):
        raise AssertionError(f"re-ran {spec.method}")

    monkeypatch.setattr(units, "execute_unit", boom)
    assert main([*argv, "--probes"]) == 0


def test_probes_config_key_is_checked(tmp_path):
    from t3unlearn.errors import ConfigError
    from t3unlearn.experiments.compare import load_compare_config

    assert load_compare_config().eval.probes is False
    assert load_compare_config({"eval": {"probes": True}}).eval.probes is True
    with pytest.raises(ConfigError, match="probes"):
        load_compare_config({"eval": {"probes": "yes"}})
