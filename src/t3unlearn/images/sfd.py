"""Score Forgetting Distillation (Chen et al., ICLR 2025) for the class-conditional DDPM.

Data-free: a one-step generator ``G(z, y)`` is distilled from the frozen DDPM (the teacher) while, for
every *forget label*, the teacher is asked for a *safe label*'s score instead, so the student learns
to draw the safe class where the forget class was asked for. No training image is read.

Three networks, all initialised from the teacher's UNet:

- the teacher ``ε_φ`` (frozen);
- the generator ``G``: one denoising step of its own UNet from pure noise at level ``t*``,
  ``G(z, y) = (z - σ_{t*} ε_G(z, t*, y)) / a_{t*}`` (x0-prediction form; at ``t* = 900`` of 1,000 the
  noised data is almost ``N(0, I)``);
- the *fake score* ``ε_ψ``: the score of the generator's own distribution, fitted on the fly by
  denoising its samples (:func:`fake_score_loss`).

Each step: noise a batch of generator samples to a random level ``t``, ``x_t = a_t x_g + σ_t ε``; the
teacher's and the fake score's x0-predictions there are ``f_φ`` (with the forget labels swapped for the
safe one) and ``f_ψ``. The generator minimises SiD's loss (Zhou et al., ICML 2024; SFD's generator loss,
Chen et al., ICLR 2025), per sample

    L = [(1 - α) ||f_φ - f_ψ||² + (f_φ - f_ψ)ᵀ (f_ψ - x_g)] / w,   w = mean |x_g - f_φ| (no gradient),

with the gradient through ``x_g`` *and* through ``f_φ(x_t)`` and ``f_ψ(x_t)`` (``x_t`` is a function of
``x_g``; the two networks' weights are not updated by it), ``α = 1.2`` (SiD's default)
(:func:`sid_generator_loss`). With ``f_φ``, ``f_ψ`` held constant the gradient is the DMD direction
``(f_ψ - f_φ) / w`` and the ``(1 - α)`` term has none; ``gradient="dmd"`` keeps that earlier form
(:func:`generator_loss`, the SFD tables made before issue #36).

**Multi-class** forgetting is the same with several forget labels at once (``forget_labels``),
each mapped to the safe label. With ``adaptive_weights`` each forget label's samples are weighted by
how far that label still is from its target: an EMA of its mean distribution-matching discrepancy
``|f_ψ - f_φ|``, divided by the mean over the forget labels (so the weights average 1 and the
total pull on forgetting is unchanged); a label that lags gets a larger share
(:func:`adaptive_label_weights`). Other labels keep weight 1.

On augmented digits the forget *glyphs* are a part of label 1, not a label of their own, so SFD can
only forget label 1 as a whole: its table rows show that trade (no glyphs, no ones).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass

import torch

from t3unlearn.errors import T3Error
from t3unlearn.images.models import NULL_LABEL, ImageGenerator
from t3unlearn.settings import TrainingSettings


@dataclass
class SFDConfig(TrainingSettings):
    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-5  # generator and fake score (Adam, betas (0, 0.999), as in SiD/DMD)
    t_star: float = 0.9  # the generator's one noise level, as a fraction of the DDPM's training steps
    t_min: float = 0.02  # distillation levels t ~ U[t_min, t_max) (fractions, likewise)
    t_max: float = 0.98
    forget_labels: tuple = (1,)
    safe_label: int = NULL_LABEL  # the teacher's label for a forget label (10: unconditional)
    gradient: str = "sid"  # sid: SiD's loss, gradient through the scores too; dmd: the earlier DMD form
    alpha: float = 1.2  # SiD's α (sid only)
    adaptive_weights: bool = False  # weight each forget label by its lag (multi-class)
    weight_ema: float = 0.9
    seed: int = 0

    def __post_init__(self):
        self.forget_labels = tuple(int(x) for x in self.forget_labels)
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0:
            raise T3Error("SFD needs steps >= 0, batch_size >= 1 and lr > 0.")
        if not 0 <= self.t_min < self.t_max <= 1 or not 0 < self.t_star < 1:
            raise T3Error(f"SFD needs 0 <= t_min < t_max <= 1 and 0 < t_star < 1 (fractions of the DDPM's steps; "
                          f"got {self.t_min}, {self.t_max}, {self.t_star}).")
        if not self.forget_labels or any(not 0 <= y < NULL_LABEL for y in self.forget_labels):
            raise T3Error(f"forget_labels must be digits 0-9, not {self.forget_labels}.")
        if self.gradient not in ("sid", "dmd"):
            raise T3Error(f"SFD's gradient must be sid (SiD's full gradient) or dmd (the earlier form), not {self.gradient!r}.")
        if not 0 <= self.weight_ema < 1:
            raise T3Error(f"weight_ema must lie in [0, 1), not {self.weight_ema}.")
        if self.safe_label in self.forget_labels or not 0 <= self.safe_label <= NULL_LABEL:
            raise T3Error(f"safe_label must be a digit not forgotten, or {NULL_LABEL} (unconditional).")

    def key(self) -> dict:
        """The settings that decide the result (the adaptive weighting's when it is on), for cache keys."""
        d = asdict(self)
        if self.gradient == "dmd":  # the earlier runs' keys: their cached units stay valid
            del d["gradient"], d["alpha"]
        if not self.adaptive_weights:
            del d["adaptive_weights"], d["weight_ema"]
        return d



def x0_prediction(eps_model, x_t, t, y, alphas_cumprod) -> torch.Tensor:
    """``(x_t - σ_t ε(x_t, t, y)) / a_t`` for an ε-prediction UNet."""
    ab = alphas_cumprod[t].view(-1, *([1] * (x_t.dim() - 1))).to(x_t.dtype)
    return (x_t - (1 - ab).sqrt() * eps_model(x_t, t, class_labels=y).sample) / ab.sqrt()


def target_labels(y: torch.Tensor, forget_labels, safe_label: int) -> torch.Tensor:
    """The labels the teacher is asked for: each forget label becomes the safe label."""
    forget = torch.as_tensor(sorted(forget_labels), dtype=y.dtype)
    return torch.where(torch.isin(y, forget), torch.full_like(y, safe_label), y)


def generator_loss(x_g: torch.Tensor, f_real: torch.Tensor, f_fake: torch.Tensor,
                   weights: torch.Tensor | None = None) -> torch.Tensor:
    """The distribution-matching loss whose gradient in ``x_g`` is ``(f_fake - f_real) / w`` per pixel
    (divided by the pixel count), ``w = mean |x_g - f_real|`` per sample; ``f_*`` are treated as constants.
    ``weights`` (per sample) scale each sample's gradient."""
    with torch.no_grad():
        w = (x_g - f_real).abs().flatten(1).mean(1).clamp_min(1e-3).view(-1, *([1] * (x_g.dim() - 1)))
        step = (f_fake - f_real) / w
    per = 0.5 * ((x_g - (x_g - step).detach()) ** 2).flatten(1).mean(1)
    return (per if weights is None else per * weights).mean()


def sid_generator_loss(x_g: torch.Tensor, f_real: torch.Tensor, f_fake: torch.Tensor, alpha: float,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
    """SiD's generator loss, mean over the batch of ``[(1 - α) ||f_real - f_fake||² + (f_real - f_fake)ᵀ (f_fake -
    x_g)] / w`` (per pixel), ``w = mean |x_g - f_real|`` per sample (no gradient). ``f_real`` and ``f_fake`` keep
    their graphs (they are the networks' predictions at ``x_t(x_g)``), so the gradient also flows through them:
    that is where the ``(1 - α)`` term acts. ``weights`` (per sample) scale each sample's loss."""
    with torch.no_grad():
        w = (x_g - f_real).abs().flatten(1).mean(1).clamp_min(1e-3)
    d = f_real - f_fake
    per = ((1 - alpha) * d.square() + d * (f_fake - x_g)).flatten(1).mean(1) / w
    return (per if weights is None else per * weights).mean()


def adaptive_label_weights(y: torch.Tensor, discrepancy: torch.Tensor, forget_labels, ema: dict,
                           decay: float) -> torch.Tensor:
    """Per-sample weights for multi-class SFD: ``ema[c]`` (updated in place with this batch's mean
    ``discrepancy`` of label ``c``) over the mean of ``ema`` across the forget labels, for samples of a
    forget label ``c``; 1 for every other sample."""
    for c in forget_labels:
        mask = y == c
        if mask.any():
            d = float(discrepancy[mask].mean())
            ema[c] = d if c not in ema else decay * ema[c] + (1 - decay) * d
    w = torch.ones(len(y))
    seen = [c for c in forget_labels if c in ema]
    if seen:
        mean = sum(ema[c] for c in seen) / len(seen)
        for c in seen:
            w[y == c] = ema[c] / max(mean, 1e-12)
    return w


def fake_score_loss(f_fake: torch.Tensor, x_g: torch.Tensor) -> torch.Tensor:
    """Denoising loss of the fake score on the generator's (detached) samples, in x0 units."""
    return ((f_fake - x_g.detach()) ** 2).mean()


def one_step_sample(unet, scheduler, labels: torch.Tensor, t_star: int, *, generator: torch.Generator,
                    batch_size: int = 500) -> torch.Tensor:
    """Images in [0, 1] from a one-step generator: ``z ~ N(0, I)``, one x0-prediction at ``t*``."""
    size = unet.config.sample_size
    out = []
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            y = labels[start : start + batch_size]
            z = torch.randn((len(y), 1, size, size), generator=generator)
            t = torch.full((len(y),), t_star)
            out.append((x0_prediction(unet, z, t, y, scheduler.alphas_cumprod).clamp(-1, 1) + 1) / 2)
    return torch.cat(out) if out else torch.zeros((0, 1, size, size))


def _generator_step(cfg: SFDConfig, teacher, fake, student, x_g, y, t, eps, ab, ema: dict) -> torch.Tensor:
    """The generator's loss at ``x_t = a_t x_g + σ_t ε``; sets the student's gradients (only theirs: the teacher
    and the fake score are not updated by it) and returns the loss."""
    a = ab[t].view(-1, 1, 1, 1)
    sid = cfg.gradient == "sid"
    xt = a.sqrt() * (x_g if sid else x_g.detach()) + (1 - a).sqrt() * eps
    with torch.set_grad_enabled(sid):
        f_real = x0_prediction(teacher, xt, t, target_labels(y, cfg.forget_labels, cfg.safe_label), ab)
        f_fake = x0_prediction(fake, xt, t, y, ab)
    weights = None
    if cfg.adaptive_weights:
        weights = adaptive_label_weights(y, (f_fake - f_real).detach().abs().flatten(1).mean(1), cfg.forget_labels,
                                         ema, cfg.weight_ema)
    lg = sid_generator_loss(x_g, f_real, f_fake, cfg.alpha, weights) if sid else generator_loss(x_g, f_real, f_fake, weights)
    params = [p for p in student.parameters()]
    for p, gr in zip(params, torch.autograd.grad(lg, params)):
        p.grad = gr
    return lg


def distill(gen: ImageGenerator, config: SFDConfig | None = None, *, progress: bool = True,
            desc: str = "sfd") -> tuple[ImageGenerator, dict]:
    """Distil a one-step generator from the DDPM ``gen`` (frozen), forgetting ``config.forget_labels``.

    Returns the student (an :class:`ImageGenerator` whose ``meta["one_step"]`` holds ``t*``) and a
    record (settings, wall time, losses every 50 steps, trainable parameters).
    """
    from t3unlearn.progress import progress as bar_for

    cfg = config or SFDConfig()
    if gen.family != "ddpm" or gen.guidance is not None or gen.meta.get("one_step"):
        raise T3Error("SFD distils a (plain) class-conditional DDPM; give it a ddpm model.")
    ab = gen.scheduler.alphas_cumprod
    n_t = ab.numel()
    t_star, t_lo, t_hi = int(cfg.t_star * n_t), int(cfg.t_min * n_t), max(int(cfg.t_max * n_t), int(cfg.t_min * n_t) + 1)
    teacher = gen.model.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        student = copy.deepcopy(teacher).train()
        fake = copy.deepcopy(teacher).train()
    for net in (student, fake):
        for p in net.parameters():
            p.requires_grad_(True)
    opt_g = torch.optim.Adam(student.parameters(), lr=cfg.lr, betas=(0.0, 0.999))
    opt_f = torch.optim.Adam(fake.parameters(), lr=cfg.lr, betas=(0.0, 0.999))
    g = torch.Generator().manual_seed(cfg.seed)
    size = teacher.config.sample_size
    B = cfg.batch_size
    history = []
    ema: dict = {}
    t0 = time.perf_counter()
    bar = bar_for(total=cfg.steps, desc=desc, unit="step", enabled=progress)

    def noised(x, t, e):
        a = ab[t].view(-1, 1, 1, 1)
        return a.sqrt() * x + (1 - a).sqrt() * e

    for step in range(cfg.steps):
        z = torch.randn((B, 1, size, size), generator=g)
        y = torch.randint(0, NULL_LABEL, (B,), generator=g)
        x_g = x0_prediction(student, z, torch.full((B,), t_star), y, ab)
        # the fake score follows the generator's distribution
        t = torch.randint(t_lo, t_hi, (B,), generator=g)
        xt = noised(x_g.detach(), t, torch.randn(x_g.shape, generator=g))
        lf = fake_score_loss(x0_prediction(fake, xt, t, y, ab), x_g)
        opt_f.zero_grad(set_to_none=True)
        lf.backward()
        opt_f.step()
        # the generator moves towards the teacher (the safe label's score where a forget label was asked for)
        t = torch.randint(t_lo, t_hi, (B,), generator=g)
        lg = _generator_step(cfg, teacher, fake, student, x_g, y, t, torch.randn(x_g.shape, generator=g), ab, ema)
        opt_g.step()
        bar.update(1)
        if step % 50 == 0 or step == cfg.steps - 1:
            history.append({"step": step, "fake_loss": lf.item(), "generator_loss": lg.item(),
                            **({"label_weights": {str(c): round(v / (sum(ema.values()) / len(ema)), 4) for c, v in ema.items()}}
                               if ema else {})})
            bar.set_postfix(fake=f"{lf.item():.3f}", gen=f"{lg.item():.3f}")
    bar.close()
    secs = time.perf_counter() - t0
    out = ImageGenerator("ddpm", student.eval(), gen.scheduler, {**gen.meta, "one_step": {"t_star": t_star}})
    record = {"method": "sfd", "config": asdict(cfg), "unlearn_seconds": secs, "history": history,
              "trainable_params": sum(p.numel() for p in student.parameters()) + sum(p.numel() for p in fake.parameters()),
              "params": {"forget_labels": list(cfg.forget_labels), "safe_label": cfg.safe_label,
                         "adaptive_weights": cfg.adaptive_weights}}
    return out, record
