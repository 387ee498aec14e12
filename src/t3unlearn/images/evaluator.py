"""The evaluator: a small classifier trained offline, the metrics, sample grids and plots.

**Classifier** (:class:`DigitClassifier`): a two-layer CNN with an 11-way head (digits 0-9 and
``GLYPH_CLASS``, "a forget glyph"), trained on the benchmark's training digits plus a *separate*
draw of the glyph family (it never sees the forget images themselves), with ±1-pixel shifts as
augmentation. Its 64-d penultimate activations are the features of the Fréchet distance.

**Metrics** of a generator (all from seeded samples):

- ``forget_rate_label``: share of the samples generated for the forget label that the classifier
  calls a glyph (a full model should sit near the glyphs' share of that label's training data);
- ``forget_rate_uncond``: the same for unconditional samples (base rate ~ k/n): the null label for
  the DDPM (trained with label dropout), ``y ~ p(y)`` then ``x ~ p(x | y)`` for the VAE (whose
  null-label samples are blurry blends the classifier cannot judge, so it is trained without one);
- ``class_acc``: mean over the ten digits of the share of class-conditional samples classified as
  the digit asked for (``per_class_acc`` holds the ten values);
- ``frechet``: the Fréchet distance between Gaussians fitted to the classifier features of the
  class-conditional samples and of the held-out retain digits. **An FID analogue on a small digit
  classifier's features, not Inception FID**: its numbers are comparable only with each other;
  ``frechet_real`` (training digits vs held-out digits) is its floor;
- VAEs: ``elbo_retain`` / ``elbo_forget`` / ``elbo_test``: mean ELBO (nats per image, Bernoulli
  likelihood of grey levels, mean over several z draws) of the retain set, the forget set and the
  held-out digits. Unlearning should lower ``elbo_forget`` and keep ``elbo_retain``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from t3unlearn.errors import T3Error
from t3unlearn.images.data import GLYPH_CLASS, NUM_DIGITS, ImageBenchmark
from t3unlearn.images.models import NULL_LABEL, ImageGenerator

CLASSIFIER_VERSION = 1


class DigitClassifier(ModelMixin, ConfigMixin):
    """conv(32) - pool - conv(64) - pool - fc(feature_dim) - fc(num_classes) on ``[B, 1, 16, 16]`` in [0, 1]."""

    @register_to_config
    def __init__(self, num_classes: int = NUM_DIGITS + 1, feature_dim: int = 64, image_size: int = 16):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.fc = nn.Linear(64 * (image_size // 4) ** 2, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer before its ReLU (no dead coordinates: a well-conditioned covariance)."""
        return self.fc(self.conv(x).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.features(x)))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """``(predicted class, features)`` for images in [0, 1]."""
        self.eval()
        preds, feats = [], []
        for s in range(0, len(x), batch_size):
            f = self.features(x[s : s + batch_size])
            feats.append(f)
            preds.append(self.head(F.relu(f)).argmax(1))
        if not preds:
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, self.config.feature_dim)
        return torch.cat(preds), torch.cat(feats)


@dataclass
class ClassifierConfig:
    steps: int = 800
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0


def _shift(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Each image rolled by a random -1..1 pixel shift in each direction (the border is empty)."""
    dx = torch.randint(-1, 2, (len(x),), generator=g)
    dy = torch.randint(-1, 2, (len(x),), generator=g)
    return torch.stack([torch.roll(img, (int(a), int(b)), dims=(1, 2)) for img, a, b in zip(x, dy, dx)])


def train_classifier(bench: ImageBenchmark, config: ClassifierConfig | None = None, *, progress: bool = True
                     ) -> tuple[DigitClassifier, dict]:
    from t3unlearn.progress import progress as bar_for

    cfg = config or ClassifierConfig()
    g = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        clf = DigitClassifier(image_size=bench.train.shape[-1])
    X, y = bench.clf_train, bench.clf_train_labels
    # the glyph class has as many training images as one digit (clf_glyphs_train = train_per_class)
    opt = torch.optim.Adam(clf.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    t0 = time.perf_counter()
    clf.train()
    for _ in bar_for(range(cfg.steps), desc="train classifier", unit="step", enabled=progress):
        idx = torch.randint(0, len(X), (cfg.batch_size,), generator=g)
        loss = F.cross_entropy(clf(_shift(X[idx], g)), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    clf.eval()
    pred, _ = clf.predict(bench.clf_test)
    yt = bench.clf_test_labels
    record = {
        "config": asdict(cfg),
        "train_seconds": round(time.perf_counter() - t0, 2),
        "test_accuracy": round(float((pred == yt).float().mean()), 4),
        "test_digit_accuracy": round(float((pred == yt)[yt != GLYPH_CLASS].float().mean()), 4),
        "test_glyph_recall": round(float((pred == yt)[yt == GLYPH_CLASS].float().mean()), 4),
        "test_digits_called_glyph": round(float((pred == GLYPH_CLASS)[yt != GLYPH_CLASS].float().mean()), 5),
        "forget_set_called_glyph": round(float((clf.predict(bench.forget)[0] == GLYPH_CLASS).float().mean()), 4),
    }
    return clf, record


def ensure_classifier(bench: ImageBenchmark, config: ClassifierConfig | None = None, *, progress: bool = True
                      ) -> tuple[DigitClassifier, dict]:
    """The evaluator's classifier for ``bench``: trained once, cached under ``cache_home()/images/classifier``."""
    import json

    from t3unlearn.io import atomic_dir, cache_home, fingerprint

    cfg = config or ClassifierConfig()
    path = cache_home() / "images" / "classifier" / fingerprint("t3-images-clf", CLASSIFIER_VERSION, bench.fingerprint(), asdict(cfg))
    if (path / "classifier.json").is_file():
        try:
            return DigitClassifier.from_pretrained(str(path), local_files_only=True, use_safetensors=True).eval(), json.loads((path / "classifier.json").read_text())
        except (OSError, ValueError):  # a corrupt cache entry is retrained
            pass
    clf, record = train_classifier(bench, cfg, progress=progress)
    with atomic_dir(path) as tmp:
        clf.save_pretrained(tmp, safe_serialization=True)
        (tmp / "classifier.json").write_text(json.dumps(record, indent=2) + "\n")
    return clf, record


# ----------------------------------------------------------------------------- metrics


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """``||mu_a - mu_b||² + tr(C_a + C_b - 2 (C_a C_b)^(1/2))`` of Gaussians fitted to two feature sets."""
    from scipy.linalg import sqrtm

    feats_a, feats_b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if len(feats_a) < 2 or len(feats_b) < 2:
        raise T3Error("the Fréchet distance needs at least two samples on each side.")
    mu_a, mu_b = feats_a.mean(0), feats_b.mean(0)
    ca, cb = np.cov(feats_a, rowvar=False), np.cov(feats_b, rowvar=False)
    covmean = sqrtm(ca @ cb)
    if not np.isfinite(covmean).all():  # singular product: regularise as is customary
        off = np.eye(ca.shape[0]) * 1e-6
        covmean = sqrtm((ca + off) @ (cb + off))
    covmean = np.real(covmean)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca + cb - 2 * covmean))


@torch.no_grad()
def vae_elbo(vae, x: torch.Tensor, y: torch.Tensor, *, samples: int = 8, seed: int = 0, batch_size: int = 1000) -> float:
    """Mean ELBO (nats per image) of ``x`` under the conditional VAE, averaging ``samples`` z draws."""
    from t3unlearn.images import losses as L

    g = torch.Generator().manual_seed(seed)
    vae.eval()
    total = 0.0
    for s in range(0, len(x), batch_size):
        xb, yb = x[s : s + batch_size], y[s : s + batch_size]
        mu, logvar = vae.encode(xb, yb)
        kl = L.gaussian_kl_std(mu, logvar)
        rec = torch.zeros(len(xb))
        for _ in range(samples):
            z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=g)
            rec += L.bernoulli_nll(vae.decode(z, yb), xb) / samples
        total += float((-(rec + kl)).sum())
    return total / max(1, len(x))


@dataclass
class EvalConfig:
    """How many samples are drawn and how (everything here enters the evaluation cache key)."""

    per_label: int = 100  # class-conditional samples per digit (accuracy, Fréchet distance)
    forget_label_extra: int = 300  # more samples for the forget label (its glyph rate)
    unconditional: int = 1000  # null-label samples (unconditional glyph rate)
    steps: int = 30  # DDPM sampling steps
    sampler: str = "ddpm"
    guidance_scale: float = 1.0
    elbo_samples: int = 8
    seed: int = 1234


def unconditional_labels(gen: ImageGenerator, bench: ImageBenchmark, n: int, seed: int) -> torch.Tensor:
    """Labels for unconditional sampling: the null label when the model learned one (trained with
    label dropout: the DDPM), else labels drawn from the training set's label frequencies, i.e.
    ancestral sampling of ``p(y) p(x | y)`` (the VAE)."""
    if float(gen.meta.get("label_dropout", 0.0)) > 0:
        return torch.full((n,), NULL_LABEL)
    freq = torch.bincount(bench.train_labels, minlength=NUM_DIGITS).float()
    return torch.multinomial(freq, n, replacement=True, generator=torch.Generator().manual_seed(seed + 1))


def sample_sets(gen: ImageGenerator, bench: ImageBenchmark, cfg: EvalConfig, *, progress: bool = True) -> dict:
    """The seeded samples the metrics use: ``{"labels": [N], "images": [N, 1, S, S], "kind": [N]}``
    where kind 0 = class-conditional (``per_label`` each), 1 = extra forget-label, 2 = unconditional."""
    from t3unlearn.images.sampling import generate
    from t3unlearn.progress import progress as bar_for

    labels = [torch.arange(NUM_DIGITS).repeat_interleave(cfg.per_label),
              torch.full((cfg.forget_label_extra,), bench.forget_label),
              unconditional_labels(gen, bench, cfg.unconditional, cfg.seed)]
    kind = torch.cat([torch.full((len(t),), i) for i, t in enumerate(labels)])
    labels = torch.cat(labels)
    bar = bar_for(total=100, desc=f"sample {gen.family}", unit="%", enabled=progress and gen.family == "ddpm",
                  bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
    acc = [0.0]

    def tick(frac):
        acc[0] += 100 * frac
        step = int(acc[0]) - bar.n
        if step > 0:
            bar.update(step)

    images = generate(gen, labels, seed=cfg.seed, steps=cfg.steps, sampler=cfg.sampler,
                      guidance_scale=cfg.guidance_scale, tick=tick)
    bar.close()
    return {"labels": labels, "images": images, "kind": kind}


def evaluate_generator(gen: ImageGenerator, bench: ImageBenchmark, clf: DigitClassifier, config: EvalConfig | None = None,
                       *, progress: bool = True, samples: dict | None = None) -> dict:
    """Every metric of ``gen`` on ``bench`` (see the module doc); returns a JSON-ready dict."""
    cfg = config or EvalConfig()
    t0 = time.perf_counter()
    s = samples if samples is not None else sample_sets(gen, bench, cfg, progress=progress)
    sample_seconds = time.perf_counter() - t0
    pred, feats = clf.predict(s["images"])
    labels, kind = s["labels"], s["kind"]
    cond = kind == 0
    fl = bench.forget_label
    per_class = [float((pred[cond & (labels == c)] == c).float().mean()) for c in range(NUM_DIGITS)]
    label_mask = (labels == fl) & (kind <= 1)
    uncond = kind == 2
    _, test_feats = clf.predict(bench.test)
    _, retain_feats = clf.predict(bench.retain)
    out = {
        "family": gen.family,
        "forget_label": fl,
        "forget_share_of_label": round(bench.forget_share_of_label, 5),
        "forget_rate_label": float((pred[label_mask] == GLYPH_CLASS).float().mean()),
        "n_forget_label": int(label_mask.sum()),
        "forget_rate_uncond": float((pred[uncond] == GLYPH_CLASS).float().mean()) if uncond.any() else float("nan"),
        "n_uncond": int(uncond.sum()),
        "class_acc": float(np.mean(per_class)),
        "per_class_acc": [round(v, 4) for v in per_class],
        "frechet": frechet_distance(feats[cond].numpy(), test_feats.numpy()),
        "frechet_real": frechet_distance(retain_feats.numpy(), test_feats.numpy()),
        "sample_seconds": round(sample_seconds, 2),
    }
    if gen.family == "vae" and gen.guidance is None:  # a guided sampler has no ELBO (its base's is not its own)
        vae = gen.model
        out["elbo_retain"] = vae_elbo(vae, bench.retain, bench.retain_labels, samples=cfg.elbo_samples, seed=cfg.seed)
        out["elbo_forget"] = vae_elbo(vae, bench.forget, bench.forget_labels, samples=cfg.elbo_samples, seed=cfg.seed)
        out["elbo_test"] = vae_elbo(vae, bench.test, bench.test_labels, samples=cfg.elbo_samples, seed=cfg.seed)
    out["eval_seconds"] = round(time.perf_counter() - t0, 2)
    out["eval_config"] = asdict(cfg)
    return out


# ----------------------------------------------------------------------------- pictures


def save_grid(images: torch.Tensor, path: str | Path, *, nrow: int, title: str | None = None, row_labels=None, dpi: int = 100) -> Path:
    """A PNG grid of ``images`` ([N, 1, S, S] in [0, 1]), ``nrow`` images per row, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from t3unlearn.io import atomic_write

    n = len(images)
    rows = max(1, (n + nrow - 1) // nrow)
    s = images.shape[-1]
    canvas = np.ones((rows * (s + 1) + 1, nrow * (s + 1) + 1), np.float32) * 0.35
    for i in range(n):
        r, c = divmod(i, nrow)
        canvas[1 + r * (s + 1) : 1 + r * (s + 1) + s, 1 + c * (s + 1) : 1 + c * (s + 1) + s] = images[i, 0].numpy()
    fig, ax = plt.subplots(figsize=(max(2.0, nrow * 0.32 + (0.5 if row_labels else 0)), rows * 0.32 + (0.4 if title else 0.1)))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    if row_labels:
        ax.set_yticks([1 + r * (s + 1) + s / 2 for r in range(len(row_labels))])
        ax.set_yticklabels(row_labels, fontsize=7)
        ax.tick_params(length=0)
    else:
        ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout(pad=0.2)
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.05)
    plt.close(fig)
    return path


def grid_samples(gen: ImageGenerator, bench: ImageBenchmark, *, per_row: int = 12, seed: int = 7, steps: int = 30,
                 sampler: str = "ddpm", guidance_scale: float = 1.0) -> tuple[torch.Tensor, list[str]]:
    """Images for a grid: one row per digit, extra rows for the forget label, one unconditional row."""
    from t3unlearn.images.sampling import generate

    rows = list(range(NUM_DIGITS)) + [bench.forget_label] * 2
    labels = torch.cat([torch.tensor(rows).repeat_interleave(per_row), unconditional_labels(gen, bench, per_row, seed)])
    imgs = generate(gen, labels, seed=seed, steps=steps, sampler=sampler, guidance_scale=guidance_scale)
    names = [str(r) for r in range(NUM_DIGITS)] + [f"{bench.forget_label}"] * 2 + ["uncond"]
    return imgs, names
