"""Temper-Then-Tilt for image generators: a frozen generator, a small classifier, a guided sampler.

The target is the LLM side's, p_T3(x | y) ∝ p(x | y)^(1/T) · f(retain | x, y)^s, with the generator's
weights untouched; only the classifier trains.

**DDPM.** ``f`` is a *noise-conditional* classifier ``f(retain | x_t, t, y)`` trained on noised retain
and forget images (:func:`fit_noisy_classifier`); its gradient tilts the score. In ε units (score
``= -ε / σ_t``), the guided prediction is ``ε̂ = ε_θ / T - s · σ_t · ∇_x log f(x_t, t, y)``
(:func:`guided_eps`). For T = 1, s = 1 and the Bayes classifier of the noised data this is exact:
``p_t(x) f_t(x) = (1 - g) p_{retain,t}(x)`` at every noise level. Tempering has no exact per-step
form (the noised p^(1/T) is not the tempered noised p), so three schemes are offered (``scheme``):

- ``score``: scale the score by 1/T at every step (the cheap heuristic; one model call per step);
- ``adaptive``: score scaling with a per-sample temperature ``T_x = 1 + (T - 1) · (1 - f_t(x))``:
  what the classifier reads as retain is not tempered (the LLM side's adaptive tempering, carried over);
- ``langevin``: before each predictor step, ``langevin_steps`` unadjusted Langevin corrector steps
  towards ``π_t ∝ p_t^(1/T) f_t^s`` (step size from the signal-to-noise rule of Song et al.'s
  predictor-corrector samplers), and ``final_langevin_steps`` more at the last level whose noise
  ``σ_t`` is at least ``langevin_min_sigma``. The path is arbitrary but its end, ``p^(1/T) f^s``
  blurred by ``N(0, σ_min²)``, is the target, so enough corrector steps remove the per-step
  heuristic's bias. Below ``σ_min`` a learned model's score ``-ε/σ_t`` is too noisy to correct with
  (its error grows like 1/σ_t), so the last steps are plain predictor steps. Checked on 2-D Gaussian
  mixtures with a known target (:mod:`t3unlearn.images.exactness`).

**VAE.** Tempering goes through the latent prior (``N(0, I)^(1/T) = N(0, T I)``) and the tilt through a
decoded-sample classifier ``f(retain | x̂, y)`` trained on the decoder's reconstructions of retain and
forget images (``x̂ = sigmoid(decode(z, y))``, ``z ~ q(z | x, y)``: blurred as the VAE's samples
are). Sampling is rejection sampling: ``z ~ N(0, T I)``, accepted with probability
``f(x̂(z), y)^s`` (≤ 1), so the accepted latents follow ``N(0, I)^(1/T) f^s`` exactly (up to
``max_rounds``). (A classifier on the latents themselves was tried first: it separates the encoded
forget images perfectly but misses the prior draws that decode to glyphs — 9.7 % glyphs left of 12 %.)

**Calibration of f.** The classifier is trained on balanced batches (half retain, half forget) and
its logit is shifted by ``log(n_retain / n_forget)`` afterwards, so ``f`` estimates the posterior
under the training data's own proportions — the ``f`` for which T = 1, s = 1 is exact.

A guided model is saved the way an adapter is: ``t3_images.json`` names the base generator (path and
weight fingerprint) and ``t3/`` holds the classifier (safetensors) and the guidance settings; loading
it gives an :class:`~t3unlearn.images.models.ImageGenerator` whose samplers apply the guidance, so the
evaluator and ``compare`` treat it like any other model.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from t3unlearn.errors import ModelError, T3Error
from t3unlearn.images.guidance import SCHEMES, ImageGuidance  # noqa: F401 - re-exported
from t3unlearn.images.models import LOCAL_SAFETENSORS, check_sampling_steps
from t3unlearn.settings import TrainingSettings

T3_DIR = "t3"
HEAD_VERSION = 2  # enters the cache key of a head: bump when what a head is changes


# ============================================================================ the classifier
class NoisyClassifier(ModelMixin, ConfigMixin):
    """The log-odds that ``x`` (noised to level ``t``, asked for label ``y``) is retain, not forget data.

    ``kind="cnn"``: images ``[B, 1, S, S]`` in the generator's space; ``kind="mlp"``: vectors
    ``[B, in_dim]`` (2-D toy data). ``time_cond=False`` drops the timestep input (clean data: the VAE's
    decoded samples). ``num_labels=0`` drops the label input. ``prior_logit`` is added to the output
    (see the module doc: balanced training, then the data's own class prior).
    """

    @register_to_config
    def __init__(self, kind: str = "cnn", image_size: int = 16, in_dim: int = 2, hidden: int = 64,
                 num_labels: int = 11, label_dim: int = 16, time_cond: bool = True, time_dim: int = 32,
                 prior_logit: float = 0.0):
        super().__init__()
        if kind not in ("cnn", "mlp"):
            raise ModelError(f"unknown classifier kind {kind!r}; choose cnn or mlp.")
        cond = 0
        if time_cond:
            self.time_proj = Timesteps(time_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
            self.time_emb = TimestepEmbedding(time_dim, hidden)
            cond = hidden
        if num_labels:
            self.label_emb = nn.Embedding(num_labels, label_dim)
            cond += label_dim
        self.cond_dim = cond
        if kind == "cnn":
            self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
            self.conv2 = nn.Conv2d(32, 64, 3, padding=1, stride=2)
            self.conv3 = nn.Conv2d(64, 64, 3, padding=1, stride=2)
            self.film = nn.Linear(cond, 32 + 64) if cond else None
            body = 64 * (image_size // 4) ** 2
        else:
            self.inp = nn.Linear(in_dim, hidden)
            self.film = nn.Linear(cond, hidden) if cond else None
            body = hidden
        self.out = nn.Sequential(nn.Linear(body + cond, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 1))

    def _cond(self, x: torch.Tensor, t, y) -> torch.Tensor | None:
        parts = []
        if self.config.time_cond:
            t = torch.as_tensor(t, device=x.device)
            if t.dim() == 0:
                t = t.expand(x.shape[0])
            parts.append(F.silu(self.time_emb(self.time_proj(t).to(x.dtype))))
        if self.config.num_labels:
            if y is None:
                raise T3Error("this classifier is label-conditional: pass the labels.")
            parts.append(self.label_emb(torch.as_tensor(y, device=x.device).expand(x.shape[0])))
        return torch.cat(parts, 1) if parts else None

    def forward(self, x: torch.Tensor, t=None, y=None) -> torch.Tensor:
        """Log-odds of retain, ``[B]``, with the class prior of the training data."""
        c = self._cond(x, t, y)
        if self.config.kind == "cnn":
            h = F.silu(self.conv1(x))
            if c is not None:
                h = h + self.film(c)[:, :32, None, None]
            h = F.silu(self.conv2(h))
            if c is not None:
                h = h + self.film(c)[:, 32:, None, None]
            h = F.silu(self.conv3(h)).flatten(1)
        else:
            h = self.inp(x)
            if c is not None:
                h = h + self.film(c)
            h = F.silu(h)
        if c is not None:
            h = torch.cat([h, c], 1)
        return self.out(h).squeeze(-1) + self.config.prior_logit

    def log_f(self, x: torch.Tensor, t=None, y=None) -> torch.Tensor:
        """``log f(retain | x, t, y)`` per sample."""
        return F.logsigmoid(self(x, t, y))


@dataclass
class ClassifierTrainConfig(TrainingSettings):
    steps: int = 1500
    batch_size: int = 64  # half retain, half forget
    lr: float = 2e-3
    weight_decay: float = 1e-4
    hidden: int = 64
    label_dropout: float = 0.1  # labels replaced by the null label (for unconditional sampling)
    seed: int = 0


def fit_noisy_classifier(clf: NoisyClassifier, retain: torch.Tensor, forget: torch.Tensor, *,
                         retain_labels: torch.Tensor | None = None, forget_labels: torch.Tensor | None = None,
                         alphas_cumprod: torch.Tensor | None = None, config: ClassifierTrainConfig | None = None,
                         null_label: int | None = None, progress: bool = True,
                         desc: str = "classifier") -> dict:
    """Train ``clf`` in place to tell ``retain`` from ``forget`` samples (in the generator's space).

    With ``alphas_cumprod`` every sample is noised to a uniform random level
    (``sqrt(ᾱ_t) x + sqrt(1 - ᾱ_t) ε``) and the classifier sees ``t``. Balanced batches,
    then ``prior_logit = log(n_retain / n_forget)``. Returns a record (steps, seconds, final loss,
    balanced accuracy on the last batches).
    """
    from t3unlearn.progress import progress as bar_for

    cfg = config or ClassifierTrainConfig()
    if len(retain) == 0 or len(forget) == 0:
        raise T3Error("the classifier needs both retain and forget samples.")
    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(clf.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, cfg.steps) / cfg.steps)))
    half = max(1, cfg.batch_size // 2)
    target = torch.cat([torch.ones(half), torch.zeros(half)])
    clf.register_to_config(prior_logit=0.0)
    clf.train()
    t0 = time.perf_counter()
    bar = bar_for(total=cfg.steps, desc=desc, unit="step", enabled=progress)
    losses, accs = [], []
    for step in range(cfg.steps):
        ir = torch.randint(0, len(retain), (half,), generator=g)
        i_f = torch.randint(0, len(forget), (half,), generator=g)
        x = torch.cat([retain[ir], forget[i_f]])
        y = None
        if retain_labels is not None:
            y = torch.cat([retain_labels[ir], forget_labels[i_f]])
            if null_label is not None and cfg.label_dropout > 0:
                y = torch.where(torch.rand(y.shape, generator=g) < cfg.label_dropout, torch.full_like(y, null_label), y)
        t = None
        if alphas_cumprod is not None:
            t = torch.randint(0, alphas_cumprod.numel(), (len(x),), generator=g)
            ab = alphas_cumprod[t].view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
            x = ab.sqrt() * x + (1 - ab).sqrt() * torch.randn(x.shape, generator=g)
        logit = clf(x, t, y)
        loss = F.binary_cross_entropy_with_logits(logit, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        accs.append(float(((logit > 0).float() == target).float().mean()))
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    clf.register_to_config(prior_logit=float(math.log(len(retain) / len(forget))))
    clf.eval()
    tail = max(1, min(100, len(losses) // 5))
    return {"steps": cfg.steps, "seconds": time.perf_counter() - t0, "final_loss": sum(losses[-tail:]) / tail,
            "balanced_accuracy": sum(accs[-tail:]) / tail, "n_retain": len(retain), "n_forget": len(forget),
            "prior_logit": clf.config.prior_logit, "config": asdict(cfg)}


# ============================================================================ diffusion sampling
def guided_eps(eps: torch.Tensor, x: torch.Tensor, log_f: Callable | None, sigma: torch.Tensor | float, *,
               temperature: float, scale: float, adaptive: bool = False) -> torch.Tensor:
    """``ε / T - s · σ_t · ∇_x log f(x)`` — the ε of the score ``(1/T) ∇log p_t + s ∇log f_t``.

    ``log_f(x)`` returns per-sample log-probabilities of retain; its gradient comes from autograd.
    ``adaptive``: a per-sample temperature ``T_x = 1 + (T - 1) · (1 - f(x))`` (detached), so samples the
    classifier reads as retain are not tempered — the image analogue of the LLM side's adaptive tempering.
    """
    adaptive = adaptive and temperature != 1 and log_f is not None
    if log_f is None or (scale == 0 and not adaptive):
        return eps / temperature
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        lf = log_f(xg)
        (grad,) = torch.autograd.grad(lf.sum(), xg)
    if adaptive:
        t_x = 1 + (temperature - 1) * (1 - lf.detach().exp()).view((-1,) + (1,) * (x.dim() - 1))
        out = eps / t_x
    else:
        out = eps / temperature
    if scale == 0:
        return out
    sigma = torch.as_tensor(sigma, dtype=x.dtype)
    return out - scale * sigma * grad


def sample_guided_diffusion(eps_fn: Callable, log_f_fn: Callable | None, scheduler, x: torch.Tensor, *,
                            guidance: ImageGuidance, steps: int, generator: torch.Generator,
                            clip: tuple[float, float] | None = None, tick=None) -> torch.Tensor:
    """Draw from ``p^(1/T) f^s`` with an ε-prediction model, starting from the noise ``x``.

    ``eps_fn(x, t)`` -> ε (``t`` a python int); ``log_f_fn(x, t)`` -> per-sample log f (or None for
    no tilt). ``scheduler`` is a diffusers DDPM-type scheduler (its ``alphas_cumprod`` give σ_t); a
    fresh copy with ``steps`` timesteps is used. Randomness comes from ``generator`` only.
    """
    from diffusers import DDPMScheduler

    check_sampling_steps(steps, scheduler)
    sched = DDPMScheduler.from_config(scheduler.config)
    sched.set_timesteps(steps)
    ab = sched.alphas_cumprod
    T, s = guidance.temperature, guidance.scale
    timesteps = [int(t) for t in sched.timesteps]

    def eps_hat(x, t):
        lf = None if log_f_fn is None else (lambda z: log_f_fn(z, t))
        return guided_eps(eps_fn(x, t), x, lf, (1 - ab[t]).sqrt(), temperature=T, scale=s,
                          adaptive=guidance.scheme == "adaptive")

    def correct(x, t, n):
        sigma = float((1 - ab[t]).sqrt())
        for _ in range(n):
            grad = -eps_hat(x, t) / sigma
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            # batch-mean norms (as in Song et al.'s predictor-corrector): a per-sample ratio explodes
            # where the score vanishes (at a mode)
            zn = z.flatten(1).norm(dim=1).mean()
            gn = grad.flatten(1).norm(dim=1).mean().clamp_min(1e-12)
            eta = 2 * (guidance.snr * zn / gn) ** 2
            x = x + eta * grad + (2 * eta).sqrt() * z
        return x

    langevin = guidance.scheme == "langevin" and (T != 1 or s != 0)
    sigmas = [float((1 - ab[t]).sqrt()) for t in timesteps]
    corrected = [i for i, sg in enumerate(sigmas) if sg >= guidance.langevin_min_sigma]
    last = corrected[-1] if corrected else -1
    for i, t in enumerate(timesteps):
        if langevin and i <= last:
            x = correct(x, t, guidance.langevin_steps + (guidance.final_langevin_steps if i == last else 0))
        e = eps_hat(x, t)
        x = sched.step(e, t, x, generator=generator).prev_sample
        if clip is not None:
            x = x.clamp(*clip)
        if tick is not None:
            tick(1 / len(timesteps))
    return x


# ============================================================================ the guided image generator
@dataclass
class T3ImageHead:
    """A classifier and the guidance settings over a frozen generator (DDPM: noise-conditional; VAE: latent)."""

    classifier: NoisyClassifier
    guidance: ImageGuidance
    record: dict

    def save(self, tmp: Path) -> None:
        d = tmp / T3_DIR
        self.classifier.save_pretrained(d / "classifier", safe_serialization=True)
        record = {k: v for k, v in self.record.items() if k != "seconds"}  # what enters the weights' fingerprint
        (d / "guidance.json").write_text(json.dumps({"guidance": asdict(self.guidance), "record": record},
                                                    indent=1, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "T3ImageHead":
        d = Path(path) / T3_DIR
        try:
            clf = NoisyClassifier.from_pretrained(str(d / "classifier"), **LOCAL_SAFETENSORS).eval()
            raw = json.loads((d / "guidance.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path} has a missing or corrupt T3 head ({str(exc).splitlines()[0]}); "
                             "make it again with 't3unlearn images unlearn --method t3'.") from None
        return cls(clf, ImageGuidance.from_dict(raw["guidance"]), raw.get("record", {}))


def ddpm_sample_t3(unet, train_scheduler, head: T3ImageHead, labels: torch.Tensor, *, generator: torch.Generator,
                   steps: int = 30, batch_size: int = 500, tick=None, guidance: ImageGuidance | None = None) -> torch.Tensor:
    """Images in [0, 1] from a DDPM guided by ``head`` (``guidance`` overrides the head's settings)."""
    gd = guidance or head.guidance
    size = unet.config.sample_size
    unet.eval()
    out = []
    for start in range(0, len(labels), batch_size):
        y = labels[start : start + batch_size]
        x = torch.randn((len(y), 1, size, size), generator=generator)
        eps_fn = lambda z, t, y=y: unet(z, t, class_labels=y).sample  # noqa: E731
        log_f = lambda z, t, y=y: head.classifier.log_f(z, torch.full((len(z),), t), y)  # noqa: E731
        sub_tick = None if tick is None else (lambda f, n=len(y): tick(f * n / len(labels)))
        with torch.no_grad():
            x = sample_guided_diffusion(eps_fn, log_f, train_scheduler, x, guidance=gd, steps=steps,
                                        generator=generator, tick=sub_tick)
        out.append((x.clamp(-1, 1) + 1) / 2)
    return torch.cat(out) if out else torch.zeros((0, 1, size, size))


@torch.no_grad()
def vae_sample_t3(vae, head: T3ImageHead, labels: torch.Tensor, *, generator: torch.Generator,
                  guidance: ImageGuidance | None = None) -> torch.Tensor:
    """Decoder means in [0, 1]: ``z ~ N(0, T I)`` accepted with probability ``f(z, y)^s``."""
    gd = guidance or head.guidance
    n, d = len(labels), vae.config.latent_dim
    z = torch.zeros((n, d))
    todo = torch.arange(n)
    for round_ in range(gd.max_rounds):
        if len(todo) == 0:
            break
        cand = math.sqrt(gd.temperature) * torch.randn((len(todo), d), generator=generator)
        u = torch.rand(len(todo), generator=generator)
        if gd.scale == 0:
            ok = torch.ones(len(todo), dtype=torch.bool)
        else:
            log_acc = gd.scale * head.classifier.log_f(torch.sigmoid(vae.decode(cand, labels[todo])), None, labels[todo])
            ok = u.log() < log_acc
        if round_ == gd.max_rounds - 1:
            ok[:] = True  # the last round keeps what it drew (rarely reached; see max_rounds)
        z[todo[ok]] = cand[ok]
        todo = todo[~ok]
    return torch.sigmoid(vae.decode(z, labels))


def fit_t3_head(gen, bench, *, guidance: ImageGuidance | None = None, config: ClassifierTrainConfig | None = None,
                progress: bool = True, desc: str | None = None) -> T3ImageHead:
    """Train the classifier of a T3 head for ``gen`` (frozen) on ``bench``'s retain and forget images."""
    from t3unlearn.images.models import NULL_LABEL

    cfg = config or ClassifierTrainConfig()
    gd = guidance or ImageGuidance()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if gen.family == "ddpm":
            clf = NoisyClassifier(kind="cnn", image_size=gen.model.config.sample_size, hidden=cfg.hidden,
                                  num_labels=NULL_LABEL + 1)
        else:
            clf = NoisyClassifier(kind="cnn", image_size=gen.model.config.image_size, hidden=cfg.hidden,
                                  num_labels=NULL_LABEL + 1, time_cond=False)
    if gen.family == "ddpm":
        rec = fit_noisy_classifier(clf, 2 * bench.retain - 1, 2 * bench.forget - 1, retain_labels=bench.retain_labels,
                                   forget_labels=bench.forget_labels, alphas_cumprod=gen.scheduler.alphas_cumprod,
                                   config=cfg, null_label=NULL_LABEL, progress=progress, desc=desc or "t3 classifier")
    else:
        zr, yr = _reconstructions(gen.model, bench.retain, bench.retain_labels, cfg.seed)
        zf, yf = _reconstructions(gen.model, bench.forget, bench.forget_labels, cfg.seed + 1)
        rec = fit_noisy_classifier(clf, zr, zf, retain_labels=yr, forget_labels=yf,
                                   config=ClassifierTrainConfig(**{**asdict(cfg), "label_dropout": 0.0}),
                                   progress=progress, desc=desc or "t3 decoded-sample classifier")
    rec["family"] = gen.family
    return T3ImageHead(clf, gd, rec)


@torch.no_grad()
def _reconstructions(vae, x: torch.Tensor, y: torch.Tensor, seed: int, draws: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """``draws`` decoded means ``sigmoid(decode(z, y))``, ``z ~ q(z | x, y)``, per image, with their labels:
    what the decoder makes of each training image, blur included (the decoded-sample classifier's data)."""
    g = torch.Generator().manual_seed(seed)
    vae.eval()
    mu, logvar = vae.encode(x, y)
    mu, std, yy = mu.repeat(draws, 1), (0.5 * logvar).exp().repeat(draws, 1), y.repeat(draws)
    return torch.sigmoid(vae.decode(mu + std * torch.randn(mu.shape, generator=g), yy)), yy


# ============================================================================ saving, loading, the cached unit
def save_guided(head: T3ImageHead, base: str | Path, out: str | Path, *, record: dict | None = None) -> Path:
    """Write a T3 head over the generator at ``base`` to ``out`` (atomically), adapter-style: the base
    is referenced (path + weight fingerprint), not copied."""
    from t3unlearn.images.models import META_FILE, ImageGenerator, weights_fingerprint
    from t3unlearn.io import atomic_dir

    base = Path(base).resolve()
    base_meta = ImageGenerator.load(base).meta
    family = json.loads((base / META_FILE).read_text(encoding="utf-8"))["family"]
    fp = weights_fingerprint(base)
    head.record = {**head.record, "base_fingerprint": fp}
    out = Path(out)
    if out.resolve() == base:
        raise T3Error(f"{out} is the head's base model; save the head to another directory.")
    with atomic_dir(out, marker=META_FILE, what="an image generator or T3 head") as tmp:
        head.save(tmp)
        if record is not None:
            (tmp / "run.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        meta = {"family": family, "t3": {"base": str(base), "base_fingerprint": fp},
                **{k: base_meta[k] for k in ("preset", "bench", "forget_label", "label_dropout") if k in base_meta}}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def load_guided(path: Path, meta: dict):
    """The :class:`ImageGenerator` of a saved T3 head: its base, loaded, with the head attached."""
    from t3unlearn.images.models import ImageGenerator, weights_fingerprint

    info = meta["t3"]
    base = Path(info["base"])
    if not base.is_dir():
        raise ModelError(f"{path} is a T3 head over {base}, which is gone; make the head again over a base that exists.")
    if weights_fingerprint(base) != info.get("base_fingerprint"):
        raise ModelError(f"{path} was trained over other weights than {base} holds now; make the head again.")
    gen = ImageGenerator.load(base)
    head = T3ImageHead.load(path)
    gen.guidance = head
    gen.meta = {**gen.meta, **{k: v for k, v in meta.items() if k != "t3"}, "t3": info}
    return gen


def make_t3(gen, bench, *, guidance: ImageGuidance, config: ClassifierTrainConfig, progress: bool = True,
            desc: str | None = None) -> tuple[T3ImageHead, dict]:
    """Train a head for the frozen ``gen``; returns the head and a run record (wall time, sizes)."""
    if gen.guidance is not None:
        raise ModelError("this generator is already T3-guided; train a head over its base instead.")
    t0 = time.perf_counter()
    head = fit_t3_head(gen, bench, guidance=guidance, config=config, progress=progress, desc=desc)
    secs = time.perf_counter() - t0
    n_params = sum(p.numel() for p in head.classifier.parameters())
    record = {"method": "t3", "params": asdict(guidance), "config": asdict(config), "unlearn_seconds": secs,
              "trainable_params": n_params, "history": [], "classifier": {k: v for k, v in head.record.items()
                                                                          if k not in ("config",)}}
    return head, record
