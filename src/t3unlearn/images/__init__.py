"""Unlearning for image generative models: DDPMs and VAEs, SISS and Adaptive-λ SISS.

- :mod:`~t3unlearn.images.data`: the offline augmented-digits benchmark (MNIST digits + a
  generated trousers-like forget glyph family labelled "1");
- :mod:`~t3unlearn.images.models`: a class-conditional diffusers DDPM (``UNet2DModel`` +
  ``DDPMScheduler``) and a conditional VAE; :mod:`~t3unlearn.images.sampling`: their samplers;
- :mod:`~t3unlearn.images.losses`: the methods' math as pure functions;
  :mod:`~t3unlearn.images.objectives`: per-family per-sample losses;
  :mod:`~t3unlearn.images.methods`: naive deletion, NegGrad, NegGrad+, SISS, Adaptive-λ SISS;
  :mod:`~t3unlearn.images.trainer`: the one trainer (training and unlearning);
- :mod:`~t3unlearn.images.evaluator`: the classifier, metrics, grids; :mod:`~t3unlearn.experiments.images`:
  the multi-seed comparison; :mod:`~t3unlearn.images.api`: cached units.

See ``docs/images.md``. Heavy imports (torch, diffusers) happen on first attribute access.
"""

from t3unlearn.lazy import lazy_exports

_LAZY = {
    "ImageBenchmark": "t3unlearn.images.data",
    "ensure_benchmark": "t3unlearn.images.data",
    "ImageGenerator": "t3unlearn.images.models",
    "ConditionalVAE": "t3unlearn.images.models",
    "generate": "t3unlearn.images.sampling",
    "train_generator": "t3unlearn.images.trainer",
    "unlearn": "t3unlearn.images.trainer",
    "METHODS": "t3unlearn.images.methods",
    "get_method": "t3unlearn.images.methods",
    "evaluate_generator": "t3unlearn.images.evaluator",
    "ensure_generator": "t3unlearn.images.api",
    "ensure_evaluator": "t3unlearn.images.api",
    "unlearn_cached": "t3unlearn.images.api",
    "evaluate_cached": "t3unlearn.images.api",
    "compare": "t3unlearn.experiments.images",
}

__all__ = list(_LAZY)


__getattr__ = lazy_exports(__name__, _LAZY)
