"""The exactness check of T3 for diffusion models: 2-D Gaussian mixtures whose target is known.

The world is :func:`t3unlearn.toy.gaussian_world_2d`: ``p = (1 - g) N(0, I) + g N(μ_f, w² I)`` with a
concentrated forget component. The T3 target ``π ∝ p^(1/T) f^s`` (``f = (1 - g) p_r / p``, the
Bayes classifier) is known on the world's grid. The same sampler that guides the image DDPM
(:func:`t3unlearn.images.t3.sample_guided_diffusion`) is run with

- ``analytic`` scores: the exact noised mixture's ε and the exact noised classifier (a mixture of
  Gaussians stays one under noising), so any error left is the tempering *scheme's* bias;
- ``trained`` models: a tiny MLP ε-model trained on samples of p and a :class:`NoisyClassifier`
  trained on noised retain vs forget samples, the whole pipeline as it runs on images.

For each (T, s) and scheme it reports the distance between the samples and the target: total
variation between 2-D histograms (and the same for two exact target samples of that size: the
sampling-noise floor), and the forget component's mass (samples within 3w of μ_f) against the
target's. ``t3unlearn images exactness`` prints the table and draws the densities.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from t3unlearn.images.t3 import ClassifierTrainConfig, ImageGuidance, NoisyClassifier, fit_noisy_classifier, sample_guided_diffusion


class MLPDenoiser(ModelMixin, ConfigMixin):
    """A tiny ε-prediction model for vectors: an MLP on ``[x, time embedding]``."""

    @register_to_config
    def __init__(self, dim: int = 2, hidden: int = 128, time_dim: int = 32, layers: int = 3):
        super().__init__()
        self.time_proj = Timesteps(time_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_emb = TimestepEmbedding(time_dim, hidden)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        h = self.inp(x) + self.time_emb(self.time_proj(t).to(x.dtype))
        for blk in self.blocks:
            h = h + blk(F.silu(h))
        return self.out(F.silu(h))


def make_scheduler(steps: int = 1000):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=steps, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon",
                         clip_sample=False)


# ----------------------------------------------------------------------------- the exact model
@dataclass
class AnalyticMixture:
    """Exact ε and log f of ``p = (1 - g) N(m_r, v_r I) + g N(m_f, v_f I)`` noised to any level."""

    m_r: np.ndarray
    v_r: float
    m_f: np.ndarray
    v_f: float
    g: float
    alphas_cumprod: torch.Tensor

    def _parts(self, x: torch.Tensor, t: int):
        ab = float(self.alphas_cumprod[t])
        out = []
        for m, v in ((self.m_r, self.v_r), (self.m_f, self.v_f)):
            mean = torch.as_tensor(math.sqrt(ab) * m, dtype=x.dtype)
            var = ab * v + (1 - ab)
            d = x.shape[1]
            logp = -0.5 * ((x - mean) ** 2).sum(1) / var - 0.5 * d * math.log(2 * math.pi * var)
            out.append((logp, -(x - mean) / var))
        return out

    def eps(self, x: torch.Tensor, t: int) -> torch.Tensor:
        (lr, sr), (lf, sf) = self._parts(x, t)
        wr = torch.sigmoid((math.log(1 - self.g) + lr) - (math.log(self.g) + lf)).unsqueeze(1)
        score = wr * sr + (1 - wr) * sf
        return -math.sqrt(1 - float(self.alphas_cumprod[t])) * score

    def log_f(self, x: torch.Tensor, t: int) -> torch.Tensor:
        (lr, _), (lf, _) = self._parts(x, t)
        a, b = math.log(1 - self.g) + lr, math.log(self.g) + lf
        return a - torch.logaddexp(a, b)


# ----------------------------------------------------------------------------- training the tiny models
def train_denoiser(data: torch.Tensor, scheduler, *, steps: int = 4000, batch_size: int = 512, lr: float = 2e-3,
                   seed: int = 0, progress: bool = True) -> MLPDenoiser:
    from t3unlearn.progress import progress as bar_for

    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MLPDenoiser(dim=data.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    ab = scheduler.alphas_cumprod
    bar = bar_for(total=steps, desc="toy denoiser", unit="step", enabled=progress)
    for _ in range(steps):
        x0 = data[torch.randint(0, len(data), (batch_size,), generator=g)]
        t = torch.randint(0, ab.numel(), (batch_size,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        a = ab[t].unsqueeze(1)
        loss = F.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.update(1)
    bar.close()
    return model.eval()


# ----------------------------------------------------------------------------- distances
def hist_tv(samples: np.ndarray, log_mass: np.ndarray, points: np.ndarray, edges: np.ndarray) -> float:
    """Total variation between the samples' 2-D histogram and the exact target's mass per bin."""
    h, _, _ = np.histogram2d(samples[:, 0], samples[:, 1], bins=[edges, edges])
    h = h / max(len(samples), 1)
    w = np.exp(log_mass - log_mass.max())
    t, _, _ = np.histogram2d(points[:, 0], points[:, 1], bins=[edges, edges], weights=w)
    t = t / t.sum()
    # mass outside the histogram's box counts fully
    return float(0.5 * np.abs(h - t).sum() + 0.5 * (1 - h.sum()))


def exact_samples(log_mass: np.ndarray, points: np.ndarray, n: int, step: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of the grid density (a node drawn by mass, then uniform jitter within its cell)."""
    p = np.exp(log_mass - log_mass.max())
    idx = rng.choice(len(points), size=n, p=p / p.sum())
    return points[idx] + rng.uniform(-step / 2, step / 2, size=(n, 2))


def forget_mass(samples: np.ndarray, center: np.ndarray, radius: float) -> float:
    return float((np.linalg.norm(samples - center, axis=1) < radius).mean())


def forget_mass_exact(log_mass: np.ndarray, points: np.ndarray, center: np.ndarray, radius: float) -> float:
    p = np.exp(log_mass - log_mass.max())
    return float(p[np.linalg.norm(points - center, axis=1) < radius].sum() / p.sum())


# ----------------------------------------------------------------------------- the check
SETTINGS = ((1.0, 0.0), (1.0, 1.0), (2.0, 1.0), (2.0, 2.0))


def run_check(*, n: int = 4000, steps: int = 100, settings=SETTINGS, schemes=("score", "langevin"),
              models=("analytic", "trained"), seed: int = 0, forget_width: float = 0.25, g: float = 0.2,
              train_steps: int = 4000, clf_steps: int = 3000, langevin_steps: int = 1, final_langevin_steps: int = 200,
              progress: bool = True, log=print) -> dict:
    """Sample every (model, T, s, scheme) and measure it against the exact target; returns rows + samples."""
    from t3unlearn.toy import gaussian_world_2d

    t_start = time.perf_counter()
    world = gaussian_world_2d(forget_width=forget_width, g=g, forget_mean=(1.5, 1.5), box=5.0, grid_n=201)
    P = world.params
    m_r, m_f = np.asarray(P["retain_mean"]), np.asarray(P["forget_mean"])
    sched = make_scheduler()
    rng = np.random.default_rng(seed)
    retain = torch.tensor(world.sample("retain", 20000, rng), dtype=torch.float32)
    forget = torch.tensor(world.sample("forget", 20000, rng), dtype=torch.float32)
    n_f = int(round(g * 20000 / (1 - g)))
    data = torch.cat([retain, forget[:n_f]])
    exact = AnalyticMixture(m_r, P["retain_std"][0] ** 2, m_f, P["forget_std"][0] ** 2, g, sched.alphas_cumprod)
    fns = {}
    if "analytic" in models:
        fns["analytic"] = (exact.eps, exact.log_f)
    train_info = {}
    if "trained" in models:
        t0 = time.perf_counter()
        den = train_denoiser(data, sched, steps=train_steps, seed=seed, progress=progress)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            clf = NoisyClassifier(kind="mlp", in_dim=2, hidden=128, num_labels=0)
        rec = fit_noisy_classifier(clf, retain, forget[:n_f], alphas_cumprod=sched.alphas_cumprod,
                                   config=ClassifierTrainConfig(steps=clf_steps, batch_size=512, lr=2e-3, seed=seed),
                                   progress=progress, desc="toy classifier")
        train_info = {"seconds": time.perf_counter() - t0, "classifier_accuracy": rec["balanced_accuracy"]}
        fns["trained"] = (lambda x, t: den(x, t), lambda x, t: clf.log_f(x, torch.full((len(x),), t)))
    edges = np.linspace(-4.5, 4.5, 37)
    radius = 3 * forget_width
    rows, samples = [], {}
    floor_cache = {}
    for T, s in settings:
        log_target = world.log_p / T + s * world.bayes_log_f()
        key = (T, s)
        if key not in floor_cache:
            a = exact_samples(log_target, world.points, n, P["grid_step"], np.random.default_rng([seed, 1]))
            floor_cache[key] = (hist_tv(a, log_target, world.points, edges), forget_mass_exact(log_target, world.points, m_f, radius))
        floor, fm_target = floor_cache[key]
        for model in fns:
            eps_fn, log_f_fn = fns[model]
            for scheme in schemes:
                if (T, s) == (1.0, 0.0) and scheme != "score":
                    continue  # the plain sampler: no tempering scheme to compare
                gd = ImageGuidance(temperature=T, scale=s, scheme=scheme, langevin_steps=langevin_steps,
                                   final_langevin_steps=final_langevin_steps)
                gen = torch.Generator().manual_seed(seed + 7)
                x = torch.randn((n, 2), generator=gen)
                t0 = time.perf_counter()
                with torch.no_grad():
                    x = sample_guided_diffusion(eps_fn, log_f_fn if s else None, sched, x, guidance=gd, steps=steps,
                                                generator=gen)
                xs = x.numpy().astype(float)
                tv = hist_tv(xs, log_target, world.points, edges)
                row = {"model": model, "temperature": T, "scale": s, "scheme": scheme if (T, s) != (1.0, 0.0) else "-",
                       "tv": tv, "tv_floor": floor, "forget_mass": forget_mass(xs, m_f, radius),
                       "forget_mass_target": fm_target, "seconds": time.perf_counter() - t0}
                rows.append(row)
                samples[(model, T, s, row["scheme"])] = xs
                log(f"  {model:<8} T={T:g} s={s:g} {row['scheme']:<8} TV {tv:.3f} (floor {floor:.3f}), forget mass "
                    f"{row['forget_mass']:.3f} (target {fm_target:.3f})")
    return {"rows": rows, "samples": samples, "world": world, "edges": edges, "train": train_info,
            "settings": {"n": n, "steps": steps, "seed": seed, "forget_width": forget_width, "g": g,
                         "langevin_steps": langevin_steps, "final_langevin_steps": final_langevin_steps,
                         "train_steps": train_steps, "clf_steps": clf_steps},
            "seconds": time.perf_counter() - t_start}


def table_markdown(report: dict) -> str:
    lines = ["| model | T | s | scheme | TV to target | TV floor (exact samples) | forget mass | target forget mass |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]
    for r in report["rows"]:
        lines.append(f"| {r['model']} | {r['temperature']:g} | {r['scale']:g} | {r['scheme']} | {r['tv']:.3f} | "
                     f"{r['tv_floor']:.3f} | {r['forget_mass']:.3f} | {r['forget_mass_target']:.3f} |")
    return "\n".join(lines)


def plot_check(report: dict, path: str | Path) -> Path:
    """Target density vs sampled histograms, one row per (T, s), one column per model and scheme."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from t3unlearn.io import atomic_write

    world, edges = report["world"], report["edges"]
    settings = sorted({(r["temperature"], r["scale"]) for r in report["rows"]})
    cols = sorted({(r["model"], r["scheme"]) for r in report["rows"] if r["scheme"] != "-"})
    fig, axes = plt.subplots(len(settings), 1 + len(cols), figsize=(2.6 * (1 + len(cols)), 2.6 * len(settings)),
                             squeeze=False)
    n = int(np.sqrt(len(world.points)))
    for i, (T, s) in enumerate(settings):
        log_target = world.log_p / T + s * world.bayes_log_f()
        dens = np.exp(log_target - log_target.max()).reshape(n, n)
        ax = axes[i][0]
        ax.imshow(dens, origin="lower", extent=[world.points[:, 0].min(), world.points[:, 0].max()] * 2, cmap="viridis")
        ax.set_title(f"target T={T:g} s={s:g}", fontsize=8)
        for j, (model, scheme) in enumerate(cols):
            ax = axes[i][1 + j]
            plain = (T, s) == (1.0, 0.0)  # the plain sampler has no scheme: shown once per model
            key = (model, T, s, "-") if plain else (model, T, s, scheme)
            xs = report["samples"].get(key)
            if xs is None or (plain and scheme != cols[[c[0] for c in cols].index(model)][1]):
                ax.axis("off")
                continue
            ax.hist2d(xs[:, 0], xs[:, 1], bins=[edges, edges], cmap="viridis")
            row = next(r for r in report["rows"] if (r["model"], r["temperature"], r["scale"], r["scheme"]) == key)
            ax.set_title(f"{model}, {'plain sampler' if plain else scheme}: TV {row['tv']:.3f}", fontsize=8)
        for ax in axes[i]:
            ax.set_xlim(-4.5, 4.5)
            ax.set_ylim(-4.5, 4.5)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=90)
    plt.close(fig)
    return Path(path)
