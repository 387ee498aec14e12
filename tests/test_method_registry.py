"""One method registry: a method you register runs through ``compare`` and ``sequential`` like a packaged one."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")


def _toy_run(model, forget, retain, out=None, *, tokenizer=None, params=None, config=None, seed=None, progress=True,
             loading=None):
    """A toy fine-tuning method: shrinks the output embeddings by ``shrink`` (deterministic, no training)."""
    import torch

    from t3unlearn.baselines.api import load_base
    from t3unlearn.results import UnlearnResult, measure

    net, tok = load_base(model, tokenizer, loading)
    shrink = float({"shrink": 0.5, **(params or {})}["shrink"])
    with measure() as m, torch.no_grad():
        weight = net.get_output_embeddings().weight
        weight.mul_(shrink)
    report = {"steps": 1, "history": [{"shrink": shrink}], "config": dict(config or {})}
    return UnlearnResult(net, tok, report, m.cost(weight.numel()), None, "toy")


@pytest.fixture()
def toy():
    from t3unlearn.methods import Method, get, names, register, unregister

    method = register(Method("toy", "lm", "shrink the output embeddings", {"shrink": 0.5}, _toy_run, title="Toy"))
    assert get("toy") is method and "toy" in names("lm", style="finetune")
    yield method
    unregister("toy")
    assert "toy" not in names("lm")


@pytest.fixture(scope="module")
def models(random_lm, tmp_path_factory):
    model, tok = random_lm
    root = tmp_path_factory.mktemp("registry_models")
    for name in ("full", "retain"):
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return root


FAST = {"eval": {"batch_size": 32, "max_new_tokens": 4}, "train": {"epochs": 1, "batch_size": 16, "grad_accum": 1},
        "isolate": False}


def test_registry_names_every_lm_method_and_says_did_you_mean():
    from t3unlearn.errors import T3Error
    from t3unlearn.methods import get, names

    assert names("lm") == ("t3", "cg", "uld", "gradascent", "graddiff", "npo", "simnpo", "idkdpo", "rmu", "retrain")
    assert all(get(n).run is not None and get(n).kind == "lm" for n in names("lm"))
    assert get("Grad-Diff").name == "graddiff" and get("cg").defaults["temperature"] == 1.0
    with pytest.raises(T3Error, match=r"unknown lm method 'npoo' \(did you mean 'npo'\?\); choose one of t3, cg"):
        get("npoo")


def test_images_use_the_same_method_type():
    from t3unlearn.images.methods import get_method
    from t3unlearn.methods import Method, get, names

    siss = get_method("siss")
    assert isinstance(siss, Method) and siss.kind == "image" and get("siss", "image") is siss
    assert get("t3", "image").style == "guidance" and get("t3").style == "guidance"  # one name, two kinds
    assert "siss" not in names("lm")


def test_a_registered_method_runs_through_compare(toy, tiny_world, models, tmp_path, monkeypatch):
    from t3unlearn.experiments.compare import compare

    monkeypatch.setenv("T3UNLEARN_HOME", str(tmp_path / "home"))
    cfg = {**FAST, "methods": {"toy": {"params": {"shrink": 0.9}, "sweep": [{"shrink": 0.9}, {"shrink": 0.2}]}}}
    rep = compare(methods=["toy"], seeds=1, out=tmp_path / "cmp", world=str(tiny_world), model=str(models / "full"),
                  retain_model=str(models / "retain"), pretrained=str(models / "retain"), config=cfg, progress=False,
                  log=lambda s: None)
    assert [r["method"] for r in rep["rows"]] == ["full", "toy"]
    row = rep["rows"][1]
    assert row["title"] == "Toy" and row["forget_quality"][0] is not None and row["trainable_params"] > 0
    assert [s["setting"] for s in rep["sweeps"]["toy"]] == ["shrink=0.9", "shrink=0.2"]
    # the unit ran the toy's own run, with the setting chosen by the sweep
    rec = json.loads(next((tmp_path / "cmp" / "forget10" / "runs" / "toy").glob("*-seed0/record.json")).read_text())
    assert rec["params"]["shrink"] == [0.9, 0.2][rep["chosen"]["toy"]]
    assert rec["cost"]["final"] == {"shrink": rec["params"]["shrink"]}


def test_a_registered_method_runs_through_sequential(toy, tiny_world, models, tmp_path, monkeypatch):
    from t3unlearn.benchmarks import Benchmark
    from t3unlearn.experiments.sequential import sequential

    monkeypatch.setenv("T3UNLEARN_HOME", str(tmp_path / "home"))
    paths = {"full": models / "full", "retain90": models / "retain"}
    monkeypatch.setattr(Benchmark, "models", lambda self, names, **kw: {n: paths[n] for n in names})
    rep = sequential(str(tiny_world), n_requests=2, methods=["toy"], seeds=1, out=tmp_path / "seq", max_new_tokens=4,
                     config={"methods": {"toy": {"params": {"shrink": 0.8}}}}, progress=False, log=lambda s: None)
    (row,) = rep["rows"]
    assert row["method"] == "toy" and row["title"] == "Toy" and len(row["steps"]) == 2
    runs = tmp_path / "seq" / rep["benchmark"].replace("/", "_") / "runs" / "toy" / "seed0"
    steps = sorted(runs.glob("step*/record.json"))
    assert [json.loads(p.read_text())["step"] for p in steps] == [1, 2]
    # each request starts from the previous request's model: the second one shrinks the first one's weights again
    assert not (runs / "step01" / "state").exists() and (runs / "step02" / "state" / "model.safetensors").is_file()


def test_an_unknown_method_is_one_line_with_the_choices(tmp_path):
    from t3unlearn.errors import T3Error
    from t3unlearn.experiments.sequential import sequential

    with pytest.raises(T3Error, match="unknown method.s. toy; choose from t3, t3-finetune, t3-scratch, gradascent"):
        sequential("world", methods=["toy"], out=tmp_path)
