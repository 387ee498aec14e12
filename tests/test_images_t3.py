"""T3 for image generators: the guided score, the samplers' exactness, the classifier's calibration,
the adapter-style save/load, the cached unit and the CLI (tiny preset; quality is in docs/images.md)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from t3unlearn.errors import ModelError, T3Error


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(module_home):
    """The tiny benchmark and its full DDPM and VAE (cached for the module)."""
    from t3unlearn.images.api import ensure_generator, load_bench

    return load_bench("tiny"), {f: ensure_generator(f, "full", preset="tiny", progress=False) for f in ("ddpm", "vae")}


# ----------------------------------------------------------------------------- the guided score


def test_guided_eps_is_eps_over_T_minus_s_sigma_grad_log_f():
    from t3unlearn.images.t3 import NoisyClassifier, guided_eps

    torch.manual_seed(0)
    clf = NoisyClassifier(kind="cnn", image_size=8, hidden=16, num_labels=11, label_dim=4, time_dim=8)
    x = torch.randn(3, 1, 8, 8)
    eps = torch.randn(3, 1, 8, 8)
    t, y, sigma, T, s = torch.tensor([5, 5, 5]), torch.tensor([1, 2, 10]), 0.37, 1.7, 2.5
    out = guided_eps(eps, x, lambda z: clf.log_f(z, t, y), sigma, temperature=T, scale=s)
    # the gradient of the sum of per-sample log f, computed here by autograd on a separate leaf
    xl = x.clone().requires_grad_(True)
    logf = torch.nn.functional.logsigmoid(clf(xl, t, y))
    (grad,) = torch.autograd.grad(logf.sum(), xl)
    assert torch.allclose(out, eps / T - s * sigma * grad, atol=1e-6)
    assert grad.abs().sum() > 0  # the tilt is not vacuous
    # a closed form: log f = -||x - c||^2 / 2 has gradient c - x
    c = torch.randn(3, 1, 8, 8)
    out = guided_eps(eps, x, lambda z: -0.5 * ((z - c) ** 2).flatten(1).sum(1), sigma, temperature=1.0, scale=s)
    assert torch.allclose(out, eps - s * sigma * (c - x), atol=1e-5)
    # adaptive tempering: a per-sample T_x = 1 + (T - 1)(1 - f(x)), so samples read as retain keep T ~ 1
    out = guided_eps(eps, x, lambda z: clf.log_f(z, t, y), sigma, temperature=T, scale=s, adaptive=True)
    t_x = 1 + (T - 1) * (1 - logf.detach().exp())
    assert torch.allclose(out, eps / t_x.view(-1, 1, 1, 1) - s * sigma * grad, atol=1e-6)
    assert not torch.allclose(out, eps / T - s * sigma * grad, atol=1e-4)
    # no tilt: only the tempering
    assert torch.equal(guided_eps(eps, x, None, sigma, temperature=2.0, scale=1.0), eps / 2.0)


def test_T1_s0_gives_back_the_base_samplers_exactly(tiny):
    from t3unlearn.images.models import ImageGenerator
    from t3unlearn.images.sampling import generate
    from t3unlearn.images.t3 import ImageGuidance, NoisyClassifier, T3ImageHead

    _, models = tiny
    for fam in ("ddpm", "vae"):
        base = ImageGenerator.load(models[fam])
        plain = generate(base, [1, 3, 10] if fam == "ddpm" else [1, 3, 4], seed=5, steps=4)
        for scheme in ("score", "langevin"):
            guided = ImageGenerator.load(models[fam])
            clf = NoisyClassifier(kind="cnn", image_size=16, hidden=8, time_cond=fam == "ddpm")
            guided.guidance = T3ImageHead(clf, ImageGuidance(temperature=1.0, scale=0.0, scheme=scheme), {})
            out = generate(guided, [1, 3, 10] if fam == "ddpm" else [1, 3, 4], seed=5, steps=4)
            assert torch.equal(out, plain), (fam, scheme)
        # and the guidance does change the samples once it is on
        guided.guidance = T3ImageHead(clf, ImageGuidance(temperature=1.5, scale=1.0), {})
        assert not torch.equal(generate(guided, [1, 3, 4], seed=5, steps=4), generate(base, [1, 3, 4], seed=5, steps=4))


# ----------------------------------------------------------------------------- exactness on 2-D mixtures


def test_exactness_check_langevin_reaches_the_target_where_score_scaling_is_biased():
    from t3unlearn.images.exactness import run_check

    rep = run_check(n=3000, steps=60, models=("analytic",), settings=((1.0, 1.0), (2.0, 1.0)), progress=False,
                    log=lambda *_: None, final_langevin_steps=100)
    row = {(r["temperature"], r["scheme"]): r for r in rep["rows"]}
    # T = 1 with the exact noised classifier: classifier guidance is exact under either scheme
    for scheme in ("score", "langevin"):
        r = row[(1.0, scheme)]
        assert r["tv"] < r["tv_floor"] + 0.03, r
        assert abs(r["forget_mass"] - r["forget_mass_target"]) < 0.01, r
    # T = 2: per-step score scaling is biased (it starves the forget component below the target's mass);
    # the Langevin corrector reaches the target up to sampling noise
    score, lang = row[(2.0, "score")], row[(2.0, "langevin")]
    assert score["tv"] > score["tv_floor"] + 0.2, score
    assert lang["tv"] < lang["tv_floor"] + 0.05, lang
    assert abs(lang["forget_mass"] - lang["forget_mass_target"]) < 0.006 < abs(score["forget_mass"] - score["forget_mass_target"])


def test_analytic_mixture_eps_matches_autograd_of_its_density():
    from t3unlearn.images.exactness import AnalyticMixture, make_scheduler

    sched = make_scheduler()
    mix = AnalyticMixture(np.zeros(2), 1.0, np.array([1.5, 1.5]), 0.04, 0.2, sched.alphas_cumprod)
    x = torch.randn(5, 2, dtype=torch.float64)
    for t in (0, 300, 900):
        ab = float(sched.alphas_cumprod[t])
        xl = x.clone().requires_grad_(True)
        comps = []
        for m, v, w in ((np.zeros(2), 1.0, 0.8), (np.array([1.5, 1.5]), 0.04, 0.2)):
            var = ab * v + 1 - ab
            mean = torch.tensor(math.sqrt(ab) * m)
            comps.append(math.log(w) - 0.5 * ((xl - mean) ** 2).sum(1) / var - math.log(2 * math.pi * var))
        logp = torch.logsumexp(torch.stack(comps), 0)
        (score,) = torch.autograd.grad(logp.sum(), xl)
        assert torch.allclose(mix.eps(x, t), -math.sqrt(1 - ab) * score, atol=1e-8)
        assert torch.allclose(mix.log_f(x, t), (comps[0] - logp).detach(), atol=1e-8)


# ----------------------------------------------------------------------------- the classifier


def test_classifier_learns_the_posterior_with_the_training_prior():
    """Balanced batches, then the data's own prior: on separable 1-D data with 9:1 retain:forget, the
    classifier's P(retain) approaches the Bayes posterior, and prior_logit = log(n_retain / n_forget)."""
    from t3unlearn.images.t3 import ClassifierTrainConfig, NoisyClassifier, fit_noisy_classifier

    g = torch.Generator().manual_seed(0)
    retain = torch.randn(9000, 1, generator=g)
    forget = 2.0 + 0.5 * torch.randn(1000, 1, generator=g)
    torch.manual_seed(0)
    clf = NoisyClassifier(kind="mlp", in_dim=1, hidden=32, num_labels=0, time_cond=False)
    rec = fit_noisy_classifier(clf, retain, forget, config=ClassifierTrainConfig(steps=800, batch_size=256, lr=1e-2),
                               progress=False)
    assert clf.config.prior_logit == pytest.approx(math.log(9.0)) == rec["prior_logit"]
    z = torch.tensor([[-1.0], [0.0], [1.0], [2.0], [2.5]])
    n = lambda x, m, s: torch.exp(-0.5 * ((x - m) / s) ** 2) / s  # noqa: E731
    bayes = 0.9 * n(z, 0, 1) / (0.9 * n(z, 0, 1) + 0.1 * n(z, 2, 0.5))
    got = clf.log_f(z).exp().detach()
    assert torch.allclose(got, bayes.squeeze(1), atol=0.08), (got, bayes)


def test_guidance_settings_are_checked():
    from t3unlearn.images.t3 import ImageGuidance

    with pytest.raises(T3Error, match="temperature must be a positive"):
        ImageGuidance(temperature=0)
    with pytest.raises(T3Error, match="unknown sampling scheme"):
        ImageGuidance(scheme="smc")
    with pytest.raises(T3Error, match="unknown guidance setting"):
        ImageGuidance.from_dict({"temprature": 2})


# ----------------------------------------------------------------------------- the cached unit, save/load, CLI


def test_t3_unit_saves_an_adapter_that_round_trips_and_forgets_its_base(tiny, tmp_path):
    import shutil

    from t3unlearn.images.api import evaluate_cached, t3_cached
    from t3unlearn.images.models import ImageGenerator
    from t3unlearn.images.sampling import generate

    _, models = tiny
    path, rec = t3_cached("ddpm", "t3", preset="tiny", params={"temperature": 1.5}, progress=False)
    assert rec["trainable_params"] == sum(p.numel() for p in ImageGenerator.load(path).guidance.classifier.parameters())
    assert not (path / "unet").exists()  # the base is referenced, not copied
    meta = json.loads((path / "t3_images.json").read_text())
    assert meta["t3"]["base"] == str(models["ddpm"].resolve())
    gen = ImageGenerator.load(path)
    assert gen.guidance.guidance.temperature == 1.5 and gen.guidance.classifier.config.prior_logit > 0
    a = generate(gen, [1, 2], seed=3, steps=3)
    b = generate(ImageGenerator.load(path), [1, 2], seed=3, steps=3)
    assert torch.equal(a, b)
    # cg shares the classifier (trained once) but is its own run with T = 1
    path_cg, rec_cg = t3_cached("ddpm", "cg", preset="tiny", progress=False)
    assert path_cg != path and ImageGenerator.load(path_cg).guidance.guidance.temperature == 1.0
    c1 = ImageGenerator.load(path).guidance.classifier.state_dict()
    c2 = ImageGenerator.load(path_cg).guidance.classifier.state_dict()
    assert all(torch.equal(c1[k], c2[k]) for k in c1)
    ev = evaluate_cached(path, preset="tiny", progress=False)
    assert 0 <= ev["forget_rate_label"] <= 1 and "elbo_retain" not in ev
    # a head whose base changed, or is gone, is refused with a clear error
    copy = tmp_path / "head"
    shutil.copytree(path, copy)
    meta["t3"]["base_fingerprint"] = "0" * 16
    (copy / "t3_images.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="other weights"):
        ImageGenerator.load(copy)
    meta["t3"]["base"] = str(tmp_path / "nowhere")
    (copy / "t3_images.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="is gone"):
        ImageGenerator.load(copy)


def test_cli_unlearn_t3_then_eval(tiny, tmp_path, capsys):
    from t3unlearn.commands.main import main

    out = tmp_path / "t3-vae"
    assert main(["images", "unlearn", "--preset", "tiny", "--model", "vae:full", "--method", "t3", "--quiet",
                 "--set", "temperature=1.5", "--set", "scale=2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "(frozen)" in text and "T = 1.5, s = 2" in text
    assert main(["images", "eval", "--preset", "tiny", "--model", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "forget-glyph rate" in text and "ELBO" not in text
    assert main(["images", "unlearn", "--preset", "tiny", "--model", "vae:full", "--method", "t3", "--quiet",
                 "--set", "scheme=smc", "--out", str(tmp_path / "bad")]) == 2
    assert "unknown sampling scheme" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
