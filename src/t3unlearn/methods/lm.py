"""The language-model methods in the registry: T3 and classifier guidance (a head over the frozen model), ULD
(an assistant whose logits are subtracted) and the fine-tuning baselines (:mod:`t3unlearn.baselines.methods`).

Each one's :attr:`~t3unlearn.methods.Method.run` has the same signature and returns an
:class:`~t3unlearn.results.UnlearnResult`::

    run(model, forget, retain, out=None, *, tokenizer=None, params=None, config=None, seed=None,
        progress=True, loading=None, **extra)

``model``: a directory / hub id, or an in-memory model with its ``tokenizer``; ``params``: the method's own
settings (its ``defaults``); ``config``: the optimisation's; ``out``: where to save it (None: not saved);
``loading``: model-loading keywords for a model given by path; ``extra``: method-specific keywords (T3:
``cache``, ``max_length``, ``request_id`` ...; the fine-tuning methods: ``idk``).
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

from t3unlearn.baselines.methods import FINETUNE_METHODS, METHODS as BASELINES
from t3unlearn.methods.registry import Method, register
from t3unlearn.t3.config import defaults as t3_defaults


def run_t3(model, forget, retain, out=None, *, tokenizer=None, params=None, config=None, seed=None, progress=True,
           loading=None, name: str = "t3", **extra):
    """T3: train a head on ``model``'s hidden states (the model stays frozen); ``params`` and ``config`` are
    :func:`t3unlearn.t3.unlearn`'s settings (guidance and head training, by name)."""
    from t3unlearn.baselines.api import load_base
    from t3unlearn.t3.train import unlearn

    base, tok = load_base(model, tokenizer, loading)
    settings = {**(config or {}), **(params or {}), **({} if seed is None else {"seed": seed})}
    result = unlearn(base, tok, forget, retain, progress=progress, **settings, **extra)
    if out is not None:
        result.model.save_pretrained(out)
        result.out = Path(out)
    result.method = name
    return result


def run_cg(model, forget, retain, out=None, *, params=None, **kw):
    """Classifier guidance: T3's head at temperature 1 (unless ``params`` says otherwise)."""
    return run_t3(model, forget, retain, out, params={"temperature": 1.0, **(params or {})}, name="cg", **kw)


def _seeded(config: dict | None, seed: int | None) -> dict:
    return {**(config or {}), **({} if seed is None else {"seed": seed})}


def run_uld(model, forget, retain, out=None, *, tokenizer=None, params=None, config=None, seed=None, progress=True,
            loading=None):
    """ULD: train a small assistant on the forget set; the model serves ``base - alpha * assistant``."""
    from t3unlearn.baselines.api import train_uld

    return train_uld(model, forget, retain, out, tokenizer=tokenizer, params=params, config=_seeded(config, seed),
                     progress=progress, loading=loading)


def run_finetune(name: str, model, forget, retain, out=None, *, tokenizer=None, params=None, config=None, seed=None,
                 progress=True, loading=None, idk=None):
    """A fine-tuning baseline ``name`` (its loss in :mod:`t3unlearn.baselines.methods`, one trainer)."""
    from t3unlearn.baselines.api import unlearn_baseline

    return unlearn_baseline(name, model, forget, retain, out, tokenizer=tokenizer, params=params,
                            config=_seeded(config, seed), idk=idk, progress=progress, loading=loading)


def _register_all() -> None:
    t3 = t3_defaults()
    register(Method("t3", "lm", "temper, then tilt: a head on the frozen model's hidden states guides p^(1/T) f^s",
                    t3, run_t3, title="T3", style="guidance"))
    register(Method("cg", "lm", "classifier guidance: T3's head at T = 1", {**t3, "temperature": 1.0}, run_cg,
                    title="Classifier guidance", style="guidance"))
    register(replace(BASELINES["uld"], run=run_uld))
    for name in FINETUNE_METHODS:
        register(replace(BASELINES[name], run=partial(run_finetune, name)))


_register_all()

__all__ = ["run_cg", "run_finetune", "run_t3", "run_uld"]
