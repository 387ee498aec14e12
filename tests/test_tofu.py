"""TOFU's own data offline: the local copy in $T3UNLEARN_TOFU_DIR, and the tiny models' training sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from t3unlearn.errors import DataError

TOFU = Path(__file__).resolve().parents[2] / "shared" / "data" / "tofu"
needs_tofu = pytest.mark.skipif(not (TOFU / "full.jsonl").is_file(), reason=f"no local copy of TOFU at {TOFU}")


@pytest.fixture
def local_tofu(monkeypatch):
    monkeypatch.setenv("T3UNLEARN_TOFU_DIR", str(TOFU))
    return TOFU


@needs_tofu
def test_tofu_source_reads_the_local_copy(local_tofu):
    from t3unlearn.data import load_qa, resolve_source

    assert resolve_source("tofu:forget10") == (str(local_tofu), "forget10", "dir")
    ds = load_qa("tofu:forget10_perturbed")
    assert len(ds) == 400 and len(ds[0]["perturbed_answer"]) == 5 and "paraphrased_question" in ds.column_names


def test_tofu_dir_that_is_not_a_directory(monkeypatch, tmp_path):
    from t3unlearn.data import load_qa

    monkeypatch.setenv("T3UNLEARN_TOFU_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="T3UNLEARN_TOFU_DIR"):
        load_qa("tofu:forget10")


@needs_tofu
def test_training_sets_are_the_authors_the_evaluation_reads(local_tofu):
    from t3unlearn.tofu import training_sets

    sets = training_sets()
    full = [json.loads(x) for x in (local_tofu / "full.jsonl").read_text().splitlines()]
    assert {k: len(v) for k, v in sets.items()} == {"pretrain": 4 * 217 + 2800, "full": 800, "retain90": 400, "retain95": 600,
                                                    "retain99": 760, "calibration": 400}
    # full = the first 20 authors (retain_perturbed) + the last 20 (forget10), in TOFU's order, rows intact
    assert sets["full"] == [{"question": r["question"], "answer": r["answer"]} for r in full[:400] + full[3600:]]
    assert sets["retain90"] == sets["full"][:400]
    forget05 = {json.loads(x)["question"] for x in (local_tofu / "forget05.jsonl").read_text().splitlines()}
    assert not forget05 & {r["question"] for r in sets["retain95"]} and len(sets["retain95"]) == 800 - 200
    real = [json.loads(x) for x in (local_tofu / "real_authors.jsonl").read_text().splitlines()]
    assert sets["pretrain"][0] == {"question": real[0]["question"], "answer": real[0]["answer"]}
    every = training_sets("all")
    assert len(every["full"]) == 3600 and len(every["retain90"]) == 3200 and every["calibration"] == sets["calibration"]
    with pytest.raises(DataError, match="subset"):
        training_sets("some")


@needs_tofu
@pytest.mark.parametrize("subset", ["eval-authors", "all"])
def test_calibration_authors_are_never_trained_on_nor_evaluated(local_tofu, subset):
    """tofu:calibration: 20 whole authors that no evaluation reads and no tiny model (base or fine-tune) trains on."""
    from t3unlearn.tofu import training_sets

    sets = training_sets(subset)
    cal = {r["question"] for r in sets["calibration"]}
    assert len(cal) == 400
    for name, rows in sets.items():
        if name != "calibration":
            assert not cal & {r["question"] for r in rows}, name
    read = set()
    for config in ("forget10", "holdout10", "retain_perturbed", "real_authors", "world_facts"):
        read |= {json.loads(x)["question"] for x in (local_tofu / f"{config}.jsonl").read_text().splitlines()}
    assert not cal & read
    full = [json.loads(x)["question"] for x in (local_tofu / "full.jsonl").read_text().splitlines()]
    rows = sorted(full.index(q) for q in cal)
    assert all(rows[i] % 20 == 0 and rows[i + 19] == rows[i] + 19 for i in range(0, 400, 20))  # whole authors


@needs_tofu
def test_calibration_set_never_reads_what_the_evaluation_reads(local_tofu, tmp_path, monkeypatch):
    """The default calibration set of every TOFU split is tofu:calibration for the tiny models; for another checkpoint
    (trained on all of TOFU) forget05 falls back to holdout10 minus holdout05 and forget10 has none; the evaluation's
    own holdout is refused as a calibration set."""
    from t3unlearn.benchmarks import calibration_set, check_calibration_set, get_benchmark, resolve_data
    from t3unlearn.data import load_qa

    monkeypatch.setenv("T3UNLEARN_HOME", str(tmp_path))
    bench = get_benchmark("tofu")
    for split in ("forget01", "forget05", "forget10"):
        items, name = bench.calibration(split)
        assert name == "tofu:calibration" and len(items) == 400
        assert not set(items["question"]) & set().union(*bench.evaluated_questions(split).values())
    assert len(load_qa(resolve_data("tofu:calibration"))) == 400
    assert calibration_set("tofu:forget10", "tofu:full")[1] == "tofu:calibration"
    elsewhere = tmp_path / "my-tofu-llama"
    elsewhere.mkdir()
    assert calibration_set("tofu:forget10", elsewhere) is None
    items, name = calibration_set("tofu:forget05", elsewhere)
    assert name == "tofu:holdout10 minus holdout05" and len(items) == 200
    with pytest.raises(DataError, match=r"shares items with what the evaluation of forget10 reads \(400 of tofu:holdout10\)"):
        check_calibration_set(load_qa("tofu:holdout10"), "tofu:forget10", "--holdout tofu:holdout10")
    with pytest.raises(DataError, match="holdout05"):
        check_calibration_set(load_qa("tofu:holdout10"), "tofu:forget05", "--holdout tofu:holdout10")
    check_calibration_set(load_qa("tofu:holdout10"), "my-forget.jsonl", "--holdout")  # not a benchmark split: no check


@needs_tofu
def test_unlearn_trains_without_the_never_seen_calibration_authors(local_tofu, capsys):
    """`t3unlearn unlearn --model tofu:full --forget tofu:forget10 --retain tofu:retain90` (default holdout:
    tofu:calibration, whose 20 authors TOFU's retain90 holds): the head trains without them, as compare's methods do,
    and says so; a retain set of a forget set that is no benchmark split is used as it is."""
    from argparse import Namespace

    from t3unlearn.benchmarks import get_benchmark
    from t3unlearn.commands.t3 import _without_never_seen
    from t3unlearn.data import load_qa

    retain = load_qa("tofu:retain90")
    kept = _without_never_seen(Namespace(forget="tofu:forget10", model="tofu:full", retain="tofu:retain90"), retain)
    never_seen = set(get_benchmark("tofu").qa("calibration")["question"])
    assert len(kept) == len(retain) - 400 == 3200 and not set(kept["question"]) & never_seen
    assert set(kept["question"]) <= set(retain["question"])
    assert "holds 400 items of tofu:calibration" in capsys.readouterr().err
    mine = Namespace(forget="my-forget.jsonl", model="tofu:full", retain="tofu:retain90")
    assert _without_never_seen(mine, retain) is retain


@needs_tofu
def test_compares_retain_set_is_the_retain_models_training_set_without_never_seen_items(local_tofu, tmp_path, monkeypatch):
    """What compare gives every method as the retain set (Benchmark.retain_set, then _retain_without_never_seen):
    for TOFU's tiny models the retain model's own training file; TOFU's whole retain90 holds the 20 calibration
    authors (never trained on by a tiny model), and the filter drops them from any retain set, so no head is taught
    that the items it is calibrated on are retain content; without an overlap the set is used as it is."""
    from t3unlearn.benchmarks import get_benchmark
    from t3unlearn.data import load_qa
    from t3unlearn.experiments.compare.driver import _calibration_set, _retain_without_never_seen

    monkeypatch.setenv("T3UNLEARN_HOME", str(tmp_path / "home"))
    bench, logs = get_benchmark("tofu"), []
    _, calib = _calibration_set(tmp_path, bench, "forget10", None, logs.append)
    spec = f"{bench.data_source()}:retain90"
    got = _retain_without_never_seen(tmp_path, spec, calib, logs.append)
    never_seen = set(bench.qa("calibration")["question"])
    kept = load_qa(got)["question"]
    assert got == str(tmp_path / "retain.jsonl") and len(kept) == len(load_qa(spec)) - 400 == 3200
    assert not set(kept) & never_seen and "less the 400 never-seen calibration items" in logs[-1]
    other = tmp_path / "calibration-elsewhere.jsonl"
    other.write_text(json.dumps({"question": "Who wrote nothing?", "answer": "No one."}) + "\n", encoding="utf-8")
    assert _retain_without_never_seen(tmp_path / "w", spec, other, logs.append) == spec  # no overlap: the config
    assert _retain_without_never_seen(tmp_path / "w", spec, None, logs.append) == spec
    # the tiny models' retain set is the retain model's own training set: the evaluated authors less the forget set
    tiny, name = bench.retain_set("forget10")
    rows = load_qa(tiny)
    assert name == "tofu:retain90 as the tiny models were fine-tuned on it" and len(rows) == 400
    assert not set(rows["question"]) & (never_seen | set(bench.qa("forget10")["question"]))
    assert set(rows["question"]) <= set(load_qa(spec)["question"])
    assert _retain_without_never_seen(tmp_path, tiny, calib, logs.append) == tiny
    elsewhere = tmp_path / "my-tofu-llama"
    elsewhere.mkdir()
    assert bench.retain_set("forget05", elsewhere) == (f"{bench.data_source()}:retain95", "tofu:retain95")
    assert get_benchmark("default").retain_set("forget10")[0].endswith(":retain90")


@needs_tofu
def test_tiny_tofu_models_train_and_are_recognised(local_tofu, tmp_path, monkeypatch):
    """The TOFU training directory feeds the same recipe as the world (here shrunk to seconds)."""
    from t3unlearn.benchmarks import get_benchmark

    monkeypatch.setenv("T3UNLEARN_HOME", str(tmp_path))
    bench = get_benchmark("tofu")
    small = dict(vocab_size=600, d_model=16, n_layers=1, n_heads=2, n_kv_heads=2, ffn=32, pretrain_epochs=1,
                 finetune_epochs=1, max_length=256)
    paths = bench.models(("full",), progress=False, **small)
    meta = json.loads((bench.training_dir() / "world.json").read_text())
    assert meta["preset"] == "tofu" and meta["sizes"]["full"] == 800 and meta["sizes"]["calibration"] == 400
    info = json.loads((paths["full"] / "train_info.json").read_text())
    assert info["data"] == "full" and info["settings"]["max_length"] == 256
    assert bench.owns_model(paths["full"]) and not get_benchmark("world").owns_model(paths["full"])
    assert not bench.owns_model(tmp_path)
