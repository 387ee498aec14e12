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
from dataclasses import asdict, dataclass, field, fields, replace
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
SPELLINGS = ("guided", "base")  # who chooses a word's later pieces (t3unlearn.t3.guidance)

# the grid `t3unlearn calibrate` searches by default (docs/t3.md, "Calibration without the oracle"): s in steps of 0.05
# where the world's choices fall, adaptive tempering, the support gate on; T = 1 (plain guidance) is scored beside.
# Words are treated two ways (CALIBRATION_WORDS, (piece floor, spelling) pairs): whole words -- the word-piece
# exemption at 10 (a word once begun is not tilted) and the base spelling words (a token that continues a word keeps
# the base's probability) -- which the rule prefers (t3unlearn.t3.grid.choose), and plain tokens. The copy exemption
# is off (docs/t3.md, "Whole words and names" and "Calibration without the oracle": chosen on world forget10's and
# TOFU forget10's development heads, with the oracle's columns in view)
CALIBRATION_TEMPERATURES = (1.0, 1.5, 1.75, 2.0, 2.25, 2.5)
CALIBRATION_SCALES = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 1.0, 1.5)
CALIBRATION_TEMPERINGS = ("adaptive",)
CALIBRATION_SUPPORTS = (0.95,)
CALIBRATION_COPY_FLOORS = (None,)
CALIBRATION_WORDS = ((10.0, "base"), (None, "guided"))
# a calibration grid's lists (calibrate's --temperatures ..., compare's "calibrate" object) and the knob of each
GRID_KNOBS = {"temperatures": "temperature", "scales": "scale", "temperings": "tempering", "tails": "tail_logp",
              "biases": "bias", "supports": "support", "floors": "floor", "copy_floors": "copy_floor",
              "piece_floors": "piece_floor", "spellings": "spelling"}


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


# ---------------------------------------------------------------------------------------------- the guidance knobs
# Each Guidance field carries its own metadata (as PEFT's LoraConfig does): its help text, its bounds (the rule,
# its reason and the message when broken), its command-line spelling, and the wider float32-safety range a server
# also enforces. The command line (t3unlearn.t3.options.add_guidance_options), the server's request fields
# (t3unlearn.serve.schemas.GuidanceFields) and Guidance.validate are generated from it: one definition, one message.

_OFF = ("none", "off")


def knob(default, help: str, *, low: float | None = None, high: float | None = None, low_open: bool = False,
         high_open: bool = False, rule: str = "", choices: tuple[str, ...] | None = None, optional: bool = False,
         metavar: str | None = None, serve: tuple[float, float] | None = None):
    """A :class:`Guidance` field and its metadata: ``low``/``high`` (exclusive with ``low_open``/``high_open``) bound
    it and ``rule`` says so in the error ("must be > 0 ..."); ``optional``: None (``none``/``off`` on the command
    line) turns it off; ``serve``: the inclusive range a server also keeps it in (float32 stays finite)."""
    return field(default=default, metadata={"help": help, "low": low, "high": high, "low_open": low_open,
                                             "high_open": high_open, "rule": rule, "choices": choices,
                                             "optional": optional, "metavar": metavar, "serve": serve})


def knob_flag(name: str) -> str:
    """The command-line option of a guidance knob: ``tail_logp`` -> ``--tail-logp``."""
    return "--" + name.replace("_", "-")


def _in_bounds(m: dict, v: float) -> bool:
    low, high = m["low"], m["high"]
    if low is not None and (v <= low if m["low_open"] else v < low):
        return False
    return high is None or (v < high if m["high_open"] else v <= high)


def check_knob(name: str, value, *, serving: bool = False):
    """``value`` of the guidance knob ``name``, checked against its field's metadata (a number as float; None or
    ``"none"``/``"off"`` for an optional knob that is off: None). A :class:`ModelError` with the knob's one message
    otherwise; with ``serving``, also the server's range."""
    m = GUIDANCE_META.get(name)
    if m is None:
        raise ModelError(f"unknown guidance setting {name!r}; known: {', '.join(GUIDANCE_KNOBS)}.")
    if m["optional"] and (value is None or (isinstance(value, str) and value.strip().lower() in _OFF)):
        return None
    if m["choices"]:
        if value not in m["choices"]:
            raise ModelError(f"{name} must be one of {', '.join(m['choices'])}, not {value!r}.")
        return value
    off = ", or none to turn it off" if m["optional"] else ""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ModelError(f"{name} must be a number{off}, not {value!r}.") from None
    if isinstance(value, bool) or not math.isfinite(v):
        raise ModelError(f"{name} must be a finite number{off}, not {value!r}.")
    if not _in_bounds(m, v):
        raise ModelError(f"{name} {m['rule']}{off}; not {v:g}.")
    if serving and m["serve"] is not None and not m["serve"][0] <= v <= m["serve"][1]:
        lo, hi = m["serve"]
        raise ModelError(f"{name} must be within [{lo:g}, {hi:g}] when served (beyond, float32 guidance overflows); "
                         f"not {v:g}.")
    return v


@dataclass(frozen=True)
class Guidance:
    """How the head guides the base: ``temper(log p) + scale · logsigmoid(max(head + bias, floor))``.

    Each field's help text and bounds are in its metadata (:func:`knob`); see :mod:`t3unlearn.t3.guidance` for the
    math. The defaults were measured on the world's forget10/forget05 (docs/t3.md,
    "Defaults"); the paper's TOFU setting is ``temperature=2.5, scale=1.0, tempering="global"``.
    """

    temperature: float = knob(
        1.75, "T, tempering of the base (1 = plain guidance)", low=0.0, low_open=True, metavar="T",
        rule="must be > 0 (1 is plain guidance)", serve=(0.01, 100.0))
    scale: float = knob(
        0.7, "s, the guidance scale (0 = no tilt)", low=0.0, metavar="S",
        rule="must be >= 0 (0: no tilt; a negative s pulls answers toward the forget set instead of away from it)",
        serve=(0.0, 100.0))
    tempering: str = knob(
        "adaptive", "global: the paper's p^(1/T) everywhere; adaptive: T only where the base is about to say what the "
        "head flags as forget content, so retained answers are not taxed", choices=TEMPERINGS)
    tail_logp: float | None = knob(
        None, "tail guard: tokens with a base log-probability below LOGP are not lifted by tempering (e.g. -9.2 for "
        "p = 1e-4)", high=0.0, high_open=True, rule="is a log-probability and must be < 0 (e.g. -9.2 for p = 1e-4)",
        optional=True, metavar="LOGP", serve=(-1000.0, 0.0))
    bias: float = knob(
        0.0, "added to the head's logits before the tilt (> 0 reads ambiguous tokens as retained)", metavar="B",
        serve=(-100.0, 100.0))
    support: float | None = knob(
        None, "support gate: guidance fades out where the pooled state lies beyond the Q-quantile (e.g. 0.95) of the "
        "head's training states' distances -- content neither forget nor retain (general knowledge) keeps the base's "
        "distribution; needs a head with a support gate", low=0.0, low_open=True, high=1.0,
        rule="is a quantile of the training positions' distances and must be in (0, 1] (e.g. 0.95)", optional=True,
        metavar="Q")
    floor: float | None = knob(
        None, "the head's floor: head logits (plus bias) below LOGIT count as LOGIT, so no token loses more than "
        "s x log(1 + e^-LOGIT) nats to the tilt (e.g. -6.5: at most 6.5 s) -- every token the head is sure of is "
        "pushed down alike", high=0.0, high_open=True,
        rule="is a head logit below which tokens are not pushed further and must be < 0 (e.g. -6.5: at most s x 6.5 "
             "nats per token)", optional=True, metavar="LOGIT", serve=(-1000.0, 0.0))
    copy_floor: float | None = knob(
        None, "copy exemption: a token already in the context (the question's names, words said earlier) is read by "
        "the head as at least LOGIT, so copying it is neither tilted away nor counted as forget content by adaptive "
        "tempering (e.g. 4: names are kept, the facts the question does not give still go)", low=-1000.0,
        high=1000.0, rule="is a head logit and must be within [-1000, 1000] (e.g. 4)", optional=True,
        metavar="LOGIT", serve=(-1000.0, 1000.0))
    piece_floor: float | None = knob(
        None, "word-piece exemption: a token that continues a word ('ana' of 'Zuz|ana') is read by the head as at "
        "least LOGIT, so the tilt chooses among words by their first piece and a word once begun is finished as the "
        "base would finish it (e.g. 10: no garbled names like 'Zuzanaeford'); needs a head with a word-piece table",
        low=-1000.0, high=1000.0, rule="is a head logit and must be within [-1000, 1000] (e.g. 10)", optional=True,
        metavar="LOGIT", serve=(-1000.0, 1000.0))
    spelling: str = knob(
        "guided", "who spells a word once begun: guided: its later pieces are tempered and tilted like any token; "
        "base: a token that continues a word keeps the base's probability and guidance shares out only the rest, so "
        "no piece the base finds implausible is glued to a word ('born indapest'); needs a head with a word-piece "
        "table", choices=SPELLINGS)

    def __post_init__(self):
        self.validate()

    def validate(self) -> "Guidance":
        """Check every knob against its metadata (numbers become floats); a :class:`ModelError` names the first bad
        one. Runs on construction: a Guidance that exists is valid."""
        for f in fields(self):
            object.__setattr__(self, f.name, check_knob(f.name, getattr(self, f.name)))
        return self

    def replace(self, **changes) -> "Guidance":
        """A copy with ``changes`` (None values are ignored; ``"none"`` turns ``tail_logp`` / ``support`` / ``floor`` off;
        unknown names are an error)."""
        bad = sorted(set(changes) - set(GUIDANCE_KNOBS))
        if bad:
            raise ModelError(f"unknown guidance setting(s) {', '.join(bad)}; known: {', '.join(sorted(GUIDANCE_KNOBS))}.")
        off = {k: None for k, v in changes.items() if k in OPTIONAL_KNOBS and isinstance(v, str) and v.lower() in _OFF}
        return replace(self, **{k: v for k, v in changes.items() if v is not None and k not in off}, **off)

    @staticmethod
    def changes_from(source) -> dict[str, Any]:
        """The knobs ``source`` (a mapping or an object with the knobs as attributes, e.g. parsed arguments) sets:
        the names whose value is not None."""
        get = source.get if isinstance(source, dict) else (lambda k: getattr(source, k, None))
        return {k: get(k) for k in GUIDANCE_KNOBS if get(k) is not None}

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
        if self.copy_floor is not None:
            parts.append(f"copy={self.copy_floor:g}")
        if self.piece_floor is not None:
            parts.append(f"pieces={self.piece_floor:g}")
        if self.spelling != "guided":
            parts.append(f"spelling={self.spelling}")
        return ", ".join(parts)

    @property
    def reads_pieces(self) -> bool:
        """Whether this guidance reads the head's word-piece table (the piece floor, the base's spelling)."""
        return self.piece_floor is not None or self.spelling == "base"


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


GUIDANCE_META: dict[str, dict] = {f.name: dict(f.metadata) for f in fields(Guidance)}
GUIDANCE_KNOBS: tuple[str, ...] = tuple(GUIDANCE_META)  # the knobs' names, in the order of the dataclass
OPTIONAL_KNOBS = tuple(k for k, m in GUIDANCE_META.items() if m["optional"])  # knobs that can be off (None)


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


def config_from_v1(data: dict) -> dict:
    """The first head format (a hand-written dict) as T3Config fields."""
    head, base = data["head"], data.get("base") or {}
    return {
        "t3_temperature": data["temperature"], "t3_scale": data["scale"], "head_hidden": head["hidden"],
        "head_activation": head["activation"], "head_layers": head["layers"], "pooling": data.get("pooling", POOLING),
        "layer": data.get("layer", LAYER), "base_model_name_or_path": data.get("base_model_name_or_path"),
        "base_hidden_size": head["in_features"], "vocab_size": head["vocab_size"], "tokenizer_hash": base.get("tokenizer_hash"),
        "training": data.get("training") or {}, "metrics": data.get("metrics") or {},
    }
