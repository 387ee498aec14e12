"""The image methods' math against hand computations and closed forms (no training, milliseconds)."""

from __future__ import annotations

import math

import pytest
import torch

from t3unlearn.images import losses as L
from t3unlearn.images.objectives import ddpm_plain_loss, ddpm_siss_pair, vae_parts, vae_siss_pair


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_siss_weights_and_loss_match_a_hand_computation_on_two_samples():
    # one retain sample x, one forget sample a, 2-pixel images, one noisy sample m
    x = torch.tensor([[[[0.5, -0.2]]]])
    a = torch.tensor([[[[-0.3, 0.4]]]])
    m = torch.tensor([[[[0.1, 0.15]]]])
    ab = 0.6  # alpha-bar at t
    gamma, sigma = math.sqrt(ab), math.sqrt(1 - ab)
    lam, n, k, c = 0.3, 10, 2, 2.5
    eps_pred = torch.tensor([[[[0.2, -0.1]]]])

    # by hand
    d_x = ((0.1 - gamma * 0.5) ** 2 + (0.15 - gamma * -0.2) ** 2) / (2 * sigma**2)
    d_a = ((0.1 - gamma * -0.3) ** 2 + (0.15 - gamma * 0.4) ** 2) / (2 * sigma**2)
    w_x = 1 / ((1 - lam) + lam * math.exp(d_x - d_a))
    w_a = 1 / ((1 - lam) * math.exp(d_a - d_x) + lam)
    eps_x = [(0.1 - gamma * 0.5) / sigma, (0.15 - gamma * -0.2) / sigma]
    eps_a = [(0.1 - gamma * -0.3) / sigma, (0.15 - gamma * 0.4) / sigma]
    l_x = ((0.2 - eps_x[0]) ** 2 + (-0.1 - eps_x[1]) ** 2) / 2  # per-pixel mean
    l_a = ((0.2 - eps_a[0]) ** 2 + (-0.1 - eps_a[1]) ** 2) / 2
    loss = n / (n - k) * w_x * l_x - c * k / (n - k) * w_a * l_a

    g, s = torch.tensor([gamma]), torch.tensor([sigma])
    log_q_x, log_q_a = L.ddpm_log_q(m, x, g, s), L.ddpm_log_q(m, a, g, s)
    assert float(log_q_x) == pytest.approx(-d_x, rel=1e-6)
    assert float(log_q_a) == pytest.approx(-d_a, rel=1e-6)
    log_w_x, log_w_a = L.siss_log_weights(log_q_x, log_q_a, lam)
    assert float(log_w_x.exp()) == pytest.approx(w_x, rel=1e-5)
    assert float(log_w_a.exp()) == pytest.approx(w_a, rel=1e-5)
    lx = L.noise_mse(eps_pred, (m - gamma * x) / sigma)
    la = L.noise_mse(eps_pred, (m - gamma * a) / sigma)
    assert float(lx) == pytest.approx(l_x, rel=1e-5) and float(la) == pytest.approx(l_a, rel=1e-5)
    descent, ascent = L.siss_loss(lx, la, log_w_x, log_w_a, n, k, c)
    assert float(descent - ascent) == pytest.approx(loss, rel=1e-5)
    # the mixture density is a density: (1 - λ) w_x + λ w_a = 1
    assert (1 - lam) * w_x + lam * w_a == pytest.approx(1.0)


def test_siss_weights_stay_finite_when_the_distances_are_huge():
    log_q_x = torch.tensor([-5000.0, 0.0])
    log_q_a = torch.tensor([0.0, -5000.0])
    log_w_x, log_w_a = L.siss_log_weights(log_q_x, log_q_a, 0.5)
    w_x, w_a = log_w_x.exp(), log_w_a.exp()
    assert torch.isfinite(w_x).all() and torch.isfinite(w_a).all()
    assert torch.allclose(w_x, torch.tensor([0.0, 2.0])) and torch.allclose(w_a, torch.tensor([2.0, 0.0]))


def _toy_setup():
    torch.manual_seed(0)
    X = torch.randn(5, 1, 1, 2) * 0.8  # n = 5, the last one is the forget sample (k = 1)
    alphas_cumprod = torch.linspace(0.95, 0.05, 8)  # T = 8
    W = torch.tensor([[0.7, -0.3], [0.2, 0.5]])

    def predict(m, t, y):  # a fixed "model": any function of (m, t) will do
        return (m.flatten(1) @ W.T).view_as(m) * (1 + t.view(-1, 1, 1, 1) / 8.0) + 0.1

    return X, alphas_cumprod, predict


@pytest.mark.parametrize("lam", [0.5, 0.2])
def test_siss_with_c_1_is_naive_deletion_in_expectation(lam):
    """E over x~X, a~A, t, ε and the mixture of the SISS loss (c = 1) = the retain-only loss (Monte Carlo)."""
    X, ab, predict = _toy_setup()
    n, k = 5, 1
    N = 400_000
    g = torch.Generator().manual_seed(1)
    xi = torch.randint(0, n, (N,), generator=g)
    y = torch.zeros(N, dtype=torch.long)
    d = ddpm_siss_pair(predict, ab, X[xi], y, X[torch.full((N,), 4)], y, lam, g)
    tx, ta = d["log_w_x"].exp() * d["loss_x"], d["log_w_a"].exp() * d["loss_a"]
    descent, ascent = L.siss_objective(tx, ta, n, k, superfactor=1.0)
    siss = float(descent - ascent)
    # standard error of the estimate, from the per-sample combination
    per = n / (n - k) * tx - k / (n - k) * ta
    se = float(per.std()) / math.sqrt(N)

    ri = torch.randint(0, n - k, (N,), generator=g)  # the retain set X \ A
    naive = ddpm_plain_loss(predict, ab, X[ri], y, g)
    se_naive = float(naive.std()) / math.sqrt(N)
    assert abs(siss - float(naive.mean())) < 4 * math.hypot(se, se_naive)
    # and a superfactor c = 3 is measurably not the naive-deletion objective
    descent3, ascent3 = L.siss_objective(tx, ta, n, k, superfactor=3.0)
    assert abs(float(descent3 - ascent3) - float(naive.mean())) > 10 * math.hypot(se, se_naive)


def test_vae_siss_reconstruction_weights_are_unbiased():
    """E_{z ~ mixture}[w_x rec_x(z)] = E_{z ~ q(z|x)}[rec_x(z)] for the VAE's latent mixture."""
    from t3unlearn.images.models import ConditionalVAE

    torch.manual_seed(0)
    vae = ConditionalVAE(image_size=4, hidden=16, latent_dim=2, label_dim=2).eval()
    x = torch.rand(1, 1, 4, 4).expand(200_000, 1, 4, 4)
    a = torch.rand(1, 1, 4, 4).expand(200_000, 1, 4, 4)
    y = torch.zeros(200_000, dtype=torch.long)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        d = vae_siss_pair(vae, x, y, a, y, 0.5, g)
        plain_rec, _ = vae_parts(vae, x, y, g)
    est = d["log_w_x"].exp() * d["rec_x"]
    se = math.hypot(float(est.std()), float(plain_rec.std())) / math.sqrt(len(x))
    assert abs(float(est.mean()) - float(plain_rec.mean())) < 4 * se


def test_logit_normal_kl_equals_the_closed_form_and_a_monte_carlo_estimate():
    from torch.distributions import Normal, TransformedDistribution
    from torch.distributions.transforms import SigmoidTransform

    mu, log_sigma = torch.tensor(0.7), torch.tensor(math.log(0.4))
    mu0, sigma0 = -0.2, 1.3
    kl = L.logit_normal_kl(mu, log_sigma, mu0, sigma0)
    closed = math.log(sigma0 / 0.4) + (0.4**2 + (0.7 + 0.2) ** 2) / (2 * sigma0**2) - 0.5
    assert float(kl) == pytest.approx(closed, rel=1e-6)
    assert float(kl) == pytest.approx(float(torch.distributions.kl_divergence(Normal(0.7, 0.4), Normal(mu0, sigma0))), rel=1e-6)
    # the KL between the logit-normal distributions themselves, by Monte Carlo over λ
    q = TransformedDistribution(Normal(0.7, 0.4), [SigmoidTransform()])
    p = TransformedDistribution(Normal(mu0, sigma0), [SigmoidTransform()])
    torch.manual_seed(0)
    lam = q.sample((200_000,)).clamp(1e-6, 1 - 1e-6)
    mc = (q.log_prob(lam) - p.log_prob(lam)).mean()
    assert float(mc) == pytest.approx(float(kl), abs=0.01)
    # zero at the prior, and it has a gradient for the inference network
    mu.requires_grad_(True)
    L.logit_normal_kl(mu, log_sigma, mu0, sigma0).backward()
    assert float(mu.grad) == pytest.approx((0.7 + 0.2) / sigma0**2, rel=1e-5)
    assert float(L.logit_normal_kl(torch.tensor(mu0), torch.tensor(math.log(sigma0)), mu0, sigma0)) == pytest.approx(0.0, abs=1e-7)


def test_logit_normal_sample_is_reparameterised():
    mu = torch.tensor(0.3, requires_grad=True)
    lam = L.logit_normal_sample(mu, torch.tensor(-1.0), torch.tensor(0.5))
    lam.backward()
    s = float(torch.sigmoid(torch.tensor(0.3 + math.exp(-1.0) * 0.5)))
    assert float(lam.detach()) == pytest.approx(s) and float(mu.grad) == pytest.approx(s * (1 - s))


def test_forget_gradient_normalisation():
    grads = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]]), None]
    clipped, norm = L.normalise_grads(grads, 1.0, "clip")
    assert float(norm) == pytest.approx(5.0) and float(L.grad_norm(clipped)) == pytest.approx(1.0)
    same, _ = L.normalise_grads(grads, 10.0, "clip")  # clip only shrinks
    assert float(L.grad_norm(same)) == pytest.approx(5.0)
    up, _ = L.normalise_grads(grads, 10.0, "rescale")  # rescale always sets the norm
    assert float(L.grad_norm(up)) == pytest.approx(10.0) and up[2] is None


def test_baseline_losses_signs():
    r, f = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 4.0])
    assert L.naive_deletion_loss(r) == (torch.tensor(2.0), None)
    d, a = L.neggrad_loss(f)
    assert d is None and float(a) == 3.0
    d, a = L.neggrad_plus_loss(r, f, alpha=0.5)
    assert float(d) == 2.0 and float(a) == 1.5
    with pytest.raises(ValueError):
        L.siss_objective(r, f, n=3, k=3)
