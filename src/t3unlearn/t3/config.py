"""T3's settings and the saved head's format, in one place.

- :class:`Guidance`: the inference-time knobs (T, s, how to temper, the head's bias). They are saved in the
  head and can be changed at load time without retraining.
- :class:`TrainConfig`: the head's shape and how it is trained.
- the head file's names and version. :class:`~t3unlearn.t3.model.T3Config`, the ``transformers`` config that
  holds the guidance, the head's shape, the base and the record of training and calibration, is built from
  these and lives beside the model (it needs ``transformers``; this module needs neither it nor torch, so
  ``--help`` stays fast).

Every default lives here; the command line, :func:`t3unlearn.t3.unlearn` and ``compare`` read them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from t3unlearn.errors import ModelError

CONFIG_NAME = "t3_config.json"
HEAD_NAME = "head.safetensors"
FORMAT = "t3unlearn-head"
FORMAT_VERSION = 2  # 2: the file is T3Config's fields; guidance knobs tempering / tail_logp / bias (/ support / floor)
POOLING = "mean"
LAYER = "final_norm"
ACTIVATIONS = ("identity", "relu", "gelu", "tanh")  # of the head's hidden layers
TEMPERINGS = ("global", "adaptive")  # how the base is tempered (t3unlearn.t3.guidance)
OPTIONAL_KNOBS = ("tail_logp", "support", "floor")  # guidance knobs that can be off (None)

# the grid `t3unlearn calibrate` searches by default (docs/t3.md, "Privleak in the band"): s in steps of 0.05
# where the world's choices fall, adaptive tempering, the support gate on; T = 1 (plain guidance) is scored beside
CALIBRATION_TEMPERATURES = (1.0, 1.5, 1.75, 2.0, 2.25, 2.5)
CALIBRATION_SCALES = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 1.0, 1.5)
CALIBRATION_TEMPERINGS = ("adaptive",)
CALIBRATION_SUPPORTS = (0.95,)


def _number(name: str, value, *, positive: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ModelError(f"{name} must be a number, not {value!r}.") from None
    if not math.isfinite(v) or (positive and not v > 0):
        raise ModelError(f"{name} must be {'> 0' if positive else 'a finite number'}, not {value}.")
    return v



def check_head_shape(in_features: int, hidden: int, vocab: int, activation: str, layers: int) -> None:
    """Raise :class:`ModelError` for a head shape that cannot be built."""
    if activation not in ACTIVATIONS:
        raise ModelError(f"unknown head activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}.")
    for name, value in (("input size", in_features), ("hidden size", hidden), ("vocabulary size", vocab), ("layers", layers)):
        if int(value) < 1:
            raise ModelError(f"head {name} must be >= 1, not {value}.")
    if layers > 1 and activation == "identity":
        raise ModelError(
            f"{layers} head layers with the identity activation equal one layer; "
            "give a non-identity activation (relu, gelu, tanh) or use 1 layer."
        )


@dataclass(frozen=True)
class Guidance:
    """How the head guides the base: ``temper(log p) + scale · logsigmoid(max(head + bias, floor))``.

    ``temperature`` T (> 0; 1 is plain classifier guidance), ``scale`` s, ``tempering`` ``global`` (the
    paper's ``log p / T``) or ``adaptive`` (T only where the base is about to say forget content),
    ``tail_logp`` (None, or a log-probability below which tokens are not lifted by tempering), ``bias``
    (added to the head's logits), ``support`` (None, or the quantile of the training positions' distances
    beyond which guidance fades out; needs a head with a support gate), ``floor`` (None, or a head logit below
    which the head's verdict counts no further: no token loses more than ``scale · log(1 + e^-floor)`` nats to
    the tilt). See :mod:`t3unlearn.t3.guidance`.
    """

    # measured on the world's forget10/forget05 (docs/t3.md, "Choosing T, s and the tempering"); the paper's
    # TOFU setting is temperature=2.5, scale=1.0, tempering="global"
    temperature: float = 1.75
    scale: float = 0.7
    tempering: str = "adaptive"
    tail_logp: float | None = None
    bias: float = 0.0
    support: float | None = None
    floor: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "temperature", _number("temperature", self.temperature, positive=True))
        object.__setattr__(self, "scale", _number("scale", self.scale))
        if self.scale < 0:
            raise ModelError(f"scale must be >= 0 (0: no tilt; a negative s pulls answers toward the forget set instead of "
                             f"away from it), not {self.scale:g}.")
        object.__setattr__(self, "bias", _number("bias", self.bias))
        if self.tempering not in TEMPERINGS:
            raise ModelError(f"tempering must be one of {', '.join(TEMPERINGS)}, not {self.tempering!r}.")
        if self.tail_logp is not None:
            tail = _number("tail_logp", self.tail_logp)
            if tail >= 0:
                raise ModelError(f"tail_logp is a log-probability and must be < 0 (e.g. -9.2 for p = 1e-4), not {tail}.")
            object.__setattr__(self, "tail_logp", tail)
        if self.support is not None:
            q = _number("support", self.support)
            if not 0 < q <= 1:
                raise ModelError(f"support is a quantile of the training positions' distances and must be in (0, 1] "
                                 f"(e.g. 0.95), or None to turn the gate off; not {q}.")
            object.__setattr__(self, "support", q)
        if self.floor is not None:
            floor = _number("floor", self.floor)
            if floor >= 0:
                raise ModelError(f"floor is a head logit below which tokens are not pushed further and must be < 0 "
                                 f"(e.g. -6.5: at most s x 6.5 nats per token), not {floor}.")
            object.__setattr__(self, "floor", floor)

    def replace(self, **changes) -> "Guidance":
        """A copy with ``changes`` (None values are ignored; ``"none"`` turns ``tail_logp`` / ``support`` / ``floor`` off;
        unknown names are an error)."""
        known = {f.name for f in fields(self)}
        bad = sorted(set(changes) - known)
        if bad:
            raise ModelError(f"unknown guidance setting(s) {', '.join(bad)}; known: {', '.join(sorted(known))}.")
        off = {k: None for k, v in changes.items() if k in OPTIONAL_KNOBS and isinstance(v, str) and v.lower() in ("none", "off")}
        return replace(self, **{k: v for k, v in changes.items() if v is not None and k not in off}, **off)

    def label(self) -> str:
        parts = [f"T={self.temperature:g}", f"s={self.scale:g}"]
        if self.tempering != "global" and self.temperature != 1:  # at T = 1 every tempering is the identity
            parts.append(self.tempering)
        if self.tail_logp is not None and self.temperature != 1:
            parts.append(f"tail={self.tail_logp:g}")
        if self.bias:
            parts.append(f"bias={self.bias:g}")
        if self.support is not None:
            parts.append(f"support={self.support:g}")
        if self.floor is not None:
            parts.append(f"floor={self.floor:g}")
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
    ensemble: int = 1  # heads trained with seeds seed*K .. seed*K+K-1 and averaged (GuidanceHead.ensemble): width K*h

    @property
    def width(self) -> int:
        """The saved head's width: ``hidden_size`` per member."""
        return self.hidden_size * self.ensemble

    def validate(self) -> "TrainConfig":
        if self.epochs < 1:
            raise ModelError(f"epochs must be >= 1, not {self.epochs}.")
        if self.warmup_epochs is None:
            self.warmup_epochs = self.epochs // 4
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ModelError(f"warm-up epochs must be between 0 and epochs ({self.epochs}), not {self.warmup_epochs}.")
        if isinstance(self.ensemble, bool) or not isinstance(self.ensemble, int) or self.ensemble < 1:
            raise ModelError(f"ensemble must be a whole number of heads >= 1, not {self.ensemble!r}.")
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


def defaults() -> dict[str, Any]:
    """Every T3 default by name (guidance and training), for help texts and configs."""
    return {**asdict(Guidance()), **asdict(TrainConfig())}
