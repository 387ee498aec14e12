"""Temper-Then-Tilt: a frozen causal LM, tempered by T and tilted by a small classifier head.

    from t3unlearn.t3 import unlearn
    t3, report = unlearn(model, tokenizer, "world:forget10", "world:retain90")
    t3.save_pretrained("head")          # head.safetensors + t3_config.json only

Submodules: ``head`` (the classifier), ``features`` (pooled hidden states, cached once),
``train`` (head training, :func:`unlearn`), ``model`` (:class:`T3ForCausalLM`), ``cli``.
Imports are lazy so that ``t3unlearn --help`` never loads torch.
"""

from t3unlearn.lazy import lazy_exports

_LAZY = {
    "unlearn": "t3unlearn.t3.train",
    "T3Result": "t3unlearn.t3.train",
    "TrainConfig": "t3unlearn.t3.config",
    "Guidance": "t3unlearn.t3.config",
    "guided_logits": "t3unlearn.t3.guidance",
    "train_head": "t3unlearn.t3.train",
    "evaluate_head": "t3unlearn.t3.train",
    "T3ForCausalLM": "t3unlearn.t3.model",
    "T3Config": "t3unlearn.t3.config",
    "T3Cache": "t3unlearn.t3.model",
    "GuidanceHead": "t3unlearn.t3.head",
    "extract_features": "t3unlearn.t3.feature_cache",
    "FeatureSet": "t3unlearn.t3.features",
}

__all__ = list(_LAZY)


__getattr__ = lazy_exports(__name__, _LAZY)
