"""Measurement beyond the evaluator's classifier: a second forget detector, intervals, large-sample rates.

- :class:`GeometryDetector`: a forget detector that does not use the classifier. The forget glyphs are
  filled silhouettes (a waistband and two legs, ``data.render_glyph``); the forget label's digits are
  strokes. The detector reads the ink area (pixels above ``ink``) and calls an image a glyph above a
  threshold set from real data: midway between the 99th percentile of the real forget-label digits'
  area and the 1st percentile of a glyph draw's (the classifier's training draw, never the forget set),
  its error rates measured on the held-out draw (``clf_test``).
- :func:`t_interval` (a 95 % Student-t interval over seeds) and :func:`binomial_interval` (a 95 %
  Wilson interval for a rate from n samples: the sampling floor of one model's rate), from ``scipy.stats``.
- :func:`measure_generator`: the forget rates (classifier and geometry) from many samples of the forget
  label, class accuracy and the Fréchet distance (classifier features) from class-conditional samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from t3unlearn.errors import T3Error
from t3unlearn.images.data import GLYPH_CLASS, NUM_DIGITS


def ink_area(images: torch.Tensor, ink: float = 0.35) -> torch.Tensor:
    """The share of pixels above ``ink`` per image (``[N, 1, S, S]`` in [0, 1]) -> ``[N]``."""
    return (images > ink).float().flatten(1).mean(1)


@dataclass
class GeometryDetector:
    threshold: float
    ink: float
    false_positive_rate: float  # held-out real forget-label digits called glyphs
    true_positive_rate: float  # held-out glyphs called glyphs

    @classmethod
    def fit(cls, bench, ink: float = 0.35) -> "GeometryDetector":
        fl = bench.forget_label
        tr, trl = bench.clf_train, bench.clf_train_labels
        te, tel = bench.clf_test, bench.clf_test_labels
        digits, glyphs = ink_area(tr[trl == fl], ink), ink_area(tr[trl == GLYPH_CLASS], ink)
        if len(digits) == 0 or len(glyphs) == 0:
            raise T3Error("the geometry detector needs real forget-label digits and a glyph draw in the benchmark.")
        hi, lo = float(torch.quantile(digits, 0.99)), float(torch.quantile(glyphs, 0.01))
        thr = 0.5 * (hi + lo)
        fpr = float((ink_area(te[tel == fl], ink) > thr).float().mean())
        tpr = float((ink_area(te[tel == GLYPH_CLASS], ink) > thr).float().mean())
        return cls(thr, ink, fpr, tpr)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return ink_area(images, self.ink) > self.threshold


def t_interval(values) -> tuple[float, float]:
    """``(mean, half-width)`` of the 95 % Student-t interval over ``values`` (half-width nan for one value)."""
    from scipy import stats

    v = np.asarray(list(values), dtype=float)
    if len(v) == 0:
        raise T3Error("no values to summarise.")
    if len(v) == 1:
        return float(v[0]), float("nan")
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def binomial_interval(k: int, n: int) -> tuple[float, float]:
    """The 95 % Wilson interval of a rate ``k / n``."""
    from scipy import stats

    ci = stats.binomtest(int(k), int(n)).proportion_ci(0.95, method="wilson")
    return float(ci.low), float(ci.high)


def measure_generator(gen, bench, clf, detector: GeometryDetector, *, n_forget: int = 5000, per_label: int = 100,
                      seed: int = 4321, steps: int = 30) -> dict:
    """Forget rates (classifier, geometry) from ``n_forget`` samples of the forget label; class accuracy and the
    Fréchet distance (classifier features, vs the held-out digits) from ``per_label`` samples of each digit."""
    from t3unlearn.images.evaluator import frechet_distance
    from t3unlearn.images.sampling import generate

    fl = bench.forget_label
    imgs = generate(gen, torch.full((n_forget,), fl), seed=seed, steps=steps)
    pred, _ = clf.predict(imgs)
    k_clf, k_geo = int((pred == GLYPH_CLASS).sum()), int(detector(imgs).sum())
    labels = torch.arange(NUM_DIGITS).repeat_interleave(per_label)
    cond = generate(gen, labels, seed=seed + 1, steps=steps)
    pred_c, feats = clf.predict(cond)
    _, test_feats = clf.predict(bench.test)
    acc = float(np.mean([float((pred_c[labels == c] == c).float().mean()) for c in range(NUM_DIGITS)]))
    return {"n_forget": n_forget, "forget_clf": k_clf / n_forget, "forget_geo": k_geo / n_forget,
            "k_clf": k_clf, "k_geo": k_geo, "class_acc": acc,
            "frechet": frechet_distance(feats.numpy(), test_feats.numpy()), "per_label": per_label}


def frechet_floor(bench, clf, n: int, repeats: int = 5, seed: int = 0) -> tuple[float, float]:
    """The Fréchet distance of ``n`` real retain digits (resampled ``repeats`` times) to the held-out digits:
    ``(mean, sd)``, what a perfect generator would score at this sample size."""
    from t3unlearn.images.evaluator import frechet_distance

    _, test_feats = clf.predict(bench.test)
    _, feats = clf.predict(bench.retain)
    g = torch.Generator().manual_seed(seed)
    vals = [frechet_distance(feats[torch.randint(0, len(feats), (n,), generator=g)].numpy(), test_feats.numpy())
            for _ in range(repeats)]
    return float(np.mean(vals)), float(np.std(vals, ddof=1))
