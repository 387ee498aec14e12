"""Logit-difference unlearning in the manner of ULD (Ji et al., 2024).

An *assistant* model is trained to do the opposite of unlearning: remember the forget set
(NLL on forget answers) and know nothing about the retain set (its next-token distribution
pushed to uniform on retain answers, ``KL(U || p)``). At inference the frozen base's
log-probabilities are corrected by subtracting the assistant's:

    logits = log_softmax( log_softmax(base) - alpha * log_softmax(assistant) )

On retain data the assistant is (near) uniform, so the subtraction is a constant and the
base's distribution is unchanged; on forget data the assistant is confident about the
forgotten answer, and those tokens are pushed down.

Our assistant is a *smaller copy* of the model being unlearned: its first ``k`` blocks
(default half of them) plus the embeddings, final norm and LM head, initialized from the
model's weights and fully fine-tuned (the paper uses a few-layer copy with LoRA).

:class:`ULDForCausalLM` is a ``transformers`` causal LM: its ``forward`` returns the combined
logits and it works with ``generate()`` (a :class:`ULDCache` holds both models' KV caches).
Saved as a directory: ``uld_config.json`` (base path, alpha) + ``assistant/`` (a transformers
model in safetensors) — :func:`t3unlearn.lm.load_lm` loads it like any model.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from t3unlearn.errors import ModelError, T3Error

CONFIG_NAME = "uld_config.json"
# what a baseline's output directory holds, one or the other: baselines.api's META_NAME, or ULD's config
OUTPUT_MARKERS = ("t3unlearn_baseline.json", CONFIG_NAME)
ASSISTANT_DIR = "assistant"


def uld_logits(base_logits: torch.Tensor, assistant_logits: torch.Tensor, alpha: float) -> torch.Tensor:
    """``log_softmax(log_softmax(base) - alpha * log_softmax(assistant))`` (normalized log-probs)."""
    if base_logits.shape[-1] != assistant_logits.shape[-1]:
        raise ModelError(
            f"the ULD assistant's vocabulary ({assistant_logits.shape[-1]}) differs from the base's ({base_logits.shape[-1]})."
        )
    combined = torch.log_softmax(base_logits.float(), -1) - alpha * torch.log_softmax(assistant_logits.float(), -1)
    return torch.log_softmax(combined, -1)


class ULDCache:
    """The base's and the assistant's KV caches, carried through ``generate()`` as one object."""

    is_compileable = False
    is_croppable = False

    def __init__(self, base=None, assistant=None):
        self.base = base
        self.assistant = assistant

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0 if self.base is None else self.base.get_seq_length()

    def reorder_cache(self, beam_idx):  # beam search
        for c in (self.base, self.assistant):
            if c is not None:
                c.reorder_cache(beam_idx)
        return self


class ULDConfig(PretrainedConfig):
    model_type = "t3unlearn_uld"

    def __init__(self, base_model: str | None = None, alpha: float = 1.0, assistant: str = ASSISTANT_DIR, **kwargs):
        self.base_model = base_model
        self.alpha = float(alpha)
        self.assistant = assistant
        super().__init__(**kwargs)


class ULDForCausalLM(PreTrainedModel, GenerationMixin):
    """A frozen base minus ``alpha`` times an assistant, in log-probability space."""

    config_class = ULDConfig
    base_model_prefix = "uld"
    _supports_cache_class = False

    def __init__(self, config: ULDConfig, base=None, assistant=None):
        super().__init__(config)
        if base is None or assistant is None:
            raise ModelError("ULDForCausalLM needs a base and an assistant model; load one with ULDForCausalLM.from_pretrained(DIR).")
        self.base = base
        self.assistant = assistant
        self.generation_config = copy.deepcopy(base.generation_config) if getattr(base, "generation_config", None) else self.generation_config

    @classmethod
    def from_models(cls, base, assistant, *, alpha: float = 1.0, base_path: str | None = None) -> "ULDForCausalLM":
        bc = base.config
        config = ULDConfig(
            base_model=str(base_path) if base_path else getattr(bc, "_name_or_path", None),
            alpha=alpha,
            vocab_size=getattr(bc, "vocab_size", None),
            bos_token_id=getattr(bc, "bos_token_id", None),
            eos_token_id=getattr(bc, "eos_token_id", None),
            pad_token_id=getattr(bc, "pad_token_id", None),
        )
        return cls(config, base=base, assistant=assistant).eval()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:  # we bring our own (two) caches
        return False

    def _init_weights(self, module):  # both halves come pretrained
        pass

    @property
    def alpha(self) -> float:
        return float(self.config.alpha)

    def get_input_embeddings(self):
        return self.base.get_input_embeddings()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        use_cache=None,
        labels=None,
        return_dict=True,
        cache=None,
        **kwargs,
    ):
        from t3unlearn.lm import cache_kwarg, output_cache

        key = cache_kwarg()  # transformers' name for the cache ("cache", formerly "past_key_values")
        given = cache if cache is not None else past_key_values
        caching = bool(use_cache) or given is not None
        cache = given if isinstance(given, ULDCache) else ULDCache()
        common = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=caching)
        b = self.base(**common, **{key: cache.base if caching else None})
        a = self.assistant(**common, **{key: cache.assistant if caching else None})
        logits = uld_logits(b.logits, a.logits, self.alpha)
        loss = None
        if labels is not None:  # mean NLL of the labelled tokens
            from t3unlearn.lm import answer_token_logprobs

            lp, mask = answer_token_logprobs(logits, labels.to(logits.device))
            loss = -lp.sum() / mask.sum().clamp_min(1)
        if caching:
            cache.base, cache.assistant = output_cache(b), output_cache(a)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{key: cache if caching else None})

    # ------------------------------------------------------------------ save / load
    @staticmethod
    def base_model_path(path: str) -> str:
        """The base model path a saved ULD directory refers to (resolved against the directory)."""
        from t3unlearn.io import load_json

        cfg = load_json(Path(path) / CONFIG_NAME)
        base = cfg.get("base_model")
        if not base:
            raise ModelError(f"{Path(path) / CONFIG_NAME} names no base_model.")
        p = Path(base).expanduser()
        if not p.is_absolute() and (Path(path) / p).exists():
            p = Path(path) / p
        return str(p) if p.exists() else base

    def save_pretrained(self, save_directory, **kwargs):  # noqa: D401 - transformers' name
        """Write ``uld_config.json`` + ``assistant/`` (safetensors) atomically; the base is referenced, not copied."""
        from t3unlearn.io import atomic_dir, save_json

        if not self.config.base_model:
            raise T3Error("this ULD model does not know its base's path; build it with from_models(..., base_path=PATH).")
        with atomic_dir(save_directory, marker=OUTPUT_MARKERS, what="a baseline's output") as tmp:
            self.assistant.save_pretrained(tmp / ASSISTANT_DIR, safe_serialization=True)
            save_json(
                tmp / CONFIG_NAME,
                {
                    "format": "t3unlearn-uld",
                    "version": 1,
                    "base_model": str(self.config.base_model),
                    "assistant": ASSISTANT_DIR,
                    "alpha": self.alpha,
                    "combination": "log_softmax(log_softmax(base) - alpha * log_softmax(assistant))",
                    **kwargs.get("extra", {}),
                },
            )
        return str(save_directory)

    @classmethod
    def from_pretrained(cls, path, *, alpha: float | None = None, device=None, **loading_kwargs) -> "ULDForCausalLM":
        """A saved ULD directory; ``loading_kwargs`` (``dtype``, ``device_map``, ...) go to transformers for the
        base and the assistant; any other keyword is an error."""
        from t3unlearn.io import load_json
        from t3unlearn.lm import load_base, split_loading_kwargs

        split_loading_kwargs(loading_kwargs, "ULDForCausalLM.from_pretrained", others=("alpha",))

        path = Path(path)
        if not (path / CONFIG_NAME).is_file():
            raise ModelError(f"{path} holds no {CONFIG_NAME}; it is not a saved ULD model.")
        cfg = load_json(path / CONFIG_NAME)
        base_path = cls.base_model_path(str(path))
        asst_path = path / cfg.get("assistant", ASSISTANT_DIR)
        if not Path(base_path).exists():
            raise ModelError(f"the ULD base model {base_path} (from {path / CONFIG_NAME}) does not exist; rebuild or move it back.")
        if not asst_path.is_dir():
            raise ModelError(f"{asst_path} is missing: the ULD directory {path} is incomplete.")
        base = load_base(base_path, device=device, **loading_kwargs)
        assistant = load_base(str(asst_path), device=device, **loading_kwargs)
        uld = cls.from_models(base, assistant, alpha=cfg.get("alpha", 1.0) if alpha is None else alpha, base_path=base_path)
        return uld if device is None else uld.to(device)


# ----------------------------------------------------------------------------- the assistant


def assistant_layer_count(model, spec) -> int:
    from t3unlearn.baselines.methods import num_layers

    n = num_layers(model)
    if spec in (None, "half", "auto"):
        return max(1, n // 2)
    if spec == "all":
        return n
    k = int(spec)
    if not 1 <= k <= n:
        raise T3Error(f"assistant_layers must be between 1 and {n} (the model's depth), or 'half' / 'all'; got {spec}.")
    return k


def make_assistant(model, layers="half"):
    """A copy of ``model`` keeping its first ``layers`` blocks (weights copied, rest dropped)."""
    from transformers import AutoModelForCausalLM

    k = assistant_layer_count(model, layers)
    cfg = copy.deepcopy(model.config)
    cfg.num_hidden_layers = k
    if isinstance(getattr(cfg, "layer_types", None), list):
        cfg.layer_types = cfg.layer_types[:k]
    assistant = AutoModelForCausalLM.from_config(cfg)
    target = assistant.state_dict()
    source = {name: t for name, t in model.state_dict().items() if name in target and target[name].shape == t.shape}
    missing = [n for n in target if n not in source]
    assistant.load_state_dict(source, strict=False)
    if any(not n.endswith("rotary_emb.inv_freq") for n in missing if "lm_head" not in n or not getattr(cfg, "tie_word_embeddings", False)):
        raise ModelError(f"could not initialize the ULD assistant from the model: missing {missing[:5]}.")
    return assistant.to(next(model.parameters()).dtype).eval()
