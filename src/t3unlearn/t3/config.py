"""T3's settings and the saved head's format, in one place.

- :class:`Guidance`: the inference-time knobs (T, s, how to temper, the head's bias). They are saved in the
  head and can be changed at load time without retraining.
- :class:`TrainConfig`: the head's shape and how it is trained.
- :class:`T3Config`: the ``transformers`` config of a :class:`~t3unlearn.t3.model.T3ForCausalLM`: the
  guidance, the head's shape, what the base is, and the record of training and calibration. Its fields
  are exactly what ``t3_config.json`` holds (:meth:`T3Config.save` / :meth:`T3Config.load`).

Every default lives here; the command line, :func:`t3unlearn.t3.unlearn` and ``compare`` read them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from t3unlearn.errors import ModelError
from t3unlearn.t3.guidance import TEMPERINGS
from t3unlearn.t3.head import ACTIVATIONS, check_head_shape

CONFIG_NAME = "t3_config.json"
HEAD_NAME = "head.safetensors"
FORMAT = "t3unlearn-head"
FORMAT_VERSION = 2  # 2: the file is T3Config's fields; guidance knobs tempering / tail_logp / bias
POOLING = "mean"
LAYER = "final_norm"


def _number(name: str, value, *, positive: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ModelError(f"{name} must be a number, not {value!r}.") from None
    if not math.isfinite(v) or (positive and not v > 0):
        raise ModelError(f"{name} must be {'> 0' if positive else 'a finite number'}, not {value}.")
    return v


@dataclass(frozen=True)
class Guidance:
    """How the head guides the base: ``temper(log p) + scale · logsigmoid(head + bias)``.

    ``temperature`` T (> 0; 1 is plain classifier guidance), ``scale`` s, ``tempering`` ``global`` (the
    paper's ``log p / T``) or ``adaptive`` (T only where the base is about to say forget content),
    ``tail_logp`` (None, or a log-probability below which tokens are not lifted by tempering), ``bias``
    (added to the head's logits). See :mod:`t3unlearn.t3.guidance`.
    """

    temperature: float = 2.5
    scale: float = 1.0
    tempering: str = "global"
    tail_logp: float | None = None
    bias: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "temperature", _number("temperature", self.temperature, positive=True))
        object.__setattr__(self, "scale", _number("scale", self.scale))
        object.__setattr__(self, "bias", _number("bias", self.bias))
        if self.tempering not in TEMPERINGS:
            raise ModelError(f"tempering must be one of {', '.join(TEMPERINGS)}, not {self.tempering!r}.")
        if self.tail_logp is not None:
            tail = _number("tail_logp", self.tail_logp)
            if tail >= 0:
                raise ModelError(f"tail_logp is a log-probability and must be < 0 (e.g. -9.2 for p = 1e-4), not {tail}.")
            object.__setattr__(self, "tail_logp", tail)

    def replace(self, **changes) -> "Guidance":
        """A copy with ``changes`` (None values are ignored; unknown names are an error)."""
        known = {f.name for f in fields(self)}
        bad = sorted(set(changes) - known)
        if bad:
            raise ModelError(f"unknown guidance setting(s) {', '.join(bad)}; known: {', '.join(sorted(known))}.")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def label(self) -> str:
        parts = [f"T={self.temperature:g}", f"s={self.scale:g}"]
        if self.tempering != "global":
            parts.append(self.tempering)
        if self.tail_logp is not None:
            parts.append(f"tail={self.tail_logp:g}")
        if self.bias:
            parts.append(f"bias={self.bias:g}")
        return ", ".join(parts)


@dataclass
class TrainConfig:
    """The head's shape and its training (defaults: the paper's TOFU sweep, see docs/t3.md)."""

    hidden_size: int = 50
    activation: str = "identity"
    layers: int = 1
    epochs: int = 100
    warmup_epochs: int | None = None  # None: a quarter of the epochs (25 of 100, as in the paper)
    lr: float = 1e-2
    weight_decay: float = 1e-2
    batch_size: int = 32
    seed: int = 0

    def validate(self) -> "TrainConfig":
        if self.epochs < 1:
            raise ModelError(f"epochs must be >= 1, not {self.epochs}.")
        if self.warmup_epochs is None:
            self.warmup_epochs = self.epochs // 4
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ModelError(f"warm-up epochs must be between 0 and epochs ({self.epochs}), not {self.warmup_epochs}.")
        if self.batch_size < 1:
            raise ModelError(f"batch size must be >= 1, not {self.batch_size}.")
        if not self.lr > 0:
            raise ModelError(f"learning rate must be > 0, not {self.lr}.")
        if self.weight_decay < 0:
            raise ModelError(f"weight decay must be >= 0, not {self.weight_decay}.")
        check_head_shape(1, self.hidden_size, 1, self.activation, self.layers)
        return self


def split_settings(settings: dict[str, Any]) -> tuple[dict, dict]:
    """``(guidance, training)`` keyword dicts from one dict of T3 settings; unknown names are an error."""
    g_names = {f.name for f in fields(Guidance)}
    t_names = {f.name for f in fields(TrainConfig)}
    bad = sorted(set(settings) - g_names - t_names)
    if bad:
        raise ModelError(f"unknown T3 setting(s) {', '.join(bad)}; known: {', '.join(sorted(g_names | t_names))}.")
    return ({k: v for k, v in settings.items() if k in g_names}, {k: v for k, v in settings.items() if k in t_names})


@strict
class T3Config(PreTrainedConfig):
    """Configuration of a T3 head over a base model; its T3 fields are the content of ``t3_config.json``."""

    model_type = "t3"

    t3_temperature: float = Guidance.temperature
    t3_scale: float = Guidance.scale
    t3_tempering: str = Guidance.tempering
    t3_tail_logp: float | None = Guidance.tail_logp
    t3_bias: float = Guidance.bias
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
    FILE_FIELDS = ("t3_temperature", "t3_scale", "t3_tempering", "t3_tail_logp", "t3_bias", "head_hidden",
                   "head_activation", "head_layers", "pooling", "layer", "base_model_name_or_path",
                   "base_hidden_size", "vocab_size", "tokenizer_hash", "training", "metrics", "calibration",
                   "requests", "retain_set")

    @property
    def guidance(self) -> Guidance:
        return Guidance(self.t3_temperature, self.t3_scale, self.t3_tempering, self.t3_tail_logp, self.t3_bias)

    def set_guidance(self, g: Guidance) -> None:
        self.t3_temperature, self.t3_scale, self.t3_tempering, self.t3_tail_logp, self.t3_bias = (
            g.temperature, g.scale, g.tempering, g.tail_logp, g.bias)

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
                data = _from_v1(data)
            values = {k: data[k] for k in cls.FILE_FIELDS if k in data}
            cfg = cls(**values)
            cfg.guidance  # noqa: B018 - validates T, s, tempering, tail, bias
            if cfg.head_activation not in ACTIVATIONS:
                raise ValueError(f"unknown head activation {cfg.head_activation!r}")
            check_head_shape(cfg.base_hidden_size, cfg.head_hidden, cfg.vocab_size, cfg.head_activation, cfg.head_layers)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{cfg_path} is corrupt or not a T3 config ({type(exc).__name__}: {exc}); save the head again.") from None
        return cfg


def _from_v1(data: dict) -> dict:
    """The first head format (a hand-written dict) as T3Config fields."""
    head, base = data["head"], data.get("base") or {}
    return {
        "t3_temperature": data["temperature"], "t3_scale": data["scale"], "head_hidden": head["hidden"],
        "head_activation": head["activation"], "head_layers": head["layers"], "pooling": data.get("pooling", POOLING),
        "layer": data.get("layer", LAYER), "base_model_name_or_path": data.get("base_model_name_or_path"),
        "base_hidden_size": head["in_features"], "vocab_size": head["vocab_size"], "tokenizer_hash": base.get("tokenizer_hash"),
        "training": data.get("training") or {}, "metrics": data.get("metrics") or {},
    }


def defaults() -> dict[str, Any]:
    """Every T3 default by name (guidance and training), for help texts and configs."""
    return {**asdict(Guidance()), **asdict(TrainConfig())}
