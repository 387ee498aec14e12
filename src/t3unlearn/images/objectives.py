"""Per-sample training losses and SISS terms of each generator family, over a model *callable*.

A :class:`Family` turns images and labels into per-sample losses: ``plain_loss`` is the model's own
training loss (DDPM: ε-prediction MSE at a uniform random timestep; VAE: the negative ELBO), and
``siss_terms`` draws the shared mixture sample for a pair ``(x, a)`` and returns the importance-
weighted terms whose means :func:`~t3unlearn.images.losses.siss_objective` combines. Both apply the
label dropout the model was trained with (a label becomes ``NULL_LABEL`` with probability
``label_dropout``), so unlearning acts on unconditional generation too.

Every random draw comes from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from t3unlearn.images import losses as L
from t3unlearn.images.models import NULL_LABEL, ImageGenerator


def drop_labels(y: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Labels with each one replaced by ``NULL_LABEL`` with probability ``p``."""
    if p <= 0:
        return y
    return torch.where(torch.rand(y.shape, generator=generator) < p, torch.full_like(y, NULL_LABEL), y)


def _choose(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a`` where ``mask`` (per sample), else ``b``."""
    return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)


# ----------------------------------------------------------------------------- DDPM


def ddpm_plain_loss(predict: Callable, alphas_cumprod: torch.Tensor, x0: torch.Tensor, y: torch.Tensor,
                    generator: torch.Generator) -> torch.Tensor:
    """``||ε_θ(γ_t x0 + σ_t ε, t, y) - ε||²`` per sample (per pixel), ``t ~ U{0..T-1}``, ``ε ~ N(0, I)``."""
    T = alphas_cumprod.numel()
    t = torch.randint(0, T, (x0.shape[0],), generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    ab = alphas_cumprod[t].view(-1, 1, 1, 1)
    m = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    return L.noise_mse(predict(m, t, y), eps)


def ddpm_siss_pair(predict: Callable, alphas_cumprod: torch.Tensor, x0: torch.Tensor, yx: torch.Tensor,
                   a0: torch.Tensor, ya: torch.Tensor, lam, generator: torch.Generator) -> dict:
    """One SISS draw for pairs ``(x0_i, a0_i)``: the same ``t`` and ``ε`` for both, ``m`` noised from ``a``
    with probability λ (else from ``x``), the per-sample losses against each sample's implied noise,
    ``log q(m|x)``, ``log q(m|a)`` and the log importance weights."""
    B = x0.shape[0]
    T = alphas_cumprod.numel()
    t = torch.randint(0, T, (B,), generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    lam_value = float(torch.as_tensor(lam).detach())
    from_a = torch.rand(B, generator=generator) < lam_value
    ab = alphas_cumprod[t]
    gamma, sigma = ab.sqrt(), (1 - ab).sqrt()
    g4, s4 = gamma.view(-1, 1, 1, 1), sigma.view(-1, 1, 1, 1)
    m = g4 * _choose(from_a, a0, x0) + s4 * eps
    eps_x = (m - g4 * x0) / s4
    eps_a = (m - g4 * a0) / s4
    pred = predict(torch.cat([m, m]), torch.cat([t, t]), torch.cat([yx, ya]))
    pred_x, pred_a = pred[:B], pred[B:]
    log_q_x = L.ddpm_log_q(m, x0, gamma, sigma)
    log_q_a = L.ddpm_log_q(m, a0, gamma, sigma)
    log_w_x, log_w_a = L.siss_log_weights(log_q_x, log_q_a, lam)
    loss_x, loss_a = L.noise_mse(pred_x, eps_x), L.noise_mse(pred_a, eps_a)
    D = m[0].numel()
    return {
        "loss_x": loss_x,
        "loss_a": loss_a,
        # ||∂l/∂ε_θ||² per sample: l = ||ε_θ - ε||²/D, so the gradient is 2(ε_θ - ε)/D and its squared norm 4l/D
        "gsq_x": 4 * loss_x.detach() / D,
        "gsq_a": 4 * loss_a.detach() / D,
        "log_w_x": log_w_x,
        "log_w_a": log_w_a,
        "from_a": from_a,
        "t": t,
    }


# ----------------------------------------------------------------------------- VAE


def vae_parts(vae, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(reconstruction NLL with one z ~ q(z|x,y), KL(q(z|x,y) || p(z)))`` per sample."""
    mu, logvar = vae.encode(x, y)
    z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=generator)
    return L.bernoulli_nll(vae.decode(z, y), x), L.gaussian_kl_std(mu, logvar)


def vae_plain_loss(vae, x, y, generator) -> torch.Tensor:
    """The negative ELBO per sample (nats)."""
    return L.neg_elbo(*vae_parts(vae, x, y, generator))


def vae_siss_pair(vae, x, yx, a, ya, lam, generator) -> dict:
    """SISS for a VAE: the shared random variable is the latent. ``z`` is drawn from
    ``(1-λ) q(z|x,yx) + λ q(z|a,ya)`` (reparameterised within the chosen component, one shared
    ``ξ ~ N(0, I)``); the reconstruction terms are importance weighted, the KL terms (exact, no
    sampling) are not, so ``E[w_x rec_x(z)] + KL_x = -ELBO(x)`` (likewise for ``a``)."""
    B = x.shape[0]
    mu, logvar = vae.encode(torch.cat([x, a]), torch.cat([yx, ya]))
    mu_x, mu_a, lv_x, lv_a = mu[:B], mu[B:], logvar[:B], logvar[B:]
    xi = torch.randn(mu_x.shape, generator=generator)
    lam_value = float(torch.as_tensor(lam).detach())
    from_a = torch.rand(B, generator=generator) < lam_value
    z = _choose(from_a, mu_a + (0.5 * lv_a).exp() * xi, mu_x + (0.5 * lv_x).exp() * xi)
    log_q_x = L.gaussian_log_prob(z, mu_x, lv_x)
    log_q_a = L.gaussian_log_prob(z, mu_a, lv_a)
    log_w_x, log_w_a = L.siss_log_weights(log_q_x, log_q_a, lam)
    logits = vae.decode(torch.cat([z, z]), torch.cat([yx, ya]))
    probs = torch.sigmoid(logits.detach().float())
    return {
        # ||∂ rec / ∂ logits||² per sample (Bernoulli NLL: the gradient is sigmoid(logits) - x)
        "gsq_x": (probs[:B] - x).square().flatten(1).sum(1),
        "gsq_a": (probs[B:] - a).square().flatten(1).sum(1),
        "rec_x": L.bernoulli_nll(logits[:B], x),
        "rec_a": L.bernoulli_nll(logits[B:], a),
        "kl_x": L.gaussian_kl_std(mu_x, lv_x),
        "kl_a": L.gaussian_kl_std(mu_a, lv_a),
        "log_w_x": log_w_x,
        "log_w_a": log_w_a,
        "from_a": from_a,
    }


# ----------------------------------------------------------------------------- the family adapter


@dataclass
class Family:
    """What a method needs from a generator: per-sample plain losses and weighted SISS terms.

    Images come in [0, 1]; the DDPM works in [-1, 1].
    """

    gen: ImageGenerator
    label_dropout: float = 0.1

    @property
    def name(self) -> str:
        return self.gen.family

    @property
    def model(self) -> Any:
        return self.gen.model

    def _predict(self, m, t, y):
        return self.gen.model(m, t, class_labels=y).sample

    def plain_loss(self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        y = drop_labels(y, self.label_dropout, g)
        if self.name == "ddpm":
            return ddpm_plain_loss(self._predict, self.gen.scheduler.alphas_cumprod, 2 * x - 1, y, g)
        return vae_plain_loss(self.gen.model, x, y, g)

    def siss_terms(self, x, yx, a, ya, lam, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """``(term_x, term_a, info)``: importance-weighted per-sample terms for ``siss_objective``."""
        yx = drop_labels(yx, self.label_dropout, g)
        ya = drop_labels(ya, self.label_dropout, g)
        if self.name == "ddpm":
            d = ddpm_siss_pair(self._predict, self.gen.scheduler.alphas_cumprod, 2 * x - 1, yx, 2 * a - 1, ya, lam, g)
            wx, wa = d["log_w_x"].exp(), d["log_w_a"].exp()
            return wx * d["loss_x"], wa * d["loss_a"], {"w_x": wx, "w_a": wa, "loss_x": d["loss_x"], "loss_a": d["loss_a"],
                                                         "gsq_x": d["gsq_x"], "gsq_a": d["gsq_a"]}
        d = vae_siss_pair(self.gen.model, x, yx, a, ya, lam, g)
        wx, wa = d["log_w_x"].exp(), d["log_w_a"].exp()
        return (wx * d["rec_x"] + d["kl_x"], wa * d["rec_a"] + d["kl_a"],
                {"w_x": wx, "w_a": wa, "loss_x": d["rec_x"] + d["kl_x"], "loss_a": d["rec_a"] + d["kl_a"],
                 "gsq_x": d["gsq_x"], "gsq_a": d["gsq_a"]})


# --------------------------------------------------------------------------- what a method's step returns


@dataclass
class Context:
    """What a method sees besides the batch."""

    family: Family
    params: dict
    n: int  # |X|, the full training set
    k: int  # |A|, the forget set
    generator: torch.Generator
    step: int = 0
    total_steps: int = 1
    forget_labels: tuple = ()  # the labels the forget set carries
    state: dict = field(default_factory=dict)  # per-run state: last step's statistics, the inference network


@dataclass
class Terms:
    """A step's objective: minimise ``descent``, maximise ``ascent`` (either may be None).

    ``aux``: an objective for the method's own parameters (``state["aux_params"]``), or None; a callable
    ``aux(norm)`` is called with ``{"forget_norm": the fixed forget-gradient norm or None, "forget_scale": the factor
    the trainer applied this step}``; it may add to ``logs``.
    ``stats``: detached context statistics (``retain_loss``, ``forget_loss``) for the next step.
    ``forget_weight``: ``f(g_descent, g_ascent) -> s``, the factor on the ascent gradient in place of the
    forget-norm rule (EraseDiff's weight), or None.
    """

    descent: torch.Tensor | None
    ascent: torch.Tensor | None
    aux: torch.Tensor | Callable | None = None
    logs: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    forget_weight: Callable | None = None
