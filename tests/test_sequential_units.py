"""The sequential benchmark's units: a unit made with other settings is stale and made again."""

from __future__ import annotations

import json


def _runner(tmp_path):
    from t3unlearn.t3.sequential import Runner

    r = Runner.__new__(Runner)  # no models: only the unit bookkeeping is under test
    r.out = tmp_path
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
    from t3unlearn.t3 import sequential

    r = _runner(tmp_path)
    a = r.recipe("npo")
    monkeypatch.setitem(sequential.BASELINE_LR, "npo", 5e-4)
    assert r.recipe("npo") != a and r.recipe("graddiff") != r.recipe("npo")
