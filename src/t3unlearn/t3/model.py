"""The guided model: a frozen causal LM tempered by ``T`` and tilted by the guidance head.

    logits = log_softmax(base_logits) / T + s * logsigmoid(head(pooled hidden states))

:class:`T3ForCausalLM` is a ``transformers`` ``PreTrainedModel`` + ``GenerationMixin``: stock
``generate()`` works (greedy, sampling, top-k/top-p, beams, several return sequences, batched
left-padded prompts, streamers). Its KV cache, :class:`T3Cache`, also carries per sequence the
running sum of the base's final hidden states and the token count, so a decoding step costs one
base step plus one small head product. Saved like an adapter: ``head.safetensors`` and
``t3_config.json`` only; the base is referenced by name or path.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.dataclasses import strict
from transformers import DynamicCache, GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from t3unlearn.errors import ModelError, T3Error
from t3unlearn.lm import load_base, split_loading_kwargs
from t3unlearn.t3.config import (CONFIG_NAME, FORMAT, FORMAT_VERSION, GUIDANCE_KNOBS, HEAD_NAME, LAYER, POOLING, Guidance,
                                 config_from_v1,
                                 TrainConfig)
from t3unlearn.t3.feature_cache import _readable
from t3unlearn.t3.features import decoder_of, hidden_size_of, pool_prefix, vocab_size_of
from t3unlearn.t3.guidance import guided_logits, seen_tokens
from t3unlearn.t3.head import ACTIVATIONS, NO_SUPPORT, GuidanceHead, SupportGate, check_head_shape


def tokenizer_hash(tokenizer) -> str:
    """Short hash of a tokenizer's vocabulary (token -> id)."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]



@strict
class T3Config(PreTrainedConfig):
    """Configuration of a T3 head over a base model; its T3 fields are the content of ``t3_config.json``."""

    model_type = "t3"

    t3_temperature: float = Guidance.temperature
    t3_scale: float = Guidance.scale
    t3_tempering: str = Guidance.tempering
    t3_tail_logp: float | None = Guidance.tail_logp
    t3_bias: float = Guidance.bias
    t3_support: float | None = Guidance.support
    t3_floor: float | None = Guidance.floor
    t3_copy_floor: float | None = Guidance.copy_floor
    t3_piece_floor: float | None = Guidance.piece_floor
    t3_spelling: str = Guidance.spelling
    head_hidden: int = TrainConfig.hidden_size
    head_activation: str = TrainConfig.activation
    head_layers: int = TrainConfig.layers
    pooling: str = POOLING
    layer: str = LAYER
    base_model_name_or_path: str | None = None
    base_hidden_size: int = 0
    vocab_size: int = 0
    tokenizer_hash: str | None = None
    training: dict | None = None
    metrics: dict | None = None
    calibration: dict | None = None
    requests: list | None = None  # the deletion requests the head covers, in order (see t3unlearn.t3.requests)
    retain_set: dict | None = None  # the retain set it was trained with (same record format)
    use_cache: bool = True

    # the fields written to t3_config.json, in this order
    FILE_FIELDS = (*(f"t3_{k}" for k in GUIDANCE_KNOBS), "head_hidden", "head_activation", "head_layers", "pooling", "layer", "base_model_name_or_path",
                   "base_hidden_size", "vocab_size", "tokenizer_hash", "training", "metrics", "calibration",
                   "requests", "retain_set")

    @property
    def guidance(self) -> Guidance:
        """The saved guidance (its ``t3_*`` fields) as a :class:`Guidance`."""
        return Guidance(**{k: getattr(self, f"t3_{k}") for k in GUIDANCE_KNOBS})

    def set_guidance(self, g: Guidance) -> None:
        for k in GUIDANCE_KNOBS:
            setattr(self, f"t3_{k}", getattr(g, k))

    # ------------------------------------------------------------------ the file
    def file_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **{k: getattr(self, k) for k in self.FILE_FIELDS}}

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_NAME
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(self.file_dict(), fh, indent=2, ensure_ascii=False)
            fh.write("\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "T3Config":
        """Read and check ``DIR/t3_config.json``; a missing, corrupt or inconsistent file is a ModelError."""
        path = Path(directory)
        cfg_path = path / CONFIG_NAME
        if not path.is_dir():
            raise ModelError(f"{path} is not a directory; give the directory a T3 head was saved to (it holds {CONFIG_NAME}).")
        if not cfg_path.is_file():
            raise ModelError(f"{path} holds no {CONFIG_NAME}; it is not a saved T3 head (run 't3unlearn unlearn --out {path}').")
        try:
            data = json.loads(cfg_path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError(f"format is {data.get('format') if isinstance(data, dict) else type(data).__name__!r}, not {FORMAT!r}")
            if data.get("format_version") == 1:
                data = config_from_v1(data)
            values = {k: data[k] for k in cls.FILE_FIELDS if k in data}
            cfg = cls(**values)
            cfg.guidance  # noqa: B018 - validates T, s, tempering, tail, bias
            if cfg.head_activation not in ACTIVATIONS:
                raise ValueError(f"unknown head activation {cfg.head_activation!r}")
            check_head_shape(cfg.base_hidden_size, cfg.head_hidden, cfg.vocab_size, cfg.head_activation, cfg.head_layers)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{cfg_path} is corrupt or not a T3 config ({type(exc).__name__}: {exc}); save the head again.") from None
        return cfg


class T3Cache(DynamicCache):
    """A ``DynamicCache`` that also keeps, per sequence, the running sum of the base's final hidden states (``t3_sum``,
    ``(B, d)`` float32), the number of non-padding tokens seen (``t3_count``, ``(B,)``) and the tokens the context
    holds (``t3_seen``, ``(B, V)`` bool: the copy exemption). Beam reordering and batch selection move them too."""

    _T3_STATE = ("t3_sum", "t3_count", "t3_seen")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.t3_sum = self.t3_count = self.t3_seen = None

    def reset(self):
        super().reset()
        self.t3_sum = self.t3_count = self.t3_seen = None

    def _move(self, fn) -> None:
        for name in self._T3_STATE:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, fn(value))

    def reorder_cache(self, beam_idx: torch.LongTensor):
        super().reorder_cache(beam_idx)
        self._move(lambda v: v.index_select(0, beam_idx.to(v.device)))

    def batch_select_indices(self, indices: torch.Tensor):
        super().batch_select_indices(indices)
        self._move(lambda v: v[indices.to(v.device)])

    def batch_repeat_interleave(self, repeats: int):
        super().batch_repeat_interleave(repeats)
        self._move(lambda v: v.repeat_interleave(repeats, dim=0))

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError(
            "T3Cache cannot be cropped: the pooled hidden-state sum does not keep per-position history "
            "(assisted / speculative decoding is not supported with T3ForCausalLM)."
        )


class _HiddenRecorder:
    """Forward hook on the base's decoder: records its output while the T3 model's forward runs.

    It shares only the T3 model's small runtime dict (not the model: a base outliving its T3
    wrapper does not keep the head alive, and ``copy.deepcopy`` of the T3 model stays wired)."""

    def __init__(self, rt: dict):
        self.rt = rt

    def __call__(self, module, args, output):
        if self.rt["capturing"]:
            self.rt["captured"].append(output)


class T3ForCausalLM(PreTrainedModel, GenerationMixin):
    """Frozen base causal LM + guidance head; see the module doc.

    Build one with :func:`t3unlearn.t3.unlearn`, :meth:`from_pretrained` (a saved head directory)
    or :meth:`from_base` (a base model already in memory plus a head directory)."""

    config_class = T3Config
    base_model_prefix = "t3"
    main_input_name = "input_ids"
    _supports_cache_class = True
    _is_stateful = False

    def __init__(self, config: T3Config, base_model, head: GuidanceHead | None = None):
        guidance = config.guidance  # validates T, s, tempering, tail, bias
        super().__init__(config)
        # base first: .dtype / .device of the guided model are the base's
        self.base = base_model
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.base.eval()
        d, vocab = hidden_size_of(base_model), vocab_size_of(base_model)
        if head is None:
            head = GuidanceHead(d, config.head_hidden, vocab, activation=config.head_activation, layers=config.head_layers)
        if head.in_features != d or head.vocab_size != vocab:
            raise ModelError(
                f"the head expects hidden size {head.in_features} and vocabulary {head.vocab_size}, "
                f"but the base model has hidden size {d} and vocabulary {vocab}; it was trained on another base."
            )
        # beside the base's output layer: where its logits (and, under a device_map spanning devices, the last
        # hidden states) are
        out_emb = base_model.get_output_embeddings()
        head_device = out_emb.weight.device if out_emb is not None else next(base_model.parameters()).device
        self.head = head.to(device=head_device, dtype=torch.float32)
        _check_head(self.head, guidance)
        config.base_hidden_size, config.vocab_size = d, vocab
        config.head_hidden, config.head_activation, config.head_layers = head.hidden, head.activation, head.layers
        # not registered as a submodule (it is inside self.base already): no duplicate state-dict keys
        self.__dict__["_decoder"] = decoder_of(base_model)
        # runtime state in a plain dict: module and config attribute access is slow per decoding step
        self._rt = {"captured": [], "capturing": False, "guidance": guidance}
        # the decoder's output (final hidden states, after the final norm) is read through a hook
        # that records only while this model's forward runs
        self._hook = self._decoder.register_forward_hook(_HiddenRecorder(self._rt))
        gen = getattr(base_model, "generation_config", None)
        if gen is not None:
            self.generation_config = copy.deepcopy(gen)
        self.name_or_path = config.base_model_name_or_path or ""

    # ------------------------------------------------------------------ guidance
    @property
    def guidance(self) -> Guidance:
        """T, s and the other knobs in effect; assign a :class:`Guidance` (or use :meth:`set_guidance`)."""
        return self._rt["guidance"]

    @guidance.setter
    def guidance(self, value: Guidance) -> None:
        if not isinstance(value, Guidance):
            raise ModelError(f"guidance must be a t3unlearn.t3.Guidance, not {type(value).__name__}.")
        _check_head(self.head, value)
        self._rt["guidance"] = value
        self.config.set_guidance(value)

    def set_guidance(self, **changes) -> "T3ForCausalLM":
        """Change knobs by name (``temperature=1.0``, ``tempering="adaptive"``, ...); returns the model."""
        self.guidance = self.guidance.replace(**changes)
        return self

    @property
    def temperature(self) -> float:
        """T; set it here (``model.temperature = 1.0``), not on ``model.config``."""
        return self.guidance.temperature

    @temperature.setter
    def temperature(self, value) -> None:
        self.set_guidance(temperature=value)

    @property
    def scale(self) -> float:
        """s; set it here (``model.scale = 2.0``), not on ``model.config``."""
        return self.guidance.scale

    @scale.setter
    def scale(self, value) -> None:
        self.set_guidance(scale=value)

    # ------------------------------------------------------------------ transformers plumbing
    def get_input_embeddings(self):
        return self.base.get_input_embeddings()

    def get_output_embeddings(self):
        return None  # the guided logits are not one embedding product; never tie or resize through us

    def get_decoder(self):
        return self._decoder

    def _init_weights(self, module):  # the base is pretrained and the head initialised by torch
        pass

    def _new_cache(self) -> T3Cache:
        return T3Cache(config=self.base.config.get_text_config(decoder=True))

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs):
        from t3unlearn.lm import cache_kwarg

        key = cache_kwarg()
        cache = model_kwargs.get(key, model_kwargs.get("past_key_values"))
        if cache is not None:
            if not isinstance(cache, T3Cache):
                raise ModelError(f"T3ForCausalLM needs a T3Cache as {key} (from t3unlearn.t3.model); or pass none.")
            cache._is_user_defined = True
            model_kwargs.pop("past_key_values", None)
            model_kwargs[key] = cache
            return
        if generation_config.use_cache is False:
            return
        if generation_config.cache_implementation not in (None, "dynamic"):
            raise ModelError(
                f"T3ForCausalLM supports the dynamic cache only, not cache_implementation={generation_config.cache_implementation!r}."
            )
        model_kwargs[key] = self._new_cache()

    # ------------------------------------------------------------------ forward
    def _seen(self, input_ids, mask, cache, head_logits, logits_to_keep) -> torch.Tensor | None:
        """The copy exemption's mask at the kept positions (None without a copy exemption); the cache keeps the
        tokens seen so far for the next step."""
        g = self._rt["guidance"]
        if g.copy_floor is None or (g.temperature == 1.0 and g.scale == 0.0):
            return None
        if input_ids is None:
            raise ModelError("the copy exemption (copy_floor) reads the context's token ids; pass input_ids, not "
                             "inputs_embeds, or turn it off (copy_floor=None).")
        seen, running = seen_tokens(input_ids.to(head_logits.device), head_logits.shape[-1], mask=mask,
                                    prior=None if cache is None else cache.t3_seen, keep=logits_to_keep)
        if cache is not None:
            cache.t3_seen = running
        return seen

    def _head_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """``self.head(pooled)`` without module-call overhead (it runs at every decoding step)."""
        head, linear = self.head, torch.nn.functional.linear
        w = head.inp.weight
        if pooled.device != w.device or pooled.dtype != w.dtype:  # a base split across devices, or in bf16/fp16:
            pooled = pooled.to(device=w.device, dtype=w.dtype)  # the head computes in float32 whatever the base's dtype
        z = linear(pooled, w)
        if head.activation != "identity":
            z = head.act(z)
        for layer in head.mid:
            z = head.act(linear(z, layer.weight))
        return linear(z, head.out.weight)

    def guided_logits(self, base_logits: torch.Tensor, head_logits: torch.Tensor, pooled: torch.Tensor | None = None,
                      seen: torch.Tensor | None = None) -> torch.Tensor:
        """The guided logits (float32) under the current :attr:`guidance` (see :mod:`t3unlearn.t3.guidance`);
        ``pooled`` (the head's input) is needed when the guidance uses the support gate, ``seen`` (the tokens in each
        position's context) when it uses the copy exemption."""
        g = self._rt["guidance"]
        weight = None
        if g.support is not None and (g.temperature != 1.0 or g.scale != 0.0):
            if pooled is None:
                raise ModelError("guidance with support needs the pooled states the head read (pooled=).")
            weight = self.head.support_weight(pooled.to(head_logits.device, torch.float32), g.support)
        pieces = self.head.piece_mask() if g.reads_pieces else None
        return guided_logits(base_logits, head_logits, g, weight=weight, seen=seen, pieces=pieces)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: T3Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        cache: T3Cache | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Guided next-token logits (unnormalized log-probs; ``log_softmax`` them for log-probs).

        ``labels`` (``-100`` ignored) give the mean token cross-entropy of the guided distribution. The
        cache comes as ``cache`` or ``past_key_values`` (transformers' new and old names)."""
        from t3unlearn.lm import cache_kwarg

        kwargs.pop("return_dict", None)
        if cache is not None:
            if past_key_values is not None and past_key_values is not cache:
                raise ModelError("give T3ForCausalLM one cache: as cache or as past_key_values, not both.")
            past_key_values = cache
        ref = input_ids if input_ids is not None else inputs_embeds
        if ref is None:
            raise ModelError("T3ForCausalLM.forward needs input_ids or inputs_embeds.")
        q = ref.shape[1]
        if use_cache is None:
            use_cache = past_key_values is not None or bool(self.config.use_cache)
        if past_key_values is not None and not isinstance(past_key_values, T3Cache):
            if past_key_values.get_seq_length() > 0:
                raise ModelError("T3ForCausalLM needs a T3Cache (it pools hidden states); got a filled " + type(past_key_values).__name__ + ".")
            past_key_values = None
        if use_cache and past_key_values is None:
            past_key_values = self._new_cache()
        prior_sum = prior_count = None
        if past_key_values is not None:
            if past_key_values.t3_sum is not None:
                prior_sum, prior_count = past_key_values.t3_sum, past_key_values.t3_count
            elif past_key_values.get_seq_length() > 0:
                raise ModelError("this T3Cache holds keys/values but no pooled state; it was not filled by T3ForCausalLM.")

        rt = self._rt
        captured = rt["captured"]
        captured.clear()
        rt["capturing"] = True
        try:
            out = self.base(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                inputs_embeds=inputs_embeds,
                use_cache=use_cache,
                logits_to_keep=logits_to_keep,
                **{cache_kwarg(): past_key_values if use_cache else None},
                **kwargs,
            )
        finally:
            rt["capturing"] = False
        if not captured:
            raise ModelError(f"the decoder of {type(self.base).__name__} did not run; T3 cannot read its hidden states.")
        dec = captured[-1]
        captured.clear()
        hidden = dec[0] if isinstance(dec, tuple) else dec.last_hidden_state

        mask = attention_mask[:, -q:] if attention_mask is not None and attention_mask.dim() == 2 else None
        pooled, run_sum, run_count = _pool(hidden, mask, prior_sum, prior_count, logits_to_keep)
        if use_cache:
            past_key_values.t3_sum, past_key_values.t3_count = run_sum, run_count
        head_logits = self._head_logits(pooled)
        seen = self._seen(input_ids, mask, past_key_values if use_cache else None, head_logits, logits_to_keep)
        logits = self.guided_logits(out.logits, head_logits, pooled, seen)

        loss = None
        if labels is not None:
            loss = _mean_nll(logits, labels)
        if type(out) is CausalLMOutputWithPast:  # reuse the base's output object (cheaper than a new one)
            out.logits = logits
            if loss is not None:
                out.loss = loss
            if not use_cache:
                setattr(out, cache_kwarg(), None)
            return out
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **{cache_kwarg(): past_key_values if use_cache else None},
            hidden_states=getattr(out, "hidden_states", None),
            attentions=getattr(out, "attentions", None),
        )

    # ------------------------------------------------------------------ saving and loading
    def save_pretrained(self, save_directory, **kwargs) -> Path:
        """Write only the head (``head.safetensors``) and ``t3_config.json``, atomically."""
        from safetensors.torch import save_file

        from t3unlearn.io import atomic_dir

        target = Path(save_directory)
        with atomic_dir(target, marker=CONFIG_NAME, what="a T3 head", error=ModelError) as tmp:
            state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.head.state_dict().items()}
            # one metadata key: safetensors writes several in a random order, and a head must be byte-reproducible
            save_file(state, str(Path(tmp) / HEAD_NAME), metadata={"format": "pt"})
            _readable(Path(tmp) / HEAD_NAME)
            self.config.save(tmp)
        return target

    @staticmethod
    def read_config(head_dir) -> T3Config:
        """The checked :class:`T3Config` of a saved head (a ModelError when missing or corrupt)."""
        return T3Config.load(head_dir)

    @classmethod
    def base_model_path(cls, head_dir, *, must_exist: bool = False) -> str:
        """The base model (name or path) a saved head was trained on; ``must_exist``: a recorded local path that is
        no longer there (the base was moved or deleted) is a ModelError saying how to give the base instead."""
        base = T3Config.load(head_dir).base_model_name_or_path
        if not base:
            raise ModelError(f"{head_dir}/{CONFIG_NAME} names no base model; give it explicitly (--model / base_model=).")
        if must_exist and not Path(str(base)).expanduser().exists() and str(base).startswith(("/", ".", "~")):
            raise ModelError(f"the base model {base} recorded in {head_dir}/{CONFIG_NAME} does not exist here (moved or "
                             f"deleted?); give the base explicitly: --model BASE --head {head_dir} (base_model=).")
        return str(base)

    @staticmethod
    def _load_head(head_dir, cfg: T3Config) -> GuidanceHead:
        from safetensors.torch import load_file

        path = Path(head_dir) / HEAD_NAME
        if not path.is_file():
            raise ModelError(f"{path} is missing; the head directory is incomplete, save the head again.")
        try:
            state = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types for bad files
            raise ModelError(f"{path} is corrupt or not a safetensors file ({exc}); save the head again.") from None
        head = GuidanceHead(cfg.base_hidden_size, cfg.head_hidden, cfg.vocab_size, activation=cfg.head_activation, layers=cfg.head_layers)
        if any(k.startswith("support.") for k in state):
            head.support = SupportGate(cfg.base_hidden_size)
        if "pieces" in state:
            head.pieces = torch.zeros(cfg.vocab_size)
        expected = {k: tuple(v.shape) for k, v in head.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in state.items()}
        if expected != got:
            raise ModelError(f"{path} does not match {CONFIG_NAME} (tensors {got}, expected {expected}); the head directory is inconsistent.")
        head.load_state_dict({k: v.float() for k, v in state.items()})
        return head

    @classmethod
    def from_base(cls, base_model, head_dir, *, guidance: Guidance | None = None, device=None, force=False,
                  **kwargs) -> "T3ForCausalLM":
        """Attach the head saved in ``head_dir`` to ``base_model`` (a model, or a name/path to load with loading
        keywords such as ``dtype``, ``device_map``, ``attn_implementation``). ``guidance`` replaces the saved
        guidance; guidance knobs given as keywords (``temperature=``, ``scale=``, ... as :class:`Guidance`'s fields;
        ``"none"`` turns an optional one off) override single knobs; any other keyword is an error. A base whose
        fingerprint differs from the one the head recorded at training (another checkpoint of the same shape) is
        refused unless ``force``."""
        cfg = T3Config.load(head_dir)
        knobs = {k: kwargs.pop(k) for k in GUIDANCE_KNOBS if k in kwargs}
        cfg.set_guidance((guidance or cfg.guidance).replace(**knobs))
        loading_kwargs = kwargs
        if isinstance(base_model, (str, Path)):
            base_model = load_base(str(base_model), device=device, **loading_kwargs)
        elif loading_kwargs:
            raise ModelError(f"model-loading keywords ({', '.join(sorted(loading_kwargs))}) apply when the base is given by "
                             "name or path, not to a model already in memory.")
        d, vocab = hidden_size_of(base_model), vocab_size_of(base_model)
        if (cfg.base_hidden_size, cfg.vocab_size) != (d, vocab):
            raise ModelError(
                f"the head in {head_dir} was trained on a base with hidden size {cfg.base_hidden_size} and vocabulary "
                f"{cfg.vocab_size} ({cfg.base_model_name_or_path}), but this base has hidden size {d} and vocabulary {vocab}; "
                "use the base it was trained on."
            )
        if not force:
            from t3unlearn.t3.identity import check_base_fingerprint

            check_base_fingerprint(cfg, base_model, head_dir)
        head = cls._load_head(head_dir, cfg)
        return cls(cfg, base_model, head).eval()

    @classmethod
    def from_pretrained(cls, head_dir, *args, base_model=None, guidance: Guidance | None = None, device=None,
                        force=False, **kwargs) -> "T3ForCausalLM":
        """Load a saved head and its base (``base_model`` overrides the recorded base path).

        ``guidance`` and guidance knobs given as keywords override the saved ones as in :meth:`from_base`; loading
        keywords (``dtype``, ``device_map``, ``attn_implementation``, ...) go to ``transformers`` when the base is
        loaded; any other keyword is an error."""
        knobs = {k: kwargs.pop(k) for k in GUIDANCE_KNOBS if k in kwargs}
        loading_kwargs = kwargs
        if args:
            raise ModelError(f"T3ForCausalLM.from_pretrained takes the head directory only as a positional argument, not {args!r}.")
        split_loading_kwargs(loading_kwargs, "T3ForCausalLM.from_pretrained")
        T3Config.load(head_dir)  # fail on a bad head before loading a large base
        if base_model is None:
            base_model = cls.base_model_path(head_dir, must_exist=True)
        return cls.from_base(base_model, head_dir, guidance=guidance, device=device, force=force, **knobs, **loading_kwargs)

    def check_tokenizer(self, tokenizer) -> None:
        """Raise :class:`ModelError` if ``tokenizer``'s vocabulary differs from the one the head was trained with."""
        want = self.config.tokenizer_hash
        if want and tokenizer_hash(tokenizer) != want:
            raise ModelError("this tokenizer's vocabulary differs from the one the T3 head was trained with; use the base model's tokenizer.")


def _pool(hidden: torch.Tensor, mask: torch.Tensor | None, prior_sum, prior_count, logits_to_keep):
    """``(pooled, running sum, running count)``: the head's input at the kept positions, the mean of the final hidden
    states so far (a decoding step updates the running mean; a prefill pools every prefix)."""
    q = hidden.shape[1]
    if q == 1 and prior_sum is not None:  # a decoding step: update the running mean
        h = hidden[:, 0].float()
        if mask is None:
            run_sum, run_count = prior_sum + h, prior_count + 1.0
        else:
            m = mask[:, 0].to(device=h.device, dtype=h.dtype)
            run_sum, run_count = torch.addcmul(prior_sum, h, m.unsqueeze(-1)), prior_count + m
        return (run_sum / run_count.clamp_min(1.0).unsqueeze(-1)).unsqueeze(1), run_sum, run_count
    if mask is None:
        mask = torch.ones(hidden.shape[0], q, dtype=torch.float32, device=hidden.device)
    pooled, run_sum, run_count = pool_prefix(hidden, mask.to(hidden.device), prior_sum=prior_sum, prior_count=prior_count)
    if isinstance(logits_to_keep, int):
        pooled = pooled[:, -logits_to_keep:] if logits_to_keep > 0 else pooled
    else:
        pooled = pooled[:, logits_to_keep]
    return pooled, run_sum, run_count


def _mean_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The mean next-token cross-entropy of ``logits`` against ``labels`` (``-100`` ignored)."""
    shift = torch.log_softmax(logits[:, :-1], dim=-1)
    tgt = labels[:, 1:].to(shift.device)
    valid = tgt != -100
    nll = -shift.gather(-1, tgt.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return (nll * valid).sum() / valid.sum().clamp_min(1)


def _check_head(head: GuidanceHead, guidance: Guidance) -> None:
    """What the guidance reads and the head must carry: its support gate, its word-piece table."""
    if guidance.support is not None and head.support is None:
        raise ModelError(NO_SUPPORT)
    if guidance.reads_pieces:
        head.piece_mask()


def load_head(head_dir) -> tuple[GuidanceHead, T3Config]:
    """The head saved in ``head_dir`` and its checked :class:`T3Config`, without a base (a server holds
    many heads over one base; :meth:`T3ForCausalLM.from_base` attaches one)."""
    cfg = T3Config.load(head_dir)
    return T3ForCausalLM._load_head(head_dir, cfg), cfg


__all__ = ["T3Config", "T3Cache", "T3ForCausalLM", "T3Error", "Guidance", "load_base"]
