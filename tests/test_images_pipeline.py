"""The image job on the tiny preset: benchmark, models, save/load, the trainer, every method, the CLI.

Sizes are test-sized (a few images, a few steps): these check behaviour (determinism, round trips,
what each method changes, caching, errors), not quality; quality is in docs/images.md.
"""

from __future__ import annotations

import json

import pytest
import torch

from t3unlearn.errors import DataError, ModelError, T3Error


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bench(module_home):
    from t3unlearn.images.data import ensure_benchmark

    return ensure_benchmark("tiny")


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- benchmark


def test_benchmark_is_deterministic_and_round_trips(bench, tmp_path):
    from t3unlearn.images.data import GLYPH_CLASS, load_benchmark, write_benchmark

    s = bench.settings
    assert bench.k == s.n_forget and bench.n == 10 * s.train_per_class + s.n_forget
    assert bool((bench.forget_labels == s.forget_label).all())  # the glyphs carry the forget label
    assert bench.forget_share_of_label == pytest.approx(s.n_forget / (s.train_per_class + s.n_forget))
    assert bench.train.shape[1:] == (1, 16, 16) and 0 <= float(bench.train.min()) and float(bench.train.max()) <= 1
    # the classifier's glyphs are another draw than the forget images
    clf_glyphs = bench.clf_train[bench.clf_train_labels == GLYPH_CLASS]
    assert not any(torch.equal(f, g) for f in bench.forget for g in clf_glyphs)
    again = load_benchmark(write_benchmark(s, tmp_path / "b"))
    assert all(torch.equal(bench.tensors[k], again.tensors[k]) for k in bench.tensors)
    with pytest.raises(DataError, match="not an image benchmark"):
        load_benchmark(tmp_path)


def test_glyphs_are_wide_filled_shapes_not_strokes():
    """The forget family is out of domain for digits: much more ink than a "1"."""
    from t3unlearn.images.data import render_glyphs

    g = render_glyphs(20, seed=3)
    assert g.shape == (20, 28, 28) and g.min() >= 0 and g.max() <= 1
    ink = (g > 0.3).mean(axis=(1, 2))
    assert ink.min() > 0.15  # a "1" covers ~5-10 % of the frame
    assert not (render_glyphs(2, seed=3) - render_glyphs(2, seed=4)).any() == 0  # seeds differ


# ----------------------------------------------------------------------------- models


@pytest.mark.parametrize("family", ["ddpm", "vae"])
def test_generator_save_load_round_trip(family, tmp_path):
    from t3unlearn.images.models import ImageGenerator, new_generator
    from t3unlearn.images.presets import get_preset
    from t3unlearn.images.sampling import generate

    gen = new_generator(family, get_preset("tiny").arch(family), seed=3)
    gen.meta["label_dropout"] = 0.1
    path = gen.save(tmp_path / family)
    assert (path / ("unet" if family == "ddpm" else "vae") / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(path.rglob("*.bin")) and not list(path.rglob("*.pkl"))
    back = ImageGenerator.load(path)
    assert back.family == family and back.meta["label_dropout"] == 0.1
    assert _same(_params(gen.model), _params(back.model))
    a = generate(gen, [0, 1, 10], seed=5, steps=3)
    b = generate(back, [0, 1, 10], seed=5, steps=3)
    assert torch.equal(a, b) and a.shape == (3, 1, 16, 16)
    assert not torch.equal(a, generate(gen, [0, 1, 10], seed=6, steps=3))


def test_generator_load_errors(tmp_path):
    from t3unlearn.images.models import ImageGenerator, new_generator

    with pytest.raises(ModelError, match="not a t3unlearn image generator"):
        ImageGenerator.load(tmp_path)
    path = new_generator("vae").save(tmp_path / "v")
    (path / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="corrupt"):
        ImageGenerator.load(path)


def test_training_is_deterministic_and_learns(bench):
    from t3unlearn.images.presets import get_preset
    from t3unlearn.images.trainer import train_generator

    P = get_preset("tiny")
    cfg = {**P.vae_train, "steps": 100}
    a, rec = train_generator("vae", bench.train, bench.train_labels, arch=P.vae_arch, config=cfg, progress=False)
    b, _ = train_generator("vae", bench.train, bench.train_labels, arch=P.vae_arch, config=cfg, progress=False)
    assert _same(_params(a.model), _params(b.model))
    assert rec["loss_curve"][-1] < rec["loss_curve"][0]
    c, _ = train_generator("vae", bench.train, bench.train_labels, arch=P.vae_arch, config={**cfg, "seed": 1}, progress=False)
    assert not _same(_params(a.model), _params(c.model))


# ----------------------------------------------------------------------------- methods and the trainer


@pytest.fixture(scope="module")
def full_models(module_home):
    from t3unlearn.images.api import ensure_generator

    return {f: ensure_generator(f, "full", preset="tiny", progress=False) for f in ("ddpm", "vae")}


@pytest.mark.parametrize("family", ["ddpm", "vae"])
@pytest.mark.parametrize("method", ["naive", "neggrad", "neggrad_plus", "siss", "siss_no_is", "adaptive_siss"])
def test_every_method_changes_the_model_deterministically(family, method, bench, full_models):
    from t3unlearn.images.models import ImageGenerator
    from t3unlearn.images.trainer import unlearn

    gen = ImageGenerator.load(full_models[family])
    before = _params(gen.model)
    cfg = {"steps": 2, "batch_size": 4, "lr": 1e-3}
    a, rec = unlearn(gen, bench, method, config=cfg, progress=False)
    b, _ = unlearn(gen, bench, method, config=cfg, progress=False)
    assert _same(before, _params(gen.model))  # the source model is untouched
    assert not _same(before, _params(a.model))
    assert _same(_params(a.model), _params(b.model))  # same seed, same weights
    assert len(rec["history"]) == 2 and rec["unlearn_seconds"] > 0
    if method in ("siss", "siss_no_is", "adaptive_siss"):
        # the forget gradient is rescaled, every step, to 10 % of the first step's descent gradient norm
        assert rec["forget_norm_used"] == pytest.approx(0.1 * rec["history"][0]["grad_descent"], rel=1e-4)
        for h in rec["history"]:
            assert h["forget_scale"] * h["grad_ascent"] == pytest.approx(rec["forget_norm_used"], rel=1e-4)
    if method == "adaptive_siss":
        h = rec["history"]
        assert all(0 < x["lambda"] < 1 and x["kl"] >= 0 for x in h)
        assert h[0]["lambda_median"] == pytest.approx(0.5, abs=1e-6)  # the posterior starts at the prior
        assert "inference_net" in rec


def test_siss_superfactor_and_normalisation_change_the_update(bench, full_models):
    from t3unlearn.images.models import ImageGenerator
    from t3unlearn.images.trainer import unlearn

    gen = ImageGenerator.load(full_models["ddpm"])
    cfg = {"steps": 1, "batch_size": 4, "lr": 1e-3}
    plain, _ = unlearn(gen, bench, "siss", params={"forget_norm_ratio": None, "superfactor": 1.0}, config=cfg, progress=False)
    strong, _ = unlearn(gen, bench, "siss", params={"forget_norm_ratio": None, "superfactor": 50.0}, config=cfg, progress=False)
    clipped, rec = unlearn(gen, bench, "siss", params={"forget_norm": 1e-9, "superfactor": 50.0}, config=cfg, progress=False)
    naive_like, _ = unlearn(gen, bench, "siss", params={"forget_norm": 0.0, "superfactor": 50.0}, config=cfg, progress=False)
    assert not _same(_params(plain.model), _params(strong.model))
    assert rec["forget_norm_used"] == 1e-9
    # a forget gradient clipped to ~0 leaves only the descent term, whatever the superfactor
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(_params(clipped.model).values(), _params(naive_like.model).values()))


def test_method_errors(bench, full_models):
    from t3unlearn.images.methods import get_method
    from t3unlearn.images.models import ImageGenerator
    from t3unlearn.images.trainer import unlearn

    assert get_method("NegGrad+").name == "neggrad_plus" and get_method("adaptive").name == "adaptive_siss"
    with pytest.raises(T3Error, match="unknown image unlearning method"):
        get_method("erase")
    gen = ImageGenerator.load(full_models["vae"])
    with pytest.raises(T3Error, match="has no setting"):
        unlearn(gen, bench, "siss", params={"lamda": 0.3}, config={"steps": 1}, progress=False)


# ----------------------------------------------------------------------------- evaluator and caching


def test_classifier_cache_and_metrics(bench, full_models):
    from t3unlearn.images.api import ensure_evaluator, eval_config, evaluate_cached
    from t3unlearn.images.evaluator import frechet_distance

    _, clf, rec = ensure_evaluator("tiny", progress=False)
    _, clf2, _ = ensure_evaluator("tiny", progress=False)  # from the cache
    assert _same(_params(clf), _params(clf2)) and 0 <= rec["test_accuracy"] <= 1
    res = evaluate_cached(full_models["vae"], preset="tiny", progress=False)
    cfg = eval_config("tiny")
    assert res["n_forget_label"] == cfg.per_label + cfg.forget_label_extra and len(res["per_class_acc"]) == 10
    assert {"elbo_retain", "elbo_forget", "elbo_test"} <= set(res) and res["elbo_retain"] < 0
    assert evaluate_cached(full_models["vae"], preset="tiny", progress=False) == json.loads(json.dumps(res))
    f = torch.randn(200, 5).numpy()
    assert frechet_distance(f, f) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(f, f + 1.0) == pytest.approx(5.0, rel=1e-4)  # a shifted mean: ||mu_a - mu_b||^2


# ----------------------------------------------------------------------------- the command line


def test_cli_unlearn_eval_and_errors(module_home, tmp_path, capsys):
    from t3unlearn.commands.main import main

    out = tmp_path / "ad"
    assert main(["images", "unlearn", "--preset", "tiny", "--model", "vae:full", "--method", "adaptive_siss",
                 "--steps", "3", "--out", str(out), "--quiet", "--threads", "1"]) == 0
    assert (out / "run.json").is_file() and (out / "lambda_net.safetensors").is_file()
    assert main(["images", "eval", "--preset", "tiny", "--model", str(out), "--out", str(tmp_path / "ev"), "--quiet"]) == 0
    assert (tmp_path / "ev" / "samples.png").stat().st_size > 0
    text = capsys.readouterr().out
    assert "forget-glyph rate, label 1" in text and "not Inception FID" in text and "ELBO" in text
    assert main(["images", "unlearn", "--preset", "tiny", "--model", "vae:full", "--method", "erase", "--out", str(tmp_path / "x")]) == 2
    assert main(["images", "eval", "--preset", "tiny", "--model", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("t3unlearn images unlearn: error:")
    assert err[1].startswith("t3unlearn images eval: error:")
    assert not (tmp_path / "x").exists()


def test_cli_compare_tiny(module_home, tmp_path, capsys):
    from t3unlearn.commands.main import main

    out = tmp_path / "cmp"
    assert main(["images", "compare", "--preset", "tiny", "--families", "vae", "--methods", "siss,adaptive_siss",
                 "--seeds", "2", "--out", str(out), "--quiet"]) == 0
    data = json.loads((out / "compare.json").read_text())
    rows = data["results"]["vae"]["rows"]
    assert set(rows) == {"full", "retain", "siss", "adaptive_siss"} and len(rows["siss"]) == 2 and len(rows["retain"]) == 2
    assert len(data["results"]["vae"]["lambda_trajectories"]) == 2
    for name in ("compare.md", "tradeoff.png", "lambda.png", "forget_rows_vae.png", "grids/vae-siss.png"):
        assert (out / name).stat().st_size > 0
    assert "| Adaptive-λ SISS | 2 |" in (out / "compare.md").read_text()
