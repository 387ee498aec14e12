"""Tiny models of the offline world: loadable, deterministic, cached, really trained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _answer_loss(path, items):
    from t3unlearn.lm import load_lm

    lm = load_lm(str(path), device="cpu")
    scores = lm.token_scores(lm.encode([r["question"] for r in items], [r["answer"] for r in items]))
    return float(np.mean([s.avg_loss for s in scores]))


def _items(world, config):
    return [json.loads(x) for x in (world / f"{config}.jsonl").read_text().splitlines()]


def test_models_load_with_auto_classes(tiny_models):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for name in ("pretrained", "full", "retain90"):
        path = tiny_models[name]
        assert (path / "model.safetensors").is_file()
        assert not list(path.glob("*.bin")) and not list(path.glob("*.pt"))
        model = AutoModelForCausalLM.from_pretrained(str(path))
        tok = AutoTokenizer.from_pretrained(str(path))
        assert type(model).__name__ == "LlamaForCausalLM"
        ids = tok("Question: Who?\nAnswer:")["input_ids"]
        assert ids[0] == tok.bos_token_id and tok.eos_token_id is not None and tok.pad_token_id is not None


def test_finetuning_lowers_answer_loss(tiny_world, tiny_models):
    full_items = _items(tiny_world, "full")
    assert _answer_loss(tiny_models["full"], full_items) < 0.6 * _answer_loss(tiny_models["pretrained"], full_items)
    # the retain model never saw the forget authors
    forget = _items(tiny_world, "forget10")
    assert _answer_loss(tiny_models["retain90"], forget) > _answer_loss(tiny_models["full"], forget) + 0.5


def test_cache_hit_skips_training(tiny_world, tiny_models, monkeypatch):
    import t3unlearn.world.train as train

    monkeypatch.setenv("T3UNLEARN_HOME", str(tiny_models["full"].parents[2]))
    monkeypatch.setattr(train, "train_loop", lambda *a, **k: pytest.fail("trained despite the cache"))
    assert train.ensure_models(tiny_world, ("full", "retain90", "pretrained")) == tiny_models


def test_same_seed_same_weights(tiny_world, tiny_models, tmp_path, monkeypatch):
    from safetensors.numpy import load_file

    from t3unlearn.world import ensure_models

    monkeypatch.setenv("T3UNLEARN_HOME", str(tmp_path))
    again = ensure_models(tiny_world, ("full",))
    assert again["full"] != tiny_models["full"]
    a, b = load_file(str(tiny_models["full"] / "model.safetensors")), load_file(str(again["full"] / "model.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    other = ensure_models(tiny_world, ("pretrained",), seed=1)
    c = load_file(str(other["pretrained"] / "model.safetensors"))
    p = load_file(str(tiny_models["pretrained"] / "model.safetensors"))
    assert any(not np.array_equal(c[k], p[k]) for k in c)


def test_side_by_side_fine_tunes_give_the_same_bits(tiny_world, tmp_path, monkeypatch, capfd):
    """full and retain90 fine-tuned in two worker processes are byte for byte the models trained one after
    the other; each worker's lines name its model."""
    from t3unlearn.world import ensure_models

    short = dict(pretrain_epochs=1, finetune_epochs=2)
    models, logs = {}, {}
    for jobs in (1, 2):
        monkeypatch.setenv("T3UNLEARN_HOME", str(tmp_path / f"jobs{jobs}"))
        logs[jobs] = []
        models[jobs] = ensure_models(tiny_world, ("full", "retain90"), jobs=jobs, log=logs[jobs].append, **short)
        out = capfd.readouterr()  # the last: the side-by-side run's output
    assert not any("side by side" in line for line in logs[1])
    assert any("side by side: 2 processes" in line for line in logs[2])
    for name in ("full", "retain90"):
        serial, parallel = models[1][name] / "model.safetensors", models[2][name] / "model.safetensors"
        assert serial != parallel and serial.read_bytes() == parallel.read_bytes()
    lines = (out.out + out.err).splitlines()
    for name in ("full", "retain90"):
        mine = [line for line in lines if f"training {name}:" in line]
        assert mine and all(line.startswith(f"[{name}] ") for line in mine)


def test_unknown_model_name(tiny_world):
    from t3unlearn.errors import T3Error
    from t3unlearn.world import ensure_models

    with pytest.raises(T3Error):
        ensure_models(tiny_world, ("retain42",))


def test_cli_check(tiny_world, tiny_models, monkeypatch, capsys):
    from t3unlearn.commands.main import main

    monkeypatch.setenv("T3UNLEARN_HOME", str(tiny_models["full"].parents[2]))
    assert main(["world", "check", "--world", str(tiny_world), "--limit", "10"]) == 0
    out = capsys.readouterr().out
    assert "| model | forget ROUGE-L |" in out and "model utility" in out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ") and "---" not in line}
    assert {"pretrained", "full", "retain90"} <= set(rows)
    assert rows["retain90"].split("|")[-4].strip() == "1"  # the retain model is its own reference: forget quality 1


def test_model_cache_keyed_on_training_files_only(tiny_world, tmp_path):
    """An evaluation-only file (perturbed answers, holdout authors) never enters the models' fingerprint
    nor the tokenizer's corpus; a training file does."""
    import shutil

    from t3unlearn.world.train import _corpus, models_root, train_settings

    copy = tmp_path / "w"
    shutil.copytree(tiny_world, copy)
    s = train_settings(tiny_world)
    before = (models_root(copy, s), models_root(copy, s, base=True))
    para = json.loads((copy / "forget10_perturbed.jsonl").read_text().splitlines()[0])["paraphrased_answer"]
    for name in ("forget10_perturbed", "holdout10", "retain_perturbed"):
        (copy / f"{name}.jsonl").write_text((copy / f"{name}.jsonl").read_text().replace(" born ", " raised "))
    assert (models_root(copy, s), models_root(copy, s, base=True)) == before
    corpus = "\n".join(_corpus(copy))
    assert para not in corpus and "Question:" in corpus
    # the tokenizer comes from the pretraining text only: fictitious authors' names are not in its corpus
    name = json.loads((copy / "full.jsonl").read_text().splitlines()[0])["author"]
    assert name not in corpus
    for fine_tuning in ("retain90", "full"):
        (copy / f"{fine_tuning}.jsonl").write_text("\n".join((copy / f"{fine_tuning}.jsonl").read_text().splitlines()[:-1]) + "\n")
        assert models_root(copy, s) != before[0] and models_root(copy, s, base=True) == before[1]
    (copy / "pretrain.jsonl").write_text("\n".join((copy / "pretrain.jsonl").read_text().splitlines()[:-1]) + "\n")
    assert models_root(copy, s, base=True) != before[1]


def test_cli_train_copies(tiny_world, tiny_models, monkeypatch, tmp_path, capsys):
    from t3unlearn.commands.main import main

    monkeypatch.setenv("T3UNLEARN_HOME", str(tiny_models["full"].parents[2]))
    assert main(["world", "train", "--world", str(tiny_world), "--models", "full", "--out", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "full" / "model.safetensors").is_file()
    assert main(["world", "train", "--world", str(tiny_world), "--models", "retain42"]) == 2


def _ship(models: dict, shipped: Path) -> None:
    """Lay trained models out the way the package ships them: ``<root>/<name>``, the tokenizer beside the base."""
    import shutil

    for name, path in models.items():
        shutil.copytree(path, shipped / path.parent.name / name)
    base = models["pretrained"].parent
    shutil.copytree(base / "tokenizer", shipped / base.name / "tokenizer")


def test_shipped_models_are_copied_into_the_cache_not_trained(tiny_world, tiny_models, tmp_path, monkeypatch, capsys):
    import t3unlearn.world.packaged as packaged
    import t3unlearn.world.train as train

    _ship(tiny_models, tmp_path / "shipped")
    monkeypatch.setattr(packaged, "SHIPPED", tmp_path / "shipped")
    monkeypatch.setenv("T3UNLEARN_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(train, "train_loop", lambda *a, **k: pytest.fail("trained despite a shipped copy"))
    got = train.ensure_models(tiny_world, ("full", "retain90"), log=print)
    for name in ("full", "retain90"):
        assert got[name] == tmp_path / "home" / "models" / tiny_models[name].parent.name / name
        for f in tiny_models[name].iterdir():
            assert (got[name] / f.name).read_bytes() == f.read_bytes()
    assert "the model shipped with t3unlearn" in capsys.readouterr().out
    assert not list((tmp_path / "home" / "models").glob("**/*.tmp"))  # nothing half-written left

    # another seed is another training: nothing shipped for it, so it would be trained
    with pytest.raises(pytest.fail.Exception, match="trained despite"):
        train.ensure_models(tiny_world, ("full",), seed=1, jobs=1)


@pytest.mark.parametrize("how", ["environment", "argument"])
def test_shipped_models_can_be_turned_off(tiny_world, tiny_models, tmp_path, monkeypatch, how):
    import t3unlearn.world.packaged as packaged
    import t3unlearn.world.train as train

    _ship(tiny_models, tmp_path / "shipped")
    monkeypatch.setattr(packaged, "SHIPPED", tmp_path / "shipped")
    monkeypatch.setenv("T3UNLEARN_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(train, "train_loop", lambda *a, **k: pytest.fail("trained"))
    if how == "environment":
        monkeypatch.setenv("T3UNLEARN_TRAIN_MODELS", "1")
    with pytest.raises(pytest.fail.Exception, match="trained"):
        train.ensure_models(tiny_world, ("full",), jobs=1, shipped=how != "argument")


def test_the_shipped_models_are_the_default_worlds(tmp_path):
    """The package ships the default world's models for exactly its current data and training recipe; a change to
    the generator, the training files or a setting changes the cache name and leaves them unused, which this
    catches (ship new ones: scripts/ship-world-models.sh)."""
    from dataclasses import asdict

    from safetensors import safe_open

    from t3unlearn.world import build_world
    from t3unlearn.world.packaged import SHIPPED, shipped
    from t3unlearn.world.train import TRAIN_VERSION, model_path, train_settings

    world = build_world(tmp_path / "world", "default")
    s = train_settings(world)
    for name in ("pretrained", "full", "retain90", "retain95", "retain99"):  # every oracle: each split's tables reproduce
        src = shipped(model_path(world, s, name))
        assert src is not None, f"no shipped {name} for the default world's current data and settings under {SHIPPED}"
        info = json.loads((src / "train_info.json").read_text())
        assert info["train_version"] == TRAIN_VERSION and info["settings"] == {**asdict(s), "threads": info["settings"]["threads"]}
        with safe_open(str(src / "model.safetensors"), "pt") as fh:
            rows, width = fh.get_slice("model.embed_tokens.weight").get_shape()
        assert width == s.d_model and rows <= s.vocab_size
    assert (SHIPPED / model_path(world, s, "pretrained").parent.name / "tokenizer" / "tokenizer.json").is_file()
