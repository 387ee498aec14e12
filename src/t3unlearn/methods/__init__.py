"""Unlearning methods: one registry (:mod:`t3unlearn.methods.registry`) for language models and images.

    from t3unlearn.methods import get, names, register, unregister, Method
    get("npo").run(model, forget, retain, out="npo")      # -> UnlearnResult

Reading any of these names registers the language-model methods (:mod:`t3unlearn.methods.lm`) first; the image
methods register when :mod:`t3unlearn.images.methods` is imported. The registration is deferred to that first
read because the baselines' own module builds its methods with :class:`~t3unlearn.methods.registry.Method`:
importing it first must not run the registration that reads it (every module imports first: tests/test_house.py).
"""

__all__ = ["KINDS", "STYLES", "Method", "get", "names", "register", "unregister"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module 't3unlearn.methods' has no attribute {name!r}")
    from t3unlearn.methods import lm  # noqa: F401  (registers t3, cg, uld and the fine-tuning baselines)
    from t3unlearn.methods import registry

    return getattr(registry, name)
