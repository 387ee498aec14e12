"""Adaptive-λ's learning signal: λ controls the SISS estimator's variance, not its mean.

Toy problems in one dimension (the DDPM's Gaussian noising with γ = σ = 1) check (a) that the gradient
λ follows changes sign with its inputs, (b) that the SISS estimate is unbiased for every λ, (c) that the
variance objective is minimised where theory says, and that the inference network learns an
input-dependent λ from it; then the method on the tiny preset (inputs measured now, on the retain set).
"""

from __future__ import annotations

import math

import pytest
import torch

from t3unlearn.images import losses as L

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _draw(lam: float, x: float, a: float, n: int, seed: int):
    """``m ~ (1-λ) N(x, 1) + λ N(a, 1)`` and its SISS weights (through the package's own functions)."""
    g = torch.Generator().manual_seed(seed)
    from_a = torch.rand(n, generator=g) < lam
    m = torch.where(from_a, torch.tensor(a), torch.tensor(x)) + torch.randn(n, generator=g)
    one = torch.ones(n)
    log_q_x = L.ddpm_log_q(m[:, None], torch.full((n, 1), x), one, one)
    log_q_a = L.ddpm_log_q(m[:, None], torch.full((n, 1), a), one, one)
    lw_x, lw_a = L.siss_log_weights(log_q_x, log_q_a, lam)
    return m, lw_x.exp(), lw_a.exp()


def _gsq(w_x, w_a, f_x: float, f_a: float):
    """G for constant per-sample squared gradient norms F_x, F_a (A = C = 1)."""
    return w_x.square() * f_x + w_a.square() * f_a


# ----------------------------------------------------------------------------- (b) unbiased for every λ


@pytest.mark.parametrize("lam", [0.05, 0.3, 0.7, 0.95])
def test_siss_estimate_is_unbiased_for_every_lambda(lam):
    x, a, n = 0.0, 1.5, 400_000
    m, w_x, w_a = _draw(lam, x, a, n, seed=1)
    # E_{q(.|x)}[1 + m²] = 2, E_{q(.|a)}[2 + cos m] = 2 + cos(a) e^(-1/2)
    est_x, est_a = w_x * (1 + m.square()), w_a * (2 + torch.cos(m))
    for est, truth in ((est_x, 2.0), (est_a, 2 + math.cos(a) * math.exp(-0.5))):
        se = float(est.std()) / math.sqrt(n)
        assert abs(float(est.mean()) - truth) < 4 * se + 1e-3


def test_lambda_moves_the_variance_not_the_mean():
    x, a, n = 0.0, 1.5, 200_000
    means, variances = [], []
    for lam in (0.1, 0.5, 0.9):
        m, w_x, w_a = _draw(lam, x, a, n, seed=2)
        est = w_x * m.square() - w_a * torch.cos(m)
        means.append(float(est.mean()))
        variances.append(float(est.var()))
    assert max(means) - min(means) < 0.03
    assert max(variances) > 1.5 * min(variances)


# ----------------------------------------------------------------------------- the variance objective


def test_reweighted_second_moment_matches_direct_sampling_and_its_gradient():
    x, a, n = 0.0, 1.0, 200_000
    m, w_x, w_a = _draw(0.5, x, a, n, seed=3)
    G = (w_x * m.square() - w_a * torch.cos(m)).square()
    for lam2 in (0.2, 0.8):  # S(λ') from λ = 0.5's draws vs drawing at λ' itself
        m2, w_x2, w_a2 = _draw(lam2, x, a, n, seed=4)
        direct = float((w_x2 * m2.square() - w_a2 * torch.cos(m2)).square().mean())
        assert float(L.mixture_second_moment(G, w_x, w_a, lam2)) == pytest.approx(direct, rel=0.05)
    # the closed-form gradient is autograd's gradient of the reweighted form at λ' = λ
    lam_t = torch.tensor(0.5, requires_grad=True)
    (auto,) = torch.autograd.grad(L.mixture_second_moment(G, w_x, w_a, lam_t), lam_t)
    assert float(auto) == pytest.approx(float(L.mixture_second_moment_grad(G, w_x, w_a)), rel=1e-4)


def test_variance_objective_is_minimised_where_theory_says():
    # disjoint components: S(λ) = F_x/(1-λ) + F_a/λ, minimised at √F_a/(√F_a + √F_x) = 0.75 here
    f_x, f_a = 1.0, 9.0
    star = L.optimal_lambda_disjoint(f_x, f_a)
    assert star == pytest.approx(0.75)
    _, w_x, w_a = _draw(0.5, 0.0, 60.0, 100_000, seed=5)
    G = _gsq(w_x, w_a, f_x, f_a)
    grid = torch.linspace(0.01, 0.99, 99)
    S = torch.stack([L.mixture_second_moment(G, w_x, w_a, float(v)) for v in grid])
    assert float(grid[int(S.argmin())]) == pytest.approx(star, abs=0.03)
    assert float(S.min()) == pytest.approx((math.sqrt(f_x) + math.sqrt(f_a)) ** 2, rel=0.03)
    # stochastic gradient descent on logit λ, redrawing at each λ, settles at λ*
    u = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([u], lr=0.05)
    for step in range(300):
        lam = torch.sigmoid(u)
        _, w_x, w_a = _draw(float(lam.detach()), 0.0, 60.0, 256, seed=100 + step)
        loss = torch.log(L.mixture_second_moment(_gsq(w_x, w_a, f_x, f_a), w_x, w_a, lam))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(torch.sigmoid(u).detach()) == pytest.approx(star, abs=0.06)


# ----------------------------------------------------------------------------- (a) the sign follows the inputs


def test_lambda_gradient_sign_depends_on_its_inputs():
    signs = set()
    for lam, f_a in ((0.5, 9.0), (0.5, 0.1), (0.2, 1.0), (0.8, 1.0)):
        _, w_x, w_a = _draw(lam, 0.0, 60.0, 20_000, seed=6)
        d = float(L.mixture_second_moment_grad(_gsq(w_x, w_a, 1.0, f_a), w_x, w_a))
        star = L.optimal_lambda_disjoint(1.0, f_a)
        assert (d < 0) == (lam < star)  # descent moves λ towards λ*
        signs.add(d > 0)
    assert signs == {True, False}


def test_inference_network_learns_an_input_dependent_lambda():
    from t3unlearn.images.methods import LambdaInferenceNet

    torch.manual_seed(0)
    net = LambdaInferenceNet(hidden=16, n_in=2)
    opt = torch.optim.Adam(net.parameters(), lr=2e-2)
    contexts = {1.0: 9.0, -1.0: 1.0 / 9.0}  # a feature that carries F_a/F_x: λ* = 0.75 and 0.25
    for step in range(200):
        c = 1.0 if step % 2 else -1.0
        mu, log_sigma = net(torch.tensor([c, 0.0]))
        lam = torch.sigmoid(mu).clamp(1e-4, 1 - 1e-4)
        _, w_x, w_a = _draw(float(lam.detach()), 0.0, 60.0, 128, seed=1000 + step)
        loss = torch.log(L.mixture_second_moment(_gsq(w_x, w_a, 1.0, contexts[c]), w_x, w_a, lam))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for c, f_a in contexts.items():
        lam = float(torch.sigmoid(net(torch.tensor([c, 0.0]))[0]).detach())
        assert lam == pytest.approx(L.optimal_lambda_disjoint(1.0, f_a), abs=0.08)


def test_schedule_and_bad_input():
    assert L.lambda_schedule(0.5, None, 7, 10) == 0.5
    assert L.lambda_schedule(0.5, 0.005, 0, 10) == pytest.approx(0.5)
    assert L.lambda_schedule(0.5, 0.005, 9, 10) == pytest.approx(0.005)
    assert L.lambda_schedule(0.5, 0.005, 4, 9) == pytest.approx(0.05)  # geometric: halfway in log
    with pytest.raises(ValueError):
        L.optimal_lambda_disjoint(0.0, 0.0)


# ----------------------------------------------------------------------------- the method on the tiny preset


@pytest.fixture(scope="module")
def tiny(module_home):
    from t3unlearn.images.api import ensure_generator
    from t3unlearn.images.data import ensure_benchmark

    return ensure_benchmark("tiny"), ensure_generator("vae", "full", preset="tiny", progress=False)


def test_adaptive_reads_its_inputs_now_on_the_retain_set(tiny):
    from t3unlearn.images.methods import Context, get_method, measure_context, resolve_params
    from t3unlearn.images.models import ImageGenerator
    from t3unlearn.images.objectives import Family

    bench, path = tiny
    gen = ImageGenerator.load(path)
    fam = Family(gen, 0.0)
    method = get_method("adaptive_siss")
    ctx = Context(family=fam, params=resolve_params(method, {}), n=bench.n, k=bench.k,
                  generator=torch.Generator().manual_seed(0), total_steps=4)
    method.setup(ctx)
    k = min(4, len(bench.forget))
    batch = {"retain": (bench.retain[:k], bench.retain_labels[:k]), "forget": (bench.forget[:k], bench.forget_labels[:k]),
             "all": (bench.train[:k], bench.train_labels[:k])}
    now = measure_context(ctx, batch)
    g = torch.Generator().manual_seed(int(ctx.generator.initial_seed()) + 41)
    assert now["retain_loss"] == pytest.approx(float(fam.plain_loss(*batch["retain"], g).mean().detach()), rel=1e-5)
    assert now["forget_loss"] == pytest.approx(float(fam.plain_loss(*batch["forget"], g).mean().detach()), rel=1e-5)
    assert now["grad_retain"] > 0 and now["grad_forget"] > 0
    terms = method.compute(ctx, batch)
    assert terms.logs["ctx_retain_loss"] == pytest.approx(now["retain_loss"], rel=0.5)
    assert callable(terms.aux)
    raw = terms.aux({"forget_norm": None, "forget_scale": 1.0})  # no normalisation: the plain SISS estimator
    scaled = terms.aux({"forget_norm": 1e-3, "forget_scale": 1.0})  # the forget part shrunk: a different variance
    assert torch.isfinite(raw) and float(raw.detach()) != float(scaled.detach())
    assert 0 < terms.logs["lambda_batch_opt"] < 1 and math.isfinite(terms.logs["dlogS_dlambda"])
