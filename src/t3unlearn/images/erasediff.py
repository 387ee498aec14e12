"""EraseDiff (Wu et al., 2024, "EraseDiff: Erasing Data Influence in Diffusion Models") for the class-conditional DDPM.

EraseDiff keeps the model's denoising loss on the retain data, ``F(θ) = E ||ε_θ(x_t, t, y) - ε||²`` over
``X \\ A``, while it drives the forget data's denoising towards *uniform* noise: at a forget image ``a`` noised
as usual (``a_t = γ_t a + σ_t ε``, ``ε ~ N(0, I)``), the target is ``u ~ U[0, 1)`` per pixel, not ``ε``,

    f(θ) = E_{a, t, ε, u} ||ε_θ(a_t, t, y_a) - u||²,

so the model stops denoising the forget images towards themselves. The two are combined as a constrained
(bi-level) problem, min F subject to f being minimised, by a first-order rule on the two gradients
``g_F = ∇F`` and ``g_f = ∇f``: the step is ``g_F + φ g_f`` with

    φ = max(η - <g_F, g_f> / ||g_f||², 0),

the smallest weight at which the combined step still decreases ``f`` at rate ``η ||g_f||²``
(``<g_F + φ g_f, g_f> >= η ||g_f||²``); ``φ = 0`` when the retain gradient alone already decreases ``f`` that
fast. This is how SISS's public code (Alberti et al., ICLR 2025) runs EraseDiff as a baseline: ``η = 10⁻³``,
the gradient of ``f(θ)`` itself in place of the paper's ``f(θ) - f(θ*)`` (whose ``θ*`` the paper approximates
by an inner loop of steps on ``f``), the total gradient then clipped to norm 1.

In the package's trainer (:func:`t3unlearn.images.trainer.unlearn`) the method returns ``descent = F`` and
``ascent = -f`` (ascending ``-f`` descends ``f``), and a ``forget_weight`` that gives the factor on the ascent
gradient in place of the forget-norm rule: with ``g_asc = -g_f`` the step ``g_F - s g_asc`` is EraseDiff's
when ``s = φ`` (:func:`erasediff_weight`). DDPM only: the uniform-noise target is a diffusion model's.
"""

from __future__ import annotations

import torch

from t3unlearn.errors import T3Error
from t3unlearn.images import losses as L
from t3unlearn.images.objectives import Terms, drop_labels


def uniform_target_loss(predict, alphas_cumprod: torch.Tensor, x0: torch.Tensor, y: torch.Tensor,
                        generator: torch.Generator) -> torch.Tensor:
    """EraseDiff's forget loss per sample: ``||ε_θ(γ_t x0 + σ_t ε, t, y) - u||²`` (per pixel), ``t ~ U{0..T-1}``,
    ``ε ~ N(0, I)``, ``u ~ U[0, 1)`` (``x0`` in [-1, 1])."""
    T = alphas_cumprod.numel()
    t = torch.randint(0, T, (x0.shape[0],), generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    u = torch.rand(x0.shape, generator=generator)
    ab = alphas_cumprod[t].view(-1, 1, 1, 1)
    return L.noise_mse(predict(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, t, y), u)


def _dot(a, b) -> float:
    return float(sum((x.float() * y.float()).sum() for x, y in zip(a, b) if x is not None and y is not None))


def erasediff_weight(g_retain, g_ascent, eta: float) -> float:
    """The factor ``s`` on the ascent gradient ``g_ascent = -∇f`` such that ``g_retain - s g_ascent`` is EraseDiff's
    step ``g_F + φ ∇f``, ``φ = max(η - <g_F, ∇f> / ||∇f||², 0)``; 0 when the forget gradient vanishes."""
    sq = _dot(g_ascent, g_ascent)
    if sq <= 0:
        return 0.0
    if g_retain is None:
        return max(float(eta), 0.0)
    return max(float(eta) + _dot(g_retain, g_ascent) / sq, 0.0)


def erasediff_terms(ctx, batch: dict):
    """One EraseDiff step: ``descent`` the retain batch's denoising loss, ``ascent`` minus the forget batch's
    uniform-target loss, and the weight rule (:func:`erasediff_weight`, ``eta`` from the method's params)."""
    fam = ctx.family
    if fam.name != "ddpm":
        raise T3Error(f"EraseDiff needs a DDPM (its forget target is uniform noise for a denoiser), not a {fam.name}.")
    x, y = batch["retain"]
    a, ya = batch["forget"]
    retain = fam.plain_loss(x, y, ctx.generator).mean()
    ya = drop_labels(ya, fam.label_dropout, ctx.generator)
    forget = uniform_target_loss(fam._predict, fam.gen.scheduler.alphas_cumprod, 2 * a - 1, ya, ctx.generator).mean()
    eta = float(ctx.params["eta"])
    logs = {"descent": float(retain.detach()), "retain_loss": float(retain.detach()),
            "forget_uniform_loss": float(forget.detach())}

    def weight(g_desc, g_asc) -> float:
        phi = erasediff_weight(g_desc, g_asc, eta)
        logs["phi"] = phi
        return phi

    return Terms(retain, -forget, logs=logs, stats={"retain_loss": logs["retain_loss"]}, forget_weight=weight)
