"""The image methods' losses as small pure functions of tensors (no models, no state).

Notation (SISS, Alberti et al., ICLR 2025): ``X`` is the full training set (n images), ``A`` the
forget set (k images, inside X). Deleting A means training on ``X \\ A``, whose loss splits as

    L_{X\\A} = n/(n-k) · E_{x~X}[l(x)]  -  k/(n-k) · E_{a~A}[l(a)].

SISS estimates both expectations from **one** noisy sample m drawn from the defensive mixture
``q_λ(m | x, a) = (1-λ) q(m | x) + λ q(m | a)`` and importance weights

    w_x = q(m|x) / q_λ(m) = 1 / ((1-λ) + λ·exp(d_x - d_a))
    w_a = q(m|a) / q_λ(m) = 1 / ((1-λ)·exp(d_a - d_x) + λ),      q(m|·) ∝ exp(-d_·),

so the loss is ``n/(n-k)·w_x·l_x - c·k/(n-k)·w_a·l_a``; the superfactor c = 1 is the unbiased
naive-deletion loss, c > 1 forgets harder. For a DDPM, ``m = γ_t·x0 + σ_t·ε`` and
``d = ||m - γ_t·x0||² / (2σ_t²)``; for a VAE the shared random variable is the latent z and
``q(z|·)`` the encoder's Gaussian. Weights are computed in log space (``d_x - d_a`` is often in the
thousands).

Convention: every objective returns a ``descent`` part (minimised) and an ``ascent`` part (the
trainer *subtracts* its gradient, after optional norm clipping), both scalars, so the trainer can
normalise the forget gradient as the SISS reference implementation does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------- DDPM


def noise_mse(eps_pred: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Per-sample ``||ε_θ - ε||²`` divided by the number of pixels (the usual DDPM loss scale), ``[B]``."""
    return (eps_pred.float() - eps.float()).square().flatten(1).mean(1)


def ddpm_log_q(m: torch.Tensor, x0: torch.Tensor, gamma: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``log q(m | x0) + const = -||m - γ x0||² / (2σ²)`` per sample, ``[B]`` (γ, σ: ``[B]``)."""
    g = gamma.view(-1, *([1] * (m.dim() - 1)))
    s = sigma.view(-1, *([1] * (m.dim() - 1)))
    return -((m - g * x0).square() / (2 * s.square())).flatten(1).sum(1)


# ----------------------------------------------------------------------------- VAE


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``-log p(x | z)`` per sample (Bernoulli likelihood of grey levels in [0, 1], nats), ``[B]``."""
    return F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none").flatten(1).sum(1)


def gaussian_kl_std(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, diag e^logvar) || N(0, I))`` per sample, ``[B]``."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(1)


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``log N(z; mu, diag e^logvar)`` per sample, ``[B]``."""
    return -0.5 * (((z - mu).square() / logvar.exp()) + logvar + math.log(2 * math.pi)).sum(1)


def neg_elbo(rec_nll: torch.Tensor, kl: torch.Tensor) -> torch.Tensor:
    """``-ELBO = E_q[-log p(x|z)] + KL(q(z|x) || p(z))`` per sample (one-sample reconstruction term)."""
    return rec_nll + kl


# ----------------------------------------------------------------------------- SISS


def siss_log_weights(log_q_x: torch.Tensor, log_q_a: torch.Tensor, lam) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log w_x, log w_a)``: the importance weights of the λ-mixture, in log space.

    ``log_q_x`` / ``log_q_a``: ``log q(m|x)``, ``log q(m|a)`` up to the *same* constant (``-d_x``, ``-d_a``).
    ``lam`` may be a float or a tensor (a scalar, or one per sample) carrying gradients.
    """
    lam = torch.as_tensor(lam, dtype=log_q_x.dtype, device=log_q_x.device)
    log_mix = torch.logaddexp(torch.log1p(-lam) + log_q_x, torch.log(lam) + log_q_a)
    return log_q_x - log_mix, log_q_a - log_mix


def siss_objective(term_x: torch.Tensor, term_a: torch.Tensor, n: int, k: int, superfactor: float = 1.0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(descent, ascent) = (n/(n-k)·mean(term_x), c·k/(n-k)·mean(term_a))`` from importance-weighted terms.

    The SISS loss is ``descent - ascent``.
    """
    if not 0 < k < n:
        raise ValueError(f"SISS needs 0 < k < n (forget set inside a larger data set), got n={n}, k={k}.")
    return n / (n - k) * term_x.mean(), superfactor * k / (n - k) * term_a.mean()


def siss_loss(loss_x: torch.Tensor, loss_a: torch.Tensor, log_w_x: torch.Tensor, log_w_a: torch.Tensor,
              n: int, k: int, superfactor: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """SISS for per-sample losses ``l_x``, ``l_a`` at the shared noisy sample: ``(descent, ascent)``."""
    return siss_objective(log_w_x.exp() * loss_x, log_w_a.exp() * loss_a, n, k, superfactor)


# ----------------------------------------------------------------------------- baselines


def naive_deletion_loss(retain_loss: torch.Tensor) -> tuple[torch.Tensor, None]:
    """Naive deletion: keep training on the retain data only."""
    return retain_loss.mean(), None


def neggrad_loss(forget_loss: torch.Tensor) -> tuple[None, torch.Tensor]:
    """NegGrad: gradient ascent on the forget data's loss."""
    return None, forget_loss.mean()


def neggrad_plus_loss(retain_loss: torch.Tensor, forget_loss: torch.Tensor, alpha: float = 1.0
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """NegGrad+: descent on the retain loss, ascent on ``alpha`` times the forget loss."""
    return retain_loss.mean(), alpha * forget_loss.mean()


# ----------------------------------------------------------------------------- Adaptive-λ


def logit_normal_sample(mu: torch.Tensor, log_sigma: torch.Tensor, xi: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Reparameterised λ = sigmoid(mu + sigma·xi), ``xi ~ N(0, 1)``, kept inside ``[eps, 1 - eps]``."""
    return torch.sigmoid(mu + log_sigma.exp() * xi).clamp(eps, 1.0 - eps)


def logit_normal_kl(mu: torch.Tensor, log_sigma: torch.Tensor, mu0: float, sigma0: float) -> torch.Tensor:
    """``KL(LogitNormal(mu, σ) || LogitNormal(mu0, σ0))`` in closed form.

    The logit is a bijection, so this is the KL of the underlying normals:
    ``log(σ0/σ) + (σ² + (mu - mu0)²) / (2σ0²) - 1/2``.
    """
    var = (2 * log_sigma).exp()
    return math.log(sigma0) - log_sigma + (var + (mu - mu0).square()) / (2 * sigma0**2) - 0.5


# ----------------------------------------------------------------------------- λ's learning signal
#
# For any λ in (0, 1) the SISS estimate is unbiased, so its *mean* does not depend on λ; λ controls only
# its variance. Write the per-pair estimate as ``f(m) / q_λ(m)`` with ``f(m) = A q(m|x) g_x(m) - C q(m|a) g_a(m)``
# (A = n/(n-k), C = c·k/(n-k); g: the per-sample gradient, here w.r.t. the model's outputs). Its second
# moment ``S(λ) = ∫ ||f||² / q_λ dm`` is convex in λ, and from draws m_i ~ q_λ (weights w_x, w_a at λ):
#
#     S(λ')      = E_{q_λ}[ G / ((1-λ') w_x + λ' w_a) ],      G = ||A w_x g_x - C w_a g_a||²  (importance reweighting)
#     dS/dλ'|_λ  = -E_{q_λ}[ G · (w_a - w_x) ]                  (the score-function identity; (1-λ)w_x + λ w_a = 1)
#
# With (near) disjoint components (w_x ∈ {0, 1/(1-λ)}, w_a ∈ {0, 1/λ}), S(λ) = F_x/(1-λ) + F_a/λ with
# F_x = E_x[A²||g_x||²], F_a = E_a[C²||g_a||²], minimised at λ* = √F_a / (√F_a + √F_x).


def mixture_second_moment(gsq: torch.Tensor, w_x: torch.Tensor, w_a: torch.Tensor, lam) -> torch.Tensor:
    """``S(λ')``: the estimator's second moment at mixture weight ``lam`` (λ', may carry gradients), estimated
    from draws of the mixture at the sampling λ whose (detached) weights are ``w_x``, ``w_a`` and whose squared
    per-pair estimates are ``gsq`` (G). Its gradient in λ' at λ' = λ is the score-function estimate of dS/dλ."""
    lam = torch.as_tensor(lam, dtype=gsq.dtype)
    return (gsq / ((1 - lam) * w_x + lam * w_a).clamp_min(1e-12)).mean()


def mixture_second_moment_grad(gsq: torch.Tensor, w_x: torch.Tensor, w_a: torch.Tensor) -> torch.Tensor:
    """``dS/dλ`` at the sampling λ, ``-mean(G · (w_a - w_x))`` (unbiased; the mean of the estimate does not move)."""
    return -(gsq * (w_a - w_x)).mean()


def optimal_lambda_disjoint(f_x: float, f_a: float) -> float:
    """``argmin_λ F_x/(1-λ) + F_a/λ = √F_a / (√F_a + √F_x)``: the variance-optimal λ for disjoint components."""
    if f_x < 0 or f_a < 0 or f_x + f_a <= 0:
        raise ValueError(f"second moments must be >= 0 and not both 0, got F_x={f_x}, F_a={f_a}.")
    return math.sqrt(f_a) / (math.sqrt(f_a) + math.sqrt(f_x))


def lambda_schedule(lam0: float, lam_end: float | None, step: int, total: int) -> float:
    """A fixed schedule: ``lam0`` constant (``lam_end`` None), else geometric from ``lam0`` to ``lam_end``."""
    if lam_end is None or total <= 1:
        return lam0
    frac = min(1.0, step / (total - 1))
    return float(lam0 * (lam_end / lam0) ** frac)


# ----------------------------------------------------------------------------- gradients


def grad_norm(grads) -> torch.Tensor:
    """The global L2 norm of a list of gradients (``None`` entries skipped)."""
    sq = [g.float().square().sum() for g in grads if g is not None]
    return torch.stack(sq).sum().sqrt() if sq else torch.tensor(0.0)


def normalise_grads(grads, target: float | None, mode: str = "clip"):
    """Scale ``grads`` to global norm ``target``: ``clip`` only shrinks (the SISS reference), ``rescale``
    always sets the norm. ``target=None`` returns them unchanged. Returns ``(grads, norm_before)``."""
    norm = grad_norm(grads)
    if target is None:
        return grads, norm
    if mode not in ("clip", "rescale"):
        raise ValueError(f"forget_norm_mode must be clip or rescale, not {mode!r}.")
    scale = target / max(float(norm), 1e-12)
    if mode == "clip":
        scale = min(1.0, scale)
    return [None if g is None else g * scale for g in grads], norm
