"""The image unlearning methods: each one small function from a batch to a descent / ascent pair.

A :class:`Method` says which data pools it draws from (``retain`` = X \\ A, ``forget`` = A,
``all`` = X), its default settings, and how to turn a batch into :class:`Terms` using the pure
functions of :mod:`t3unlearn.images.losses` through the generator's
:class:`~t3unlearn.images.objectives.Family`. The one trainer
(:func:`t3unlearn.images.trainer.unlearn`) does everything else: gradients, forget-gradient
normalisation, optimisers, logging. The same methods serve both families (DDPM and VAE): the
family decides what "the loss of one image" and "the shared mixture sample" are.

- ``naive``: naive deletion, fine-tune on the retain data;
- ``neggrad``: gradient ascent on the forget data;
- ``neggrad_plus``: descent on retain plus ascent on forget (``alpha``);
- ``siss``: SISS with a static λ, the superfactor c and forget-gradient normalisation;
- ``adaptive_siss``: Adaptive-λ SISS: an inference network maps the step's own context, measured now on
  its retain and forget batches (:data:`FEATURES`: the log ratios of the forget to the retain loss and
  gradient norm, both losses relative to step 0, progress) to a logit-normal posterior ``q_φ(λ)``; λ is
  sampled by reparameterisation, the model takes SISS's step at λ, and ``φ`` minimises the SISS
  estimator's log second moment plus ``β·KL(q_φ(λ) || prior)`` (:func:`_adaptive_siss`).

- ``sfd`` / ``sfd_multi``: Score Forgetting Distillation (:mod:`t3unlearn.images.sfd`): a one-step
  generator distilled from the frozen DDPM with the forget label(s) given the safe label's score;
  data-free, DDPM only, ``style="distill"``.
- ``erasediff``: EraseDiff (:mod:`t3unlearn.images.erasediff`): retain denoising plus the forget images'
  denoising pushed to uniform-noise targets, combined by EraseDiff's first-order bi-level weight; DDPM only.
- ``sfd_siss``: the hybrid: SISS's direct control on the forget samples plus SFD's data-free
  score-forgetting term (the fine-tuned DDPM's score for the forget labels pulled to the frozen teacher's
  score for the safe label, at the teacher's own noised samples of those labels), its weight fading as
  the forget loss rises (``adaptive``); DDPM only.
- ``rl_siss``: SISS whose λ is chosen by a policy (the experimental RL formulation): every ``interval``
  steps a Gaussian policy on logit λ reads the model's state (probe losses on a fixed retain and forget
  batch, gradient norms) and is updated by REINFORCE on the reward "forget-loss growth minus ``beta`` x
  retain-loss growth" over the interval.
- ``t3`` / ``cg``: Temper-Then-Tilt (:mod:`t3unlearn.images.t3`): the generator stays frozen; a
  classifier of retain vs forget data guides its sampler towards ``p^(1/T) f^s``. ``cg`` is the same
  with ``T = 1`` (plain classifier guidance). They are ``style="guidance"``: no trainer step, their
  ``defaults`` are the guidance settings.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from t3unlearn.errors import T3Error
from t3unlearn.images import losses as L
from t3unlearn.images.guidance import guidance_defaults, renamed_settings
from t3unlearn.images.objectives import Context, Family, Terms  # noqa: F401 - Context, Terms re-exported
from t3unlearn.methods.registry import Method, get, register
from t3unlearn.settings import reject_unknown


# ----------------------------------------------------------------------------- the methods

_NORM_DEFAULTS = {"forget_norm": None, "forget_norm_ratio": None, "forget_norm_mode": "clip"}


def _naive(ctx: Context, batch: dict) -> Terms:
    x, y = batch["retain"]
    loss = ctx.family.plain_loss(x, y, ctx.generator)
    d, _ = L.naive_deletion_loss(loss)
    return Terms(d, None, logs={"retain_loss": float(d.detach())})


def _neggrad(ctx: Context, batch: dict) -> Terms:
    a, ya = batch["forget"]
    loss = ctx.family.plain_loss(a, ya, ctx.generator)
    _, asc = L.neggrad_loss(loss)
    return Terms(None, asc, logs={"forget_loss": float(asc.detach())})


def _neggrad_plus(ctx: Context, batch: dict) -> Terms:
    x, y = batch["retain"]
    a, ya = batch["forget"]
    lr_ = ctx.family.plain_loss(x, y, ctx.generator)
    lf = ctx.family.plain_loss(a, ya, ctx.generator)
    d, asc = L.neggrad_plus_loss(lr_, lf, float(ctx.params["alpha"]))
    return Terms(d, asc, logs={"retain_loss": float(d.detach()), "forget_loss": float(lf.mean().detach())})


def _siss_with(ctx: Context, batch: dict, lam, info: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    x, yx = batch["all"]
    a, ya = batch["forget"]
    term_x, term_a, extra = ctx.family.siss_terms(x, yx, a, ya, lam, ctx.generator)
    if info is not None:
        info.update(extra)
    d, asc = L.siss_objective(term_x, term_a, ctx.n, ctx.k, float(ctx.params["superfactor"]))
    stats = {"retain_loss": float(term_x.mean().detach()), "forget_loss": float(term_a.mean().detach())}
    return d, asc, stats


def _siss(ctx: Context, batch: dict) -> Terms:
    p = ctx.params
    lam = L.lambda_schedule(float(p["lambda"]), None if p["lambda_end"] is None else float(p["lambda_end"]),
                            ctx.step, ctx.total_steps)
    d, asc, stats = _siss_with(ctx, batch, lam)
    return Terms(d, asc, logs={"descent": float(d.detach()), "ascent": float(asc.detach()), "lambda": lam, **stats},
                 stats=stats)


def _siss_no_is(ctx: Context, batch: dict) -> Terms:
    """SISS's objective without importance sampling: each image noised on its own (independent t, ε), the
    same n/(n-k) and c·k/(n-k) factors; a baseline that says what the shared mixture sample buys."""
    x, yx = batch["all"]
    a, ya = batch["forget"]
    lx, la = ctx.family.plain_loss(x, yx, ctx.generator), ctx.family.plain_loss(a, ya, ctx.generator)
    d, asc = L.siss_objective(lx, la, ctx.n, ctx.k, float(ctx.params["superfactor"]))
    stats = {"retain_loss": float(lx.mean().detach()), "forget_loss": float(la.mean().detach())}
    return Terms(d, asc, logs={"descent": float(d.detach()), "ascent": float(asc.detach()), **stats}, stats=stats)


class LambdaInferenceNet(nn.Module):
    """MLP: ``n_in`` context features -> ``(mu, log_sigma)`` of the logit-normal posterior over λ.

    The last layer starts at zero, so at the first step the posterior equals the prior.
    """

    def __init__(self, hidden: int = 32, mu0: float = 0.0, log_sigma0: float = 0.0, n_in: int = 4):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.out = nn.Linear(hidden, 2)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.mu0, self.log_sigma0 = mu0, log_sigma0

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        o = self.out(self.body(feats))
        return self.mu0 + o[..., 0], (self.log_sigma0 + o[..., 1]).clamp(-5.0, 2.0)


FEATURES = ("log forget/retain loss", "log forget/retain grad norm", "log retain loss / step 0",
            "log forget loss / step 0", "progress")


def _safe_log(v: float) -> float:
    return math.log(max(float(v), 1e-12))


def context_features(now: dict, first: dict, step: int, total: int) -> torch.Tensor:
    """The inference network's input at this step: the forget-to-retain ratios of the losses and of the gradient
    norms (logs), the losses relative to step 0 (logs), and the progress ``step / total``."""
    return torch.tensor([
        _safe_log(now["forget_loss"]) - _safe_log(now["retain_loss"]),
        _safe_log(now["grad_forget"]) - _safe_log(now["grad_retain"]),
        _safe_log(now["retain_loss"]) - _safe_log(first["retain_loss"]),
        _safe_log(now["forget_loss"]) - _safe_log(first["forget_loss"]),
        step / max(1, total),
    ], dtype=torch.float32)


def measure_context(ctx: Context, batch: dict) -> dict:
    """The retain and forget losses (the model's own loss, mean over the step's ``retain`` and ``forget``
    batches) and the norms of their gradients in the model's weights, at the current weights: what λ is chosen
    from, with no lag. Draws its noise from its own stream, so the SISS draws are not shifted."""
    fam, g = ctx.family, ctx.state["g_ctx"]
    weights = [q for q in fam.model.parameters() if q.requires_grad]
    out = {}
    for name, key in (("retain", "retain"), ("forget", "forget")):
        x, y = batch[key]
        loss = fam.plain_loss(x, y, g).mean()
        out[f"{name}_loss"] = float(loss.detach())
        if ctx.params["feature_grads"]:
            out[f"grad_{name}"] = float(L.grad_norm(torch.autograd.grad(loss, weights, allow_unused=True)))
        else:
            out[f"grad_{name}"] = 1.0
    return out


def _adaptive_setup(ctx: Context) -> None:
    p = ctx.params
    lam0 = float(p["prior_lambda"])
    if not 0 < lam0 < 1:
        raise T3Error(f"prior_lambda must lie in (0, 1), not {lam0}.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(ctx.generator.initial_seed()) + 17)
        net = LambdaInferenceNet(int(p["hidden"]), math.log(lam0 / (1 - lam0)), math.log(float(p["prior_sigma"])),
                                 n_in=len(FEATURES))
    ctx.state.update(net=net, aux_params=list(net.parameters()), aux_lr=float(p["infer_lr"]),
                     g_ctx=torch.Generator().manual_seed(int(ctx.generator.initial_seed()) + 41))


def _expected_forget_scale(norm: dict, mean_forget_grad: float, p: dict) -> float:
    """The factor the trainer's normalisation puts on the forget gradient *in expectation*: the fixed norm over the
    norm of the forget term's expected gradient, ``C·||∇ mean forget loss||`` measured now (``rescale``; ``clip``:
    at most 1). The batch's own factor is not used: it adapts to the very draws whose spread λ sets (a batch
    with one forget draw at small λ has a large forget gradient and a small factor), which would hide λ's effect."""
    target = norm.get("forget_norm")
    if target is None:
        return 1.0
    if not p["feature_grads"] or mean_forget_grad <= 0:
        return float(norm.get("forget_scale", 1.0))
    scale = float(target) / mean_forget_grad
    return min(1.0, scale) if p["forget_norm_mode"] == "clip" else scale


def _best_lambda_on_grid(gsq, w_x, w_a) -> float:
    """The batch's own variance-optimal λ: argmin of the reweighted second moment over a grid (a diagnostic)."""
    grid = torch.linspace(0.001, 0.999, 999)
    S = (gsq[None, :] / ((1 - grid[:, None]) * w_x[None, :] + grid[:, None] * w_a[None, :]).clamp_min(1e-12)).mean(1)
    return float(grid[int(S.argmin())])


def _adaptive_siss(ctx: Context, batch: dict) -> Terms:
    """Adaptive-λ: λ ~ q_φ(λ | context now); the model takes the SISS step at λ (unbiased for every λ); φ
    minimises log S(λ) (the estimator's second moment, see losses.mixture_second_moment) + β·KL(q_φ || prior)."""
    p, st = ctx.params, ctx.state
    net: LambdaInferenceNet = st["net"]
    now = measure_context(ctx, batch)
    st.setdefault("first_context", now)
    feats = context_features(now, st["first_context"], ctx.step, ctx.total_steps)
    mu, log_sigma = net(feats)
    xi = torch.randn((), generator=ctx.generator)
    lam = L.logit_normal_sample(mu, log_sigma, xi)
    info: dict = {}
    d, asc, stats = _siss_with(ctx, batch, float(lam.detach()), info)
    kl = L.logit_normal_kl(mu, log_sigma, net.mu0, math.exp(net.log_sigma0))
    A, C = ctx.n / (ctx.n - ctx.k), float(p["superfactor"]) * ctx.k / (ctx.n - ctx.k)
    w_x, w_a = info["w_x"].detach(), info["w_a"].detach()

    def gsq(scale: float) -> torch.Tensor:
        # the squared per-pair estimate of the step's gradient (w.r.t. the model's outputs), the forget part scaled
        # as the trainer scales the forget gradient; the two parts sit on different outputs, so their norms add
        return (A * w_x) ** 2 * info["gsq_x"] + (C * scale * w_a) ** 2 * info["gsq_a"]

    logs = {"descent": float(d.detach()), "ascent": float(asc.detach()), "lambda": float(lam.detach()),
            "lambda_median": float(torch.sigmoid(mu).detach()), "mu": float(mu.detach()),
            "sigma": float(log_sigma.exp().detach()), "kl": float(kl.detach()),
            **{f"ctx_{k}": v for k, v in now.items()}, **stats}

    def aux(norm: dict) -> torch.Tensor:
        scale = _expected_forget_scale(norm, C * now["grad_forget"], p)
        G = gsq(scale)
        logs.update(forget_scale_expected=scale, lambda_batch_opt=_best_lambda_on_grid(G, w_x, w_a),
                    dlogS_dlambda=float(L.mixture_second_moment_grad(G, w_x, w_a) / G.mean().clamp_min(1e-30)))
        return torch.log(L.mixture_second_moment(G, w_x, w_a, lam)) + float(p["kl_weight"]) * kl

    return Terms(d, asc, aux=aux, logs=logs, stats=stats)


def _erasediff(ctx: Context, batch: dict) -> Terms:
    from t3unlearn.images.erasediff import erasediff_terms

    return erasediff_terms(ctx, batch)


# ----------------------------------------------------------------------------- the hybrid SFD + SISS


def score_forgetting_loss(predict, teacher, alphas_cumprod, x0, labels, safe_label: int, t_lo: int, t_hi: int,
                          generator: torch.Generator) -> torch.Tensor:
    """SFD's score-forgetting term per sample: ``||ε_θ(x_t, t, y) - ε_teacher(x_t, t, safe)||²`` (per pixel)
    at ``x_t = γ_t x0 + σ_t ε``, ``t ~ U{t_lo..t_hi-1}``; the teacher's side is a constant."""
    B = x0.shape[0]
    t = torch.randint(t_lo, t_hi, (B,), generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    ab = alphas_cumprod[t].view(-1, 1, 1, 1)
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    with torch.no_grad():
        target = teacher(xt, t, class_labels=torch.full_like(labels, safe_label)).sample
    return L.noise_mse(predict(xt, t, labels), target)


def _hybrid_setup(ctx: Context) -> None:
    from t3unlearn.images.sampling import sample_ddpm

    p = ctx.params
    if ctx.family.name != "ddpm":
        raise T3Error("the SFD + SISS hybrid needs a DDPM (its SFD term is a score); give it a ddpm model.")
    labels = sorted(int(y) for y in (p["forget_labels"] or ctx.forget_labels))
    safe = int(p["safe_label"])
    if not labels or safe in labels:
        raise T3Error(f"the hybrid needs forget labels and a safe label not among them (got {labels}, safe {safe}).")
    if not 0 <= float(p["t_min"]) < float(p["t_max"]) <= 1:
        raise T3Error("the hybrid needs 0 <= t_min < t_max <= 1 (fractions of the DDPM's steps).")
    teacher = copy.deepcopy(ctx.family.model).eval()
    for q in teacher.parameters():
        q.requires_grad_(False)
    # the teacher's own samples of the forget labels: data-free (no training image is read by this term)
    n = int(p["pool_size"])
    g = torch.Generator().manual_seed(int(ctx.generator.initial_seed()) + 29)
    pool_y = torch.tensor(labels).repeat_interleave((n + len(labels) - 1) // len(labels))[:n]
    pool = sample_ddpm(teacher, ctx.family.gen.scheduler, pool_y, generator=g, steps=int(p["pool_steps"])) * 2 - 1
    T = ctx.family.gen.scheduler.alphas_cumprod.numel()
    t_lo = int(float(p["t_min"]) * T)
    t_hi = max(int(float(p["t_max"]) * T), t_lo + 1)
    # the term's own random stream, so SISS's draws are those of plain SISS with the same seed
    g_sfd = torch.Generator().manual_seed(int(ctx.generator.initial_seed()) + 37)
    ctx.state.update(teacher=teacher, pool=pool, pool_y=pool_y, safe=safe, g_sfd=g_sfd, t_range=(t_lo, t_hi))


def _sfd_siss(ctx: Context, batch: dict) -> Terms:
    p, st = ctx.params, ctx.state
    d, asc, stats = _siss_with(ctx, batch, float(p["lambda"]))
    idx = torch.randint(0, len(st["pool"]), (len(batch["forget"][0]),), generator=st["g_sfd"])
    sf = score_forgetting_loss(ctx.family._predict, st["teacher"], ctx.family.gen.scheduler.alphas_cumprod,
                               st["pool"][idx], st["pool_y"][idx], st["safe"], *st["t_range"], st["g_sfd"]).mean()
    # adaptive: the weight follows how much of the forget set is still remembered, ℓ_f(0) / EMA ℓ_f(t) (<= 1)
    f = stats["forget_loss"]
    st["ema_f"] = f if "ema_f" not in st else 0.9 * st["ema_f"] + 0.1 * f
    st.setdefault("f0", f)
    w = float(p["sfd_weight"]) * (min(1.0, st["f0"] / max(st["ema_f"], 1e-12)) if p["adaptive"] else 1.0)
    return Terms(d + w * sf, asc, logs={"descent": float(d.detach()), "ascent": float(asc.detach()),
                                        "sfd": float(sf.detach()), "sfd_weight": w, **stats}, stats=stats)


# ----------------------------------------------------------------------------- the RL formulation


def _rl_setup(ctx: Context) -> None:
    p = ctx.params
    lam0 = float(p["prior_lambda"])
    if not 0 < lam0 < 1 or int(p["interval"]) < 1:
        raise T3Error(f"rl_siss needs 0 < prior_lambda < 1 and interval >= 1 (got {lam0}, {p['interval']}).")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(ctx.generator.initial_seed()) + 31)
        net = LambdaInferenceNet(int(p["hidden"]), math.log(lam0 / (1 - lam0)), math.log(float(p["prior_sigma"])))
    ctx.state.update(net=net, aux_params=list(net.parameters()), aux_lr=float(p["policy_lr"]))


def _probe_losses(ctx: Context) -> tuple[float, float]:
    """Mean plain loss on the fixed probe batches, with fixed noise (so differences are the model's)."""
    out = []
    with torch.no_grad():
        for x, y in (ctx.state["probe_retain"], ctx.state["probe_forget"]):
            out.append(float(ctx.family.plain_loss(x, y, torch.Generator().manual_seed(1234)).mean()))
    return out[0], out[1]


def policy_log_prob(mu: torch.Tensor, log_sigma: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``log N(u; mu, sigma²)``: the policy's density of the logit ``u`` of λ."""
    return -0.5 * ((u - mu) / log_sigma.exp()) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)


def _rl_siss(ctx: Context, batch: dict) -> Terms:
    p, st = ctx.params, ctx.state
    net: LambdaInferenceNet = st["net"]
    aux, logs = None, {}
    if ctx.step % int(p["interval"]) == 0:  # a decision: reward the last one, choose the next λ
        if "probe_retain" not in st:
            st["probe_retain"], st["probe_forget"] = batch["retain"], batch["forget"]
        r_loss, f_loss = _probe_losses(ctx)
        st.setdefault("probe0", (r_loss, f_loss))
        if "action" in st:
            (r_prev, f_prev), feats, u = st["action"]
            reward = (math.log(max(f_loss, 1e-12) / max(f_prev, 1e-12))
                      - float(p["beta"]) * math.log(max(r_loss, 1e-12) / max(r_prev, 1e-12)))
            baseline = st.get("baseline", reward)
            mu, log_sigma = net(feats)
            aux = -(reward - baseline) * policy_log_prob(mu, log_sigma, u)
            st["baseline"] = 0.8 * baseline + 0.2 * reward
            logs["reward"] = reward
        r0, f0 = st["probe0"]
        last, first = st.get("last_stats"), st.get("first_stats")
        grads = [math.log(max(last[k], 1e-12) / max(first[k], 1e-12)) for k in ("grad_retain", "grad_forget")] \
            if last and first else [0.0, 0.0]
        feats = torch.tensor([math.log(max(r_loss, 1e-12) / r0), math.log(max(f_loss, 1e-12) / f0), *grads])
        with torch.no_grad():
            mu, log_sigma = net(feats)
            u = mu + log_sigma.exp() * torch.randn((), generator=ctx.generator)
        st["action"] = ((r_loss, f_loss), feats, u)
        st["lambda"] = float(torch.sigmoid(u))
        logs.update(probe_retain=r_loss, probe_forget=f_loss, mu=float(mu), sigma=float(log_sigma.exp()))
    lam = st["lambda"]
    d, asc, stats = _siss_with(ctx, batch, lam)
    return Terms(d, asc, aux=aux, logs={"descent": float(d.detach()), "ascent": float(asc.detach()), "lambda": lam,
                                        **logs, **stats}, stats=stats)


METHODS: dict[str, Method] = {}


def _register(name: str, title: str, summary: str, defaults: dict, compute, pools: tuple = ("retain",), **kw) -> None:
    """An image method, in this module's table and in the one registry (:mod:`t3unlearn.methods`)."""
    METHODS[name] = register(Method(name, "image", summary, defaults, title=title, compute=compute, pools=pools, **kw),
                             replace=True)


_register("naive", "Naive deletion", "fine-tune on the retain data only", {}, _naive, ("retain",))
_register("neggrad", "NegGrad", "gradient ascent on the forget data", dict(_NORM_DEFAULTS), _neggrad, ("forget",))
_register("neggrad_plus", "NegGrad+", "descent on retain + alpha x ascent on forget",
          {"alpha": 1.0, **_NORM_DEFAULTS}, _neggrad_plus, ("retain", "forget"))
# the forget gradient is rescaled to one fixed norm every step (the SISS reference's rule), that norm 10 % of the
# first step's retain-gradient norm; forget_norm_mode=clip only shrinks it (this package's earlier default)
_SISS_DEFAULTS = {"lambda": 0.5, "superfactor": 1.0, "forget_norm": None, "forget_norm_ratio": 0.1,
                  "forget_norm_mode": "rescale"}
_register("siss", "SISS (static λ)", "importance-sampled naive deletion minus c x forget term, λ fixed",
          dict(_SISS_DEFAULTS) | {"lambda_end": None}, _siss, ("all", "forget"))
_register("siss_no_is", "SISS without importance sampling", "SISS's objective, each image noised on its own",
          {k: v for k, v in _SISS_DEFAULTS.items() if k != "lambda"}, _siss_no_is, ("all", "forget"))
_register(
    "adaptive_siss", "Adaptive-λ SISS", "SISS with λ ~ q_φ(λ | context now), φ minimising the estimator's variance",
    {k: v for k, v in _SISS_DEFAULTS.items() if k != "lambda"}
    | {"prior_lambda": 0.5, "prior_sigma": 0.5, "kl_weight": 1e-3, "hidden": 32, "infer_lr": 1e-2,
       "feature_grads": True},
    _adaptive_siss, ("all", "forget", "retain"), setup=_adaptive_setup)

# EraseDiff (t3unlearn.images.erasediff): η as in SISS's public code; DDPM only
_register("erasediff", "EraseDiff", "retain denoising + forget images pushed to uniform-noise targets, "
          "weighted by EraseDiff's first-order bi-level rule", {"eta": 1e-3}, _erasediff, ("retain", "forget"),
          families=("ddpm",))
_register(
    "sfd_siss", "Hybrid SFD + SISS", "SISS plus SFD's data-free score-forgetting term, weighted by forgetting progress",
    dict(_SISS_DEFAULTS) | {"forget_labels": None, "safe_label": 10, "sfd_weight": 0.1, "adaptive": True,
                            "t_min": 0.02, "t_max": 0.98, "pool_size": 256, "pool_steps": 20},
    _sfd_siss, ("all", "forget"), setup=_hybrid_setup, families=("ddpm",))
_register(
    "rl_siss", "RL-λ SISS (experimental)", "SISS with λ chosen by a REINFORCE policy on forgetting progress minus retain damage",
    {k: v for k, v in _SISS_DEFAULTS.items() if k != "lambda"}
    | {"prior_lambda": 0.5, "prior_sigma": 0.5, "hidden": 32, "policy_lr": 1e-2, "interval": 10, "beta": 1.0},
    _rl_siss, ("all", "forget", "retain"), setup=_rl_setup)

# T3's guidance settings: the one defaults table is t3unlearn.images.guidance (the VAE's differ there)
_register("t3", "T3 (temper, then tilt)", "frozen generator; a retain-vs-forget classifier guides p^(1/T) f^s",
          guidance_defaults("t3"), None, ("retain", "forget"), style="guidance")
_register("cg", "Classifier guidance (T = 1)", "the same classifier, no tempering",
          guidance_defaults("cg"), None, ("retain", "forget"), style="guidance")

# Score Forgetting Distillation: data-free, label-level (t3unlearn.images.sfd); DDPM only
_SFD_DEFAULTS = {"forget_labels": [1], "safe_label": 10, "t_star": 0.9, "t_min": 0.02, "t_max": 0.98,
                 "gradient": "sid", "alpha": 1.2}
_register("sfd", "SFD (forget label 1)", "distil a one-step generator; the forget label gets the safe label's score",
          dict(_SFD_DEFAULTS), None, (), style="distill", families=("ddpm",))
_register("sfd_multi", "SFD, multi-class (labels 1 and 7)", "SFD with two forget labels at once",
          {**_SFD_DEFAULTS, "forget_labels": [1, 7]}, None, (), style="distill", families=("ddpm",))
_register("sfd_multi_adaptive", "SFD, multi-class, adaptive weights (1 and 7)",
          "multi-class SFD, each forget label weighted by how far it still is from its target",
          {**_SFD_DEFAULTS, "forget_labels": [1, 7], "adaptive_weights": True, "weight_ema": 0.9}, None, (),
          style="distill", families=("ddpm",))

ALL_METHODS = tuple(METHODS)
# what `images compare` and `demo --images` run unless told otherwise: the SISS paper's comparison and T3.
# SFD forgets whole labels, a different question from the glyphs, and its distillation takes minutes per
# seed; the hybrid and RL-λ are variants of SISS measured in docs/images.md (add any with --methods)
DEFAULT_METHODS = ("naive", "neggrad", "neggrad_plus", "siss", "adaptive_siss", "cg", "t3")


def get_method(name: str | Method) -> Method:
    if isinstance(name, Method):
        return name
    key = str(name).strip().lower().replace("-", "_").replace("+", "_plus")
    key = {"neggradplus": "neggrad_plus", "adaptive": "adaptive_siss", "adaptive_lambda_siss": "adaptive_siss",
           "naive_deletion": "naive",
           "classifier_guidance": "cg", "temper_then_tilt": "t3"}.get(key, key)
    if key not in METHODS:  # the registry: a name spelled otherwise, or its one line with the closest name
        return get(name, "image", among=tuple(METHODS), what="image unlearning method")
    return METHODS[key]


# the numeric settings checked for every method that has them: (low, high, low included) or None for no bound
_RANGES = {"lambda": (0.0, 1.0, True), "lambda_end": (0.0, 1.0, False), "superfactor": (0.0, None, True),
           "alpha": (0.0, None, True), "eta": (0.0, None, True), "forget_norm": (0.0, None, True),
           "forget_norm_ratio": (0.0, None, True), "kl_weight": (0.0, None, True), "prior_sigma": (0.0, None, False),
           "infer_lr": (0.0, None, False), "policy_lr": (0.0, None, False), "sfd_weight": (0.0, None, True)}


def _check_numbers(method: Method, params: dict) -> None:
    """A T3Error naming the setting when a number is not a number or out of its range (before any work)."""
    for key, (lo, hi, lo_ok) in _RANGES.items():
        v = params.get(key)
        if v is None or key not in method.defaults or (key == "alpha" and method.style == "distill"):
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise T3Error(f"{method.title}: {key} must be a number, not {v!r}.")
        if (v < lo or (v == lo and not lo_ok)) or (hi is not None and v > hi):
            where = f"in [{lo:g}, {hi:g}]" if hi is not None else (f">= {lo:g}" if lo_ok else f"> {lo:g}")
            if key == "lambda_end":
                where = "in (0, 1] (the end of a geometric schedule from lambda)"
            raise T3Error(f"{method.title}: {key} must be {where}, not {v!r}.")
    for key in ("pool_size", "pool_steps", "hidden"):  # interval: rl_siss's setup
        v = params.get(key)
        if key in method.defaults and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise T3Error(f"{method.title}: {key} must be a whole number >= 1, not {v!r}.")
    if params.get("lambda_end") is not None and "lambda_end" in method.defaults and params.get("lambda") == 0:
        raise T3Error(f"{method.title}: lambda_end makes a geometric schedule from lambda, which must then be > 0, not 0.")


def resolve_params(method: Method, params: dict | None) -> dict:
    """The method's defaults updated with ``params``; unknown keys and numbers out of range are an error."""
    params = renamed_settings(dict(params or {}), method.defaults)
    reject_unknown(params, method.defaults, owner=method.title, error=T3Error)
    out = {**method.defaults, **params}
    _check_numbers(method, out)
    return out
