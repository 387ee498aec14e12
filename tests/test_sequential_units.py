"""The sequential benchmark's units: a unit made with other settings is stale and made again."""

from __future__ import annotations

import json

import pytest


def _runner(tmp_path, config=None, kind="world"):
    from t3unlearn.experiments.sequential import Runner

    r = Runner.__new__(Runner)  # no models: only the unit bookkeeping is under test
    r.out = tmp_path
    r.configure(config, kind)
    return r


def test_a_unit_is_reused_only_with_the_recipe_it_was_made_with(tmp_path, monkeypatch):
    from t3unlearn.t3 import config as t3config

    r = _runner(tmp_path)
    rec = r._save_unit("t3", 0, 1, {"method": "t3", "summary": {"model_utility": 0.5}}, None)
    assert rec["recipe"] == r.recipe("t3")
    assert r.done("t3", 0, 1)["summary"] == {"model_utility": 0.5}
    # T3's defaults change (say a new temperature): the unit is stale
    old = t3config.defaults
    monkeypatch.setattr(t3config, "defaults", lambda: {**old(), "temperature": 9.0})
    assert r.done("t3", 0, 1) is None
    monkeypatch.setattr(t3config, "defaults", old)
    assert r.done("t3", 0, 1) is not None
    # a record from before recipes were kept is stale too
    f = tmp_path / "runs" / "t3" / "seed0" / "step01" / "record.json"
    raw = json.loads(f.read_text())
    raw.pop("recipe")
    f.write_text(json.dumps(raw))
    assert r.done("t3", 0, 1) is None


def test_baseline_recipe_follows_its_learning_rate(tmp_path, monkeypatch):
    from t3unlearn.experiments import sequential

    r = _runner(tmp_path)
    a = r.recipe("npo")
    monkeypatch.setitem(sequential.BASELINE_LR["world"], "npo", 5e-4)
    assert r.recipe("npo") != a and r.recipe("graddiff") != r.recipe("npo")


def test_learning_rates_follow_the_benchmark(tmp_path):
    from t3unlearn.experiments import sequential

    world, tofu = _runner(tmp_path), _runner(tmp_path, kind="tofu")
    assert world.lr == sequential.BASELINE_LR["world"] and tofu.lr == sequential.BASELINE_LR["tofu"]
    assert world.lr["npo"] != tofu.lr["npo"]  # compare chose 1e-4 on the world, 1e-3 on TOFU
    assert world.recipe("npo") != tofu.recipe("npo")


def test_a_config_sets_t3s_head_and_guidance(tmp_path):
    import pytest

    from t3unlearn.errors import T3Error

    plain = _runner(tmp_path)
    assert plain.t3_settings == {}  # the package's defaults
    cfg = {"methods": {"t3": {"params": {"temperature": 2.0, "scale": 0.5, "hidden_size": 200, "layers": 2,
                                           "activation": "gelu", "epochs": 30}}}}
    mlp = _runner(tmp_path, config=cfg)
    assert mlp.t3_settings["hidden_size"] == 200 and mlp.t3_settings["temperature"] == 2.0
    assert mlp.recipe("t3") != plain.recipe("t3")  # units of one are stale for the other
    plain._save_unit("t3", 0, 1, {"method": "t3", "summary": {}}, None)
    assert plain.done("t3", 0, 1) is not None and mlp.done("t3", 0, 1) is None
    with pytest.raises(T3Error, match="did you mean .temperature"):
        _runner(tmp_path, config={"methods": {"t3": {"params": {"temprature": 2.0}}}})


def test_the_table_names_a_method_run_with_fewer_seeds():
    from t3unlearn.experiments.sequential import METRICS, markdown, summarize

    def rec(u):
        return {"summary": {m: u for m in METRICS}, "wall_s": 1.0}

    n = 2
    records = {"t3": [[rec(0.5), rec(0.6)] for _ in range(3)], "npo": [[rec(0.4), rec(0.3)]]}
    full = {"utility": 0.7, "steps": [{"forget_quality": 1e-3, "forget_Q_A_ROUGE": 0.9}] * n}
    rep = summarize("world", n, [40, 40], ["t3", "npo"], records, full, [])
    assert rep["seeds"] == 3 and [r["seeds"] for r in rep["rows"]] == [3, 1]
    text = markdown(rep, "p.png")
    assert "3 seed(s)" in text and "| NPO (1 seed) |" in text and "| T3 incremental |" in text
    assert "| NPO | 0.4 | 0.3 |" in text  # the per-request rows keep the plain names


def test_a_bad_out_or_doc_is_refused_before_any_run(tmp_path, monkeypatch, capsys):
    import t3unlearn.experiments.sequential as seq
    from t3unlearn.commands.main import main
    from t3unlearn.io import replace_section

    monkeypatch.setattr(seq, "sequential", lambda *a, **k: pytest.fail("sequential ran despite a bad --out/--doc"))
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert main(["sequential", "--benchmark", "world-tiny", "--out", str(afile)]) == 2
    assert "--out" in capsys.readouterr().err and afile.read_text() == "mine"
    assert main(["sequential", "--benchmark", "world-tiny", "--out", str(tmp_path / "o"), "--doc", str(tmp_path)]) == 2
    assert "--doc" in capsys.readouterr().err and not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="marker"):  # a stray begin marker: never replace from it
        replace_section("a\n<B>\nmine\n", "<B>", "<E>", "<B>new<E>")
    assert replace_section("a\n<B>old<E>\nz", "<B>", "<E>", "<B>new<E>") == "a\n<B>new<E>\nz"
