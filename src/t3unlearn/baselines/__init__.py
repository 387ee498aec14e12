"""Baselines for machine unlearning, and the comparison against T3.

Fine-tuning baselines (change the weights): GradAscent, GradDiff, NPO, SimNPO, IdkDPO, RMU and
the Retrain oracle — one trainer (:mod:`.trainer`), one loss function per method
(:mod:`.losses`, :mod:`.methods`). Inference-time peers (frozen base, like T3): classifier
guidance (T3 with T = 1, via :mod:`t3unlearn.t3`) and logit-difference unlearning
(:class:`ULDForCausalLM`). ``t3unlearn compare`` runs, evaluates and tabulates them all.

Public API (imported lazily, so ``import t3unlearn.baselines`` does not import torch)::

    unlearn_baseline(method, model, forget, retain, out, params=..., config=...)  -> UnlearnResult
    train_uld(model, forget, retain, out, params=..., config=...)                 -> UnlearnResult
    ULDForCausalLM.from_pretrained(dir)
    compare(benchmark="world", split="forget10", methods=[...], seeds=3, out=DIR)
    METHODS, BaselineConfig, train(...)
"""

from __future__ import annotations

from t3unlearn.lazy import lazy_exports

_EXPORTS = {
    "unlearn_baseline": "t3unlearn.baselines.api",
    "train_uld": "t3unlearn.baselines.api",
    "save_model": "t3unlearn.baselines.api",
    "ULDForCausalLM": "t3unlearn.baselines.uld",
    "uld_logits": "t3unlearn.baselines.uld",
    "METHODS": "t3unlearn.baselines.methods",
    "get_method": "t3unlearn.baselines.methods",
    "BaselineConfig": "t3unlearn.baselines.trainer",
    "UnlearnResult": "t3unlearn.results",
    "train": "t3unlearn.baselines.trainer",
    "compare": "t3unlearn.experiments.compare",
    "load_compare_config": "t3unlearn.experiments.compare",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
