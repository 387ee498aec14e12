"""``t3unlearn compare``'s settings: strict dataclasses read from the packaged ``compare_default.json`` and a
user file laid over it.

Merging: a user file's top-level keys replace the defaults', except ``selection``, ``eval`` and ``train``,
whose keys are merged into the defaults'; a method entry given there replaces the default entry of that
method. Every key is checked: a typo (``utility_tolerence``) is an error naming the known keys, and so is a
value of the wrong type or out of range; keys starting with ``_`` are comments.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from t3unlearn.errors import ConfigError, ModelError
from t3unlearn.eval.metrics import UTILITY_PARTS
from t3unlearn.methods import get as get_method, names as method_names
from t3unlearn.settings import check_keys, check_types, from_dict
from t3unlearn.t3.config import GRID_KNOBS, GUIDANCE_KNOBS, GUIDANCE_META, OPTIONAL_KNOBS, check_knob

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "compare_default.json"
# the packaged methods (a method you register runs too: compare asks the registry, t3unlearn.methods)
ALL_METHODS = method_names("lm")
FINETUNE = method_names("lm", style="finetune")
INFERENCE_METHODS = method_names("lm", style=("guidance", "assistant"))
# T3 and classifier guidance: the unlearn() settings compare passes on (head and optimizer: T3_HEAD_KEYS;
# temperature and scale only change the served model, so settings differing in them share one head)
T3_HEAD_KEYS = ("hidden_size", "activation", "layers", "epochs", "warmup_epochs", "lr", "weight_decay", "batch_size", "ensemble")
T3_GUIDANCE_KEYS = GUIDANCE_KNOBS
# "calibrate": true -- each seed's head chooses its own T and s with `t3unlearn calibrate`'s oracle-free rule on the
# comparison's calibration set (classifier guidance: among T = 1 settings), instead of a sweep on the first seed;
# an object of CALIBRATION_KEYS instead of true changes calibrate's grid, tolerances or rule (calibration_options)
T3_KEYS = (*T3_GUIDANCE_KEYS, *T3_HEAD_KEYS, "calibrate")
CALIBRATION_KEYS = (*GRID_KNOBS, "tolerance", "mia_tolerance", "reference_model")
# what the teacher-forced "quick" evaluation of a sweep computes, and what a full unit records
QUICK_METRICS = ("forget_Q_A_Prob", "retain_Q_A_Prob", "forget_calibration_ks", "forget_calibration_mia",
                 "forget_reference_tr_ks")
TABLE_METRICS = ("forget_quality", "model_utility", "forget_Q_A_ROUGE", "forget_truth_ratio", "privleak", "extraction_strength")
SUMMARY_METRICS = TABLE_METRICS + ("forget_Q_A_Prob", "exact_memorization", *UTILITY_PARTS, "mia_min_k")
# metrics that use the retain model's results on the forget set: selection may not look at them
ORACLE_METRICS = ("forget_quality", "privleak")


@dataclass
class Selection:
    """How a sweep setting is chosen (see :func:`t3unlearn.experiments.compare.selection.select_setting`)."""

    eval: Literal["quick", "full"] = "quick"
    # T3's calibration rule (t3unlearn calibrate --pretrained): the KS distance between the forget truth ratios
    # and those of the reference model (the checkpoint the model was fine-tuned from), lower is better
    metric: str = "forget_reference_tr_ks"
    utility_metric: str = "retain_Q_A_Prob"
    utility_tolerance: float = 0.03  # relative: at least (1 - this) x the full model's, as calibrate's --tolerance
    lower_is_better: bool = True
    # a membership AUC (forget vs the calibration set) that must stay within 0.5 ± mia_tolerance; null: no constraint
    mia_metric: str | None = "forget_calibration_mia"
    mia_tolerance: float = 0.075
    # the model whose forget truth ratios forget_reference_tr_ks compares with: "pretrained" (compare's --pretrained,
    # else the benchmark's checkpoint before fine-tuning) or a model; null: none (then choose another metric)
    reference_model: str | None = "pretrained"


@dataclass
class EvalSettings:
    batch_size: int = 32
    max_new_tokens: int = 200
    # the leakage probes (t3unlearn probe's defaults) on every full-evaluation unit and the oracle, reported in their
    # own table beside TOFU's; never part of the TOFU metrics nor of the selection (compare's --probes sets it)
    probes: bool = False


@dataclass
class MethodEntry:
    """One method: base ``params`` and ``train`` settings, and the ``sweep`` of overrides tried with the first seed."""

    params: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    sweep: list = field(default_factory=list)


@dataclass(frozen=True)
class Setting:
    """One setting of a method, as run: its ``params``, its ``train`` settings, and the sweep ``override``."""

    params: dict
    train: dict
    override: dict

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.override.items()) or "default"


NO_SETTING = Setting({}, {}, {})


@dataclass
class CompareConfig:
    selection: Selection = field(default_factory=Selection)
    eval: EvalSettings = field(default_factory=EvalSettings)
    retain_subset: str | int | None = None
    isolate: bool = True
    threads: int | str | None = None
    max_length: int = 512
    train: dict = field(default_factory=dict)
    methods: dict = field(default_factory=dict)  # name -> MethodEntry

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def settings(self, method: str) -> list[Setting]:
        """The method's settings to try: its base ``params`` / ``train`` with each ``sweep`` override (keys
        go to ``train`` when they are training settings, else to ``params``; T3's all go to ``params``)."""
        entry = self.methods.get(method) or MethodEntry()
        base_train = {} if guided(method) else {**self.train, **entry.train}
        out = []
        for override in [o for item in entry.sweep or [{}] for o in expand(item)]:
            params, train = dict(entry.params), dict(base_train)
            for k, v in override.items():
                if not guided(method) and k in _train_keys():
                    train[k] = v
                else:
                    params[k] = v
            out.append(Setting(params, train, dict(override)))
        return out


def guided(method: str) -> bool:
    """T3 and classifier guidance (a head over the frozen model): all their settings are ``params``."""
    return method in method_names("lm", style="guidance")


def expand(override: dict) -> list[dict]:
    """A sweep entry as the overrides it stands for: a key with a list of values is tried at each of them, so
    ``{"lr": [1e-4, 3e-4], "epochs": [5, 10]}`` is four settings (every combination, in order)."""
    import itertools

    keys = list(override)
    values = [v if isinstance(v, list) else [v] for v in override.values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def _train_keys() -> tuple[str, ...]:
    from dataclasses import fields

    from t3unlearn.baselines.trainer import BaselineConfig

    return tuple(f.name for f in fields(BaselineConfig))


def _param_keys(method: str) -> tuple[str, ...]:
    if guided(method):
        return T3_KEYS
    return tuple(get_method(method).defaults)


def _read(path: str | os.PathLike) -> dict:
    from t3unlearn.io import load_json

    data = load_json(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object (print the default one with 't3unlearn compare --print-config').")
    return data


def merge(base: dict, user: dict, where: str) -> dict:
    """``user`` laid over ``base`` (see the module doc); raw dicts, checked afterwards by :func:`parse`."""
    cfg = json.loads(json.dumps(base))
    check_keys(user, [f for f in CompareConfig.__dataclass_fields__], where=where)
    for key, value in user.items():
        if key == "methods":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: methods must map method names to settings, not {type(value).__name__}.")
            for name, entry in value.items():
                _known_method(name, where)
                cfg.setdefault("methods", {})[name] = entry
        elif key in ("selection", "eval", "train") and isinstance(value, dict):
            cfg[key] = {**cfg.get(key, {}), **value}
        else:
            cfg[key] = value
    return cfg


def parse(raw: dict, where: str) -> CompareConfig:
    """A :class:`CompareConfig` from a raw dict, every key, type and range checked."""
    from t3unlearn.baselines.trainer import BaselineConfig

    check_keys(raw, [f for f in CompareConfig.__dataclass_fields__], where=where)
    cfg = CompareConfig(
        selection=from_dict(Selection, raw.get("selection"), where=f"{where}: selection"),
        eval=from_dict(EvalSettings, raw.get("eval"), where=f"{where}: eval"),
    )
    scalars = {k: raw[k] for k in ("retain_subset", "isolate", "threads", "max_length", "train") if k in raw}
    check_types(CompareConfig, scalars, where=where)
    for k, v in scalars.items():
        setattr(cfg, k, v)
    _check(cfg, where)
    BaselineConfig.from_dict(cfg.train, where=f"{where}: train")
    methods = raw.get("methods") or {}
    if not isinstance(methods, dict):
        raise ConfigError(f"{where}: methods must map method names to settings.")
    for name, entry in methods.items():
        if name.startswith("_"):
            continue
        _known_method(name, where)
        cfg.methods[name] = _method_entry(name, entry, f"{where}: methods.{name}")
    for name in cfg.methods:
        for setting in cfg.settings(name):
            if not guided(name):
                BaselineConfig.from_dict(setting.train, where=f"{where}: methods.{name} ({setting.label})")
                _check_param_types(name, setting.params, f"{where}: methods.{name} ({setting.label})")
    return cfg


def _check_param_types(name: str, params: dict, where: str) -> None:
    """A method parameter whose default is a number must be one: a string there would fail only inside the
    run, after every earlier unit, with a traceback."""
    import math

    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    for key, default in get_method(name).defaults.items():
        if key in params and number(default) and not (number(params[key]) and math.isfinite(params[key])):
            raise ConfigError(f"{where}: {key} must be a number (default {default}), not {params[key]!r}.")


def _known_method(name: str, where: str) -> None:
    if name not in method_names("lm"):
        raise ConfigError(f"{where}: unknown method {name!r}; methods: {', '.join(method_names('lm'))}.")


def _method_entry(name: str, entry: Any, where: str) -> MethodEntry:
    e = from_dict(MethodEntry, entry, where=where)
    known_params = _param_keys(name)
    check_keys(e.params, known_params, where=f"{where}.params")
    if guided(name):
        if e.train:
            raise ConfigError(f"{where}: T3's settings all go in 'params' ({', '.join(T3_KEYS)}); 'train' must be empty.")
        for i, d in enumerate([e.params, *[o for o in e.sweep if isinstance(o, dict)]]):
            if "calibrate" in d:
                calibration_options(d["calibrate"], f"{where}.{'params' if i == 0 else f'sweep[{i - 1}]'}.calibrate")
    else:
        check_keys(e.train, _train_keys(), where=f"{where}.train")
    for i, override in enumerate(e.sweep):
        if not isinstance(override, dict):
            raise ConfigError(f"{where}.sweep[{i}] must be an object of settings, e.g. {{\"lr\": 1e-4}}.")
        known = known_params if guided(name) else (*known_params, *_train_keys())
        check_keys(override, known, where=f"{where}.sweep[{i}]")
        if any(isinstance(v, list) and not v for v in override.values()):
            raise ConfigError(f"{where}.sweep[{i}]: a list of values must not be empty.")
    return e


def _check(cfg: CompareConfig, where: str) -> None:
    sel = cfg.selection
    for name, metric in (("metric", sel.metric), ("utility_metric", sel.utility_metric), ("mia_metric", sel.mia_metric)):
        if metric is None and name == "mia_metric":
            continue
        if metric in ORACLE_METRICS:
            raise ConfigError(f"{where}: selection.{name} may not use the retain model's forget-set results "
                              f"({', '.join(ORACLE_METRICS)}): that would peek at the oracle.")
        known = QUICK_METRICS if sel.eval == "quick" else tuple(m for m in SUMMARY_METRICS if m not in ORACLE_METRICS)
        if metric not in known:
            raise ConfigError(f"{where}: selection.{name} {metric!r} is not computed by the {sel.eval!r} evaluation; "
                              f"choose from {', '.join(known)}.")
    if sel.utility_tolerance < 0:
        raise ConfigError(f"{where}: selection.utility_tolerance must be >= 0, not {sel.utility_tolerance}.")
    if sel.utility_tolerance >= 1:
        raise ConfigError(f"{where}: selection.utility_tolerance is relative (the utility may fall by at most this "
                          f"fraction of the full model's) and must be below 1, not {sel.utility_tolerance}.")
    if "forget_reference_tr_ks" in (sel.metric, sel.utility_metric) and not sel.reference_model:
        raise ConfigError(f"{where}: selection.metric forget_reference_tr_ks needs selection.reference_model "
                          "(\"pretrained\" or a model).")
    if not 0 <= sel.mia_tolerance <= 0.5:
        raise ConfigError(f"{where}: selection.mia_tolerance is a distance from AUC 0.5 and must be in [0, 0.5], "
                          f"not {sel.mia_tolerance}.")
    if cfg.eval.batch_size < 1 or cfg.eval.max_new_tokens < 1:
        raise ConfigError(f"{where}: eval.batch_size and eval.max_new_tokens must be >= 1.")
    rs = cfg.retain_subset
    if not (rs is None or rs in ("forget", "all") or (isinstance(rs, int) and not isinstance(rs, bool) and rs >= 1)):
        raise ConfigError(f"{where}: retain_subset must be \"forget\", \"all\", null or a number of items >= 1, not {rs!r}.")
    t = cfg.threads
    if not (t is None or t == "auto" or (isinstance(t, int) and not isinstance(t, bool) and t >= 0)):
        raise ConfigError(f"{where}: threads must be null, \"auto\" or a number >= 0 (0: torch's default), not {t!r}.")
    if cfg.max_length < 2:
        raise ConfigError(f"{where}: max_length must be >= 2, not {cfg.max_length}.")


def load_compare_config(config: str | os.PathLike | dict | CompareConfig | None = None) -> CompareConfig:
    """The packaged default config with ``config`` (a JSON file, or a dict of the same shape) laid over it."""
    if isinstance(config, CompareConfig):
        return config
    base = _read(DEFAULT_CONFIG)
    if config is None:
        return parse(base, str(DEFAULT_CONFIG))
    where = "config" if isinstance(config, dict) else str(config)
    user = config if isinstance(config, dict) else _read(config)
    return parse(merge(base, user, where), where)


__all__ = ["ALL_METHODS", "CompareConfig", "DEFAULT_CONFIG", "EvalSettings", "FINETUNE", "INFERENCE_METHODS",
           "MethodEntry", "NO_SETTING", "QUICK_METRICS", "SUMMARY_METRICS", "Selection", "Setting", "T3_GUIDANCE_KEYS", "T3_HEAD_KEYS",
           "TABLE_METRICS", "load_compare_config"]


def calibration_options(value: Any, where: str = "calibrate") -> dict | None:
    """T3 / classifier guidance's ``"calibrate"``, checked: ``false`` -> None (no calibration); ``true`` -> ``{}``
    (``t3unlearn calibrate``'s default grid and rule); an object -> its keys (``CALIBRATION_KEYS``, the rest at
    calibrate's defaults), e.g. ``{"temperatures": [4, 4.5, 5], "scales": [0.25, 0.3], "biases": [1],
    "reference_model": "pretrained"}`` -- ``reference_model`` is calibrate's ``--pretrained``:
    ``"pretrained"`` (the benchmark's checkpoint before fine-tuning, or compare's ``--pretrained``) or a model."""
    if isinstance(value, bool):
        return {} if value else None
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be true, false or an object of calibrate's settings ({', '.join(CALIBRATION_KEYS)}), "
                          f"not {value!r}.")
    check_keys(value, CALIBRATION_KEYS, where=where)
    out: dict[str, Any] = {}

    for key, knob in GRID_KNOBS.items():  # each value checked as its guidance knob is (JSON's null: off)
        if key in value:
            v = value[key]
            if not isinstance(v, list) or not v:
                raise ConfigError(f"{where}.{key} must be a non-empty list of {knob} values, not {v!r}.")
            for x in v:
                if isinstance(x, str) and not GUIDANCE_META[knob]["choices"]:
                    raise ConfigError(f"{where}.{key} must list numbers{' or null' if knob in OPTIONAL_KNOBS else ''}, "
                                      f"not {x!r}.")
            try:
                out[key] = [check_knob(knob, x) for x in v]
            except ModelError as exc:
                raise ConfigError(f"{where}.{key}: {str(exc).replace('or none to', 'or null to')}") from None
    for key, lo, hi, e in (("tolerance", 0.0, 1.0, "0.03"), ("mia_tolerance", 0.0, 0.5, "0.075")):
        if key in value:
            v = value[key]
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not lo <= v <= hi or (key == "tolerance" and v == hi):
                raise ConfigError(f"{where}.{key} must be a number in [{lo:g}, {hi:g}{')' if key == 'tolerance' else ']'} "
                                  f"(e.g. {e}), not {v!r}.")
            out[key] = float(v)
    if value.get("reference_model") is not None:
        v = value["reference_model"]
        if not isinstance(v, str) or not v:
            raise ConfigError(f"{where}.reference_model must be \"pretrained\" (the checkpoint the model was fine-tuned "
                              f"from) or a model, not {v!r}.")
        out["reference_model"] = v
    return out


def calibration_rule(method: str, options: Any = True) -> tuple[dict, list]:
    """What ``"calibrate": OPTIONS`` runs for ``method``: ``(rule, grid)`` -- the rule (the grid's labels, the
    tolerances, and the reference model's name where truth ratios are compared with one; part of the cache keys) and
    the grid's settings (classifier guidance: its T = 1 settings)."""
    from t3unlearn.t3.calibrate import (DEFAULT_COPY_FLOORS, DEFAULT_SCALES, DEFAULT_SUPPORTS, DEFAULT_TEMPERATURES,
                                        DEFAULT_TEMPERINGS, DEFAULT_WORDS, MIA_TOLERANCE, RETAIN_TOLERANCE, grid)
    from t3unlearn.t3.grid import CHOICE

    o = calibration_options(options) or {}
    temps = [1.0] if method == "cg" else o.get("temperatures", list(DEFAULT_TEMPERATURES))
    settings = grid(temps, o.get("scales", DEFAULT_SCALES), o.get("temperings", DEFAULT_TEMPERINGS),
                    tails=o.get("tails", (None,)), biases=o.get("biases", (0.0,)), supports=o.get("supports", DEFAULT_SUPPORTS),
                    floors=o.get("floors", (None,)), copy_floors=o.get("copy_floors", DEFAULT_COPY_FLOORS),
                    piece_floors=o.get("piece_floors", (10.0,)), spellings=o.get("spellings", ("base",)),
                    words=DEFAULT_WORDS if "piece_floors" not in o and "spellings" not in o else None)
    rule = {"settings": [s.label() for s in settings], "mia_tolerance": o.get("mia_tolerance", MIA_TOLERANCE),
            "tolerance": o.get("tolerance", RETAIN_TOLERANCE), "choice": CHOICE}
    if o.get("reference_model"):
        rule["reference_model"] = o["reference_model"]
    return rule, settings
