"""Unlearning methods: one registry (:mod:`t3unlearn.methods.registry`) for language models and images.

    from t3unlearn.methods import get, names, register, unregister, Method
    get("npo").run(model, forget, retain, out="npo")      # -> UnlearnResult

Importing this package registers the language-model methods (:mod:`t3unlearn.methods.lm`); the image
methods register when :mod:`t3unlearn.images.methods` is imported.
"""

from t3unlearn.methods import lm as _lm  # noqa: F401  (registers t3, cg, uld and the fine-tuning baselines)
from t3unlearn.methods.registry import KINDS, STYLES, Method, get, names, register, unregister

__all__ = ["KINDS", "STYLES", "Method", "get", "names", "register", "unregister"]
