"""``t3unlearn compare``: run every method on one benchmark split, evaluate, tabulate, plot.

Every method ends as a causal LM behind :class:`t3unlearn.lm.CausalLM` and is scored by the
one evaluation runner (:func:`t3unlearn.eval.runner.evaluate`); forget quality and privleak
are against the retain (oracle) model's results on the same split.

Plan per method (settings from a JSON config; the packaged default is
``compare_default.json``):

1. **sweep** — each setting of the method's ``sweep`` list is run with the first seed and scored
   by a *quick* evaluation (teacher-forced only: forget ``Q_A_Prob`` on forgetXX, retain
   ``Q_A_Prob`` on retain_perturbed; ``selection.eval: "full"`` uses the whole evaluation);
2. **select** — the setting with the lowest forget ``Q_A_Prob`` among those whose retain
   ``Q_A_Prob`` is at least the full model's minus ``utility_tolerance`` (0.05); if none keeps
   that much, the one with the highest retain ``Q_A_Prob``. The rule never looks at the retain
   model's results on the forget set (so not at forget quality or privleak);
3. **evaluate** — the selected setting, with every seed, gets the full TOFU evaluation; the
   table reports mean ± std over seeds.

Data: every method trains on the forget set and the same seeded retain subset, as large as the
forget set (``retain_subset: "forget"``; ``null`` for the whole retain set) — one retain item
per forget item is what each method's pairing uses per epoch anyway.

Every (method, setting, seed, evaluation) is a *unit* cached under ``OUT/runs/METHOD/ID/`` (its
``record.json`` and the evaluation files, written atomically): a rerun resumes where it
stopped. By default each unit runs in a fresh Python process so that its peak memory is its
own (``isolate``). Trained artifacts that several settings share are cached under
``OUT/artifacts`` (the T3 head — also used by classifier guidance, which is the same head with
T = 1 —, the ULD assistant, whose ``alpha`` only matters at inference, and the fine-tuned models
between the sweep and the evaluation; their weights are deleted at the end unless
``keep_models``).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Sequence

from t3unlearn.errors import T3Error
from t3unlearn.eval.metrics import UTILITY_PARTS

ALL_METHODS = ("t3", "cg", "uld", "gradascent", "graddiff", "npo", "simnpo", "idkdpo", "rmu", "retrain")
INFERENCE_METHODS = ("t3", "cg", "uld")
FINETUNE = ("gradascent", "graddiff", "npo", "simnpo", "idkdpo", "rmu", "retrain")
TITLES = {
    "full": "Full (before unlearning)",
    "t3": "T3",
    "cg": "Classifier guidance (T=1)",
    "uld": "ULD",
    "gradascent": "GradAscent",
    "graddiff": "GradDiff",
    "npo": "NPO",
    "simnpo": "SimNPO",
    "idkdpo": "IdkDPO",
    "rmu": "RMU",
    "retrain": "Retrain (oracle)",
}
TABLE_METRICS = (
    "forget_quality",
    "model_utility",
    "forget_Q_A_ROUGE",
    "forget_truth_ratio",
    "privleak",
    "extraction_strength",
)
SUMMARY_METRICS = TABLE_METRICS + ("forget_Q_A_Prob", "exact_memorization", *UTILITY_PARTS, "mia_min_k")
T3_HEAD_KEYS = ("hidden_size", "activation", "layers", "epochs", "warmup_epochs", "lr", "weight_decay", "batch_size")
DEFAULT_CONFIG = Path(__file__).with_name("compare_default.json")
RECORD = "record.json"


# --------------------------------------------------------------------------- configuration


def load_compare_config(path: str | os.PathLike | None = None) -> dict:
    """The packaged default config, with ``path``'s top-level keys and method entries laid over it."""
    with open(DEFAULT_CONFIG, encoding="utf-8") as fh:
        cfg = json.load(fh)
    if path is not None:
        from t3unlearn.io import load_json

        user = load_json(path)
        if not isinstance(user, dict):
            raise T3Error(f"{path} must hold a JSON object (see 't3unlearn compare --print-config').")
        for key, value in user.items():
            if key == "methods":
                if not isinstance(value, dict):
                    raise T3Error(f"{path}: 'methods' must map method names to settings.")
                for name, entry in value.items():
                    if name not in ALL_METHODS:
                        raise T3Error(f"{path}: unknown method {name!r}; methods: {', '.join(ALL_METHODS)}.")
                    cfg["methods"][name] = entry
            elif key in ("selection", "eval", "train") and isinstance(value, dict):
                cfg[key] = {**cfg.get(key, {}), **value}
            else:
                cfg[key] = value
    _validate_config(cfg, path or DEFAULT_CONFIG)
    return cfg


def _validate_config(cfg: dict, where) -> None:
    from t3unlearn.baselines.trainer import TrainConfig

    sel = cfg.get("selection", {})
    if sel.get("metric", "forget_Q_A_Prob") in ("forget_quality", "privleak"):
        raise T3Error(f"{where}: the selection metric may not use the retain model's forget-set results (forget_quality, privleak).")
    TrainConfig.from_dict(cfg.get("train", {}))
    for name, entry in cfg["methods"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("sweep", []), list):
            raise T3Error(f"{where}: method {name!r} needs an object with 'params', 'train' and a 'sweep' list.")
        for setting in method_settings(cfg, name):
            if name not in ("t3", "cg"):
                TrainConfig.from_dict(setting["train"])


_TRAIN_KEYS: set[str] | None = None


def _train_keys() -> set[str]:
    global _TRAIN_KEYS
    if _TRAIN_KEYS is None:
        from t3unlearn.baselines.trainer import TrainConfig

        _TRAIN_KEYS = {f.name for f in fields(TrainConfig)}
    return _TRAIN_KEYS


def method_settings(cfg: dict, method: str) -> list[dict]:
    """The method's settings to try: base ``params``/``train`` with each ``sweep`` override."""
    entry = cfg["methods"].get(method, {})
    base_params = dict(entry.get("params", {}))
    base_train = {**cfg.get("train", {}), **entry.get("train", {})}
    sweep = entry.get("sweep") or [{}]
    out = []
    for override in sweep:
        params, train = dict(base_params), dict(base_train)
        for k, v in override.items():
            if method in ("t3", "cg"):
                params[k] = v  # T3's head and optimizer settings are all unlearn() arguments
            elif k in _train_keys():
                train[k] = v
            else:
                params[k] = v
        if method in ("t3", "cg"):
            train = {}
        out.append({"params": params, "train": train, "override": dict(override)})
    return out


def setting_label(setting: dict) -> str:
    o = setting.get("override") or {}
    return ", ".join(f"{k}={v}" for k, v in o.items()) or "default"


# --------------------------------------------------------------------------- one unit


def _cost_of_world_model(model_dir: Path) -> dict:
    info = Path(model_dir) / "train_info.json"
    out: dict[str, Any] = {"wall_seconds": None, "peak_rss_mb": None, "note": "the world's retain model, reused"}
    if info.is_file():
        try:
            data = json.loads(info.read_text())
            secs = data.get("seconds") or (data.get("log") or {}).get("seconds")
            if secs is not None:
                out["wall_seconds"] = float(secs)
                out["note"] = "the world's retain model, reused (its training time from train_info.json)"
        except (ValueError, TypeError):
            pass
    return out


class _lock:
    """An exclusive file lock beside ``path`` (parallel runs share trained artifacts)."""

    def __init__(self, path: Path):
        self.path = Path(path).with_name(Path(path).name + ".lock")

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "w")
        try:
            import fcntl

            fcntl.flock(self.fh, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - not POSIX
            pass
        return self

    def __exit__(self, *exc):
        self.fh.close()


def _num_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _artifact_cost(path: Path) -> dict | None:
    f = path / "cost.json"
    return json.loads(f.read_text()) if f.is_file() else None


def _t3_model(spec: dict, base, tokenizer, forget, retain):
    """T3 / classifier guidance: train (or reuse) the head, attach it with this setting's T and s."""
    from t3unlearn.io import fingerprint
    from t3unlearn.t3.model import T3ForCausalLM

    p = spec["params"]
    head_kw = {k: p[k] for k in T3_HEAD_KEYS if k in p}
    key = fingerprint("t3-head-v1", head_kw, spec["seed"], spec["model"], spec["forget"], spec["retain"], spec["max_length"],
                      spec.get("retain_subset"))
    art = Path(spec["artifacts"]) / f"t3-head-{key}-seed{spec['seed']}"
    with _lock(art):
        cost = _t3_head(spec, art, base, tokenizer, forget, retain, head_kw)
    model = T3ForCausalLM.from_base(base, str(art), temperature=p.get("temperature", 2.5), scale=p.get("scale", 1.0))
    return model, {**cost, "artifact": str(art)}


def _t3_head(spec, art, base, tokenizer, forget, retain, head_kw):
    from t3unlearn.baselines.measure import Measure
    from t3unlearn.io import save_json
    from t3unlearn.t3 import unlearn

    p = spec["params"]
    cost = _artifact_cost(art)
    if cost is None:
        with Measure() as m:
            result = unlearn(
                base, tokenizer, forget, retain, temperature=p.get("temperature", 2.5), scale=p.get("scale", 1.0),
                seed=spec["seed"], cache=False, progress=spec["progress"], max_length=spec["max_length"], **head_kw,
            )
        result.model.save_pretrained(art)
        cost = {**m.record(), "trainable_params": _num_params(result.model.head),
                "report": {k: v for k, v in result.report.items() if isinstance(v, (int, float, str, bool))}}
        save_json(art / "cost.json", cost)
    return cost


def _uld_model(spec: dict, forget, retain):
    from t3unlearn.baselines.uld import ULDForCausalLM
    from t3unlearn.io import fingerprint

    p = dict(spec["params"])
    alpha = float(p.pop("alpha", 1.0))
    train = {**spec["train"], "seed": spec["seed"], "max_length": spec["max_length"]}
    key = fingerprint("uld-v1", p, train, spec["model"], spec["forget"], spec["retain"], spec.get("retain_subset"))
    art = Path(spec["artifacts"]) / f"uld-{key}-seed{spec['seed']}"
    with _lock(art):
        cost = _artifact_cost(art)
        if cost is None:
            cost = _train_uld_artifact(spec, art, forget, retain, p, alpha, train)
    model = ULDForCausalLM.from_pretrained(str(art), alpha=alpha)
    return model, {**cost, "artifact": str(art)}


def _train_uld_artifact(spec, art, forget, retain, p, alpha, train):
    from t3unlearn.baselines.api import train_uld
    from t3unlearn.io import save_json

    rec = train_uld(spec["model"], forget, retain, art, params={**p, "alpha": alpha}, config=train, progress=spec["progress"])
    cost = {k: rec[k] for k in ("wall_seconds", "peak_rss_mb", "rss_start_mb", "trainable_params", "steps")}
    cost["final"] = rec["history"][-1] if rec["history"] else {}
    save_json(art / "cost.json", cost)
    return cost


def _finetuned(spec: dict, forget, retain):
    """A fine-tuning baseline's model: trained once per (method, setting, seed), cached as an artifact."""
    from t3unlearn.baselines.api import load_base, load_idk, save_model
    from t3unlearn.baselines.measure import Measure
    from t3unlearn.baselines.trainer import train
    from t3unlearn.io import fingerprint, save_json

    method, seed = spec["method"], int(spec["seed"])
    start = spec["pretrained"] if method == "retrain" else spec["model"]
    if method == "retrain" and not start:
        raise T3Error("retrain needs the pretrained base (--pretrained) or a retain model (--retain-model).")
    key = fingerprint("ft-v1", method, spec["params"], spec["train"], seed, start, spec["forget"], spec["retain"],
                      spec["max_length"], spec.get("retain_subset"))
    art = Path(spec["artifacts"]) / f"{method}-{key}-seed{seed}"
    with _lock(art):
        cost = _artifact_cost(art)
        if cost is not None and (art / "model.safetensors").is_file():
            net, tok = load_base(str(art))
            return net.eval(), tok, cost
        net, tok = load_base(start)
        idk = load_idk(spec["idk"]) if spec.get("idk") else None
        with Measure() as m:
            rec = train(method, net, tok, forget, retain, params=spec["params"],
                        config={**spec["train"], "seed": seed, "max_length": spec["max_length"]}, idk=idk, progress=spec["progress"])
        cost = {**m.record(), "trainable_params": rec["trainable_params"], "steps": rec["steps"],
                "final": rec["history"][-1] if rec["history"] else {}}
        save_model(net, tok, art, {k: v for k, v in rec.items() if k != "history"})
        save_json(art / "cost.json", cost)
    return net, tok, cost


def _retain_subset(spec: dict, forget, retain):
    """The retain items every method trains with: a seeded subset as large as the forget set (``retain_subset:
    "forget"``, the default), a number of items, or all of them (``null``). Same subset for every method of a seed."""
    import random

    how = spec.get("retain_subset", "forget")
    if how in (None, "all") or retain is None:
        return retain
    n = len(forget) if how == "forget" else int(how)
    if n >= len(retain):
        return retain
    idx = sorted(random.Random(f"retain-subset-{spec['seed']}").sample(range(len(retain)), n))
    return retain.select(idx)


def quick_scores(lm, data: dict, batch_size: int = 32) -> dict:
    """Teacher-forced only (no generation): forget and retain Q_A_Prob, for selecting a sweep setting."""
    import math as _m

    out = {}
    for role, key in (("forget_qa", "forget_Q_A_Prob"), ("retain", "retain_Q_A_Prob")):
        ds = data[role]
        scores = lm.token_scores(lm.encode(ds["question"], ds["answer"]), batch_size=batch_size)
        out[key] = sum(_m.exp(-s.avg_loss) for s in scores) / len(scores)
    return out


def execute_unit(spec: dict) -> dict:
    """Unlearn with one (method, setting, seed), evaluate, write ``record.json`` + results. Returns the record.

    ``spec["eval_mode"]``: ``"full"`` (the TOFU evaluation) or ``"quick"`` (forget / retain Q_A_Prob only,
    for the sweep); the trained model is an artifact shared by both.
    """
    import torch

    from t3unlearn.data import load_qa
    from t3unlearn.eval.results import EvalResults
    from t3unlearn.eval.runner import evaluate, load_eval_data
    from t3unlearn.io import atomic_dir, default_device, save_json, set_seed
    from t3unlearn.lm import CausalLM, load_lm, load_model, load_tokenizer

    method, seed = spec["method"], int(spec["seed"])
    set_seed(seed)
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    t_unit = time.perf_counter()
    forget = retain = None
    if method not in ("full", "retrain") or not spec.get("retain_model"):
        forget = load_qa(spec["forget"], what="forget set")
        retain = _retain_subset(spec, forget, load_qa(spec["retain"], what="retain set"))

    cost: dict[str, Any]
    if method == "full":
        lm = load_lm(spec["model"], name="full")
        cost = {"wall_seconds": 0.0, "peak_rss_mb": None, "trainable_params": 0, "note": "no unlearning"}
    elif method == "retrain" and spec.get("retain_model"):
        lm = load_lm(spec["retain_model"], name="retrain")
        cost = {**_cost_of_world_model(Path(spec["retain_model"])), "trainable_params": _num_params(lm.model)}
    elif method in ("t3", "cg"):
        base = load_model(spec["model"], device=default_device())
        tok = load_tokenizer(spec["model"])
        model, cost = _t3_model(spec, base, tok, forget, retain)
        lm = CausalLM(model, tok, name=method)
    elif method == "uld":
        model, cost = _uld_model(spec, forget, retain)
        lm = CausalLM(model.to(default_device()), load_tokenizer(spec["model"]), name=method)
    else:
        net, tok, cost = _finetuned(spec, forget, retain)
        lm = CausalLM(net, tok, name=method)

    data = load_eval_data(spec["source"], spec["split"])
    ev = spec["eval"]
    record = {
        "method": method,
        "label": spec["label"],
        "setting": spec["setting"],
        "params": spec["params"],
        "train": spec["train"],
        "seed": seed,
        "split": spec["split"],
        "benchmark": spec["benchmark"],
        "eval_mode": spec.get("eval_mode", "full"),
        "cost": cost,
    }
    if spec.get("eval_mode") == "quick":
        t = time.perf_counter()
        record["summary"] = quick_scores(lm, data, int(ev.get("batch_size", 32)))
        record["eval_seconds"] = time.perf_counter() - t
        record["unit_seconds"] = time.perf_counter() - t_unit
        with atomic_dir(spec["unit_dir"]) as tmp:
            save_json(tmp / RECORD, record)
        return record
    reference = EvalResults.load(spec["reference"]) if spec.get("reference") else None
    res = evaluate(lm, data=data, split=spec["split"], benchmark=spec["benchmark"], retain_results=reference,
                   batch_size=int(ev.get("batch_size", 32)), max_new_tokens=int(ev.get("max_new_tokens", 200)),
                   progress=spec["progress"])
    res.info.update({"name": spec["label"], "method": method, "setting": spec["setting"], "seed": seed,
                     "role": "retain" if method == "retrain" else "model"})
    record.update(eval_seconds=res.info.get("wall_time_s"), unit_seconds=time.perf_counter() - t_unit,
                  summary={k: res.agg(k) for k in SUMMARY_METRICS})
    with atomic_dir(spec["unit_dir"]) as tmp:
        res.save(tmp / "eval")
        save_json(tmp / RECORD, record)
    return record


def _run_unit(spec: dict, *, isolate: bool, log: Callable[[str], None]) -> dict:
    unit_dir = Path(spec["unit_dir"])
    done = unit_dir / RECORD
    if done.is_file():
        try:
            return json.loads(done.read_text())
        except ValueError:
            pass  # corrupt: redo
    log(f"  run {spec['label']} [{spec['setting']}] seed {spec['seed']} ({spec.get('eval_mode', 'full')} eval) ...")
    t0 = time.perf_counter()
    if not isolate:
        rec = execute_unit(spec)
    else:
        from t3unlearn.io import save_json

        spec_path = unit_dir.parent / f".{unit_dir.name}.spec.json"
        save_json(spec_path, spec)
        try:
            proc = subprocess.run([sys.executable, "-m", "t3unlearn.baselines.compare", str(spec_path)])
        finally:
            spec_path.unlink(missing_ok=True)
        if proc.returncode != 0 or not done.is_file():
            raise T3Error(f"the run {spec['label']} (seed {spec['seed']}) failed (exit {proc.returncode}); see its output above.")
        rec = json.loads(done.read_text())
    s = rec["summary"]
    if rec.get("eval_mode") == "quick":
        scores = f"forget prob {_g(s.get('forget_Q_A_Prob'))}, retain prob {_g(s.get('retain_Q_A_Prob'))}"
    else:
        scores = (f"forget quality {_g(s.get('forget_quality'))}, utility {_g(s.get('model_utility'))}, "
                  f"forget prob {_g(s.get('forget_Q_A_Prob'))}")
    log(f"    {spec['label']} [{spec['setting']}] seed {spec['seed']} done in {time.perf_counter() - t0:.0f}s "
        f"({rec.get('eval_mode', 'full')} eval): {scores}, "
        f"unlearning {_g(rec['cost'].get('wall_seconds'))}s")
    return rec


def _g(x) -> str:
    return "n/a" if x is None else f"{x:.3g}"


# --------------------------------------------------------------------------- selection and aggregation


def select_setting(records: Sequence[dict], full_utility: float | None, selection: dict) -> int:
    """Index of the chosen setting (see the module doc); records are the first-seed runs, in sweep order."""
    metric = selection.get("metric", "forget_Q_A_Prob")
    umetric = selection.get("utility_metric", "retain_Q_A_Prob")
    tol = float(selection.get("utility_tolerance", 0.05))
    lower_is_better = selection.get("lower_is_better", True)

    def val(r, k):
        v = r["summary"].get(k)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

    floor = None if full_utility is None else full_utility - tol
    ok = [i for i, r in enumerate(records) if floor is None or (val(r, umetric) is not None and val(r, umetric) >= floor)]
    ok = [i for i in ok if val(records[i], metric) is not None]
    if ok:
        sign = 1 if lower_is_better else -1
        return min(ok, key=lambda i: (sign * val(records[i], metric), i))
    return max(range(len(records)), key=lambda i: (val(records[i], umetric) or -1.0, -i))


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None, None, 0
    mu = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return mu, sd, len(vals)


def aggregate(method: str, setting: str, records: Sequence[dict]) -> dict:
    row: dict[str, Any] = {"method": method, "title": TITLES.get(method, method), "setting": setting, "seeds": [r["seed"] for r in records]}
    for k in SUMMARY_METRICS:
        row[k] = mean_std([r["summary"].get(k) for r in records])[:2]
    row["trainable_params"] = records[0]["cost"].get("trainable_params") if records else None
    row["wall_seconds"] = mean_std([r["cost"].get("wall_seconds") for r in records])[:2]
    row["peak_rss_mb"] = mean_std([r["cost"].get("peak_rss_mb") for r in records])[:2]
    row["note"] = records[0]["cost"].get("note") if records else None
    fqs = [r["summary"].get("forget_quality") for r in records if r["summary"].get("forget_quality") is not None]
    row["fq_range"] = (min(fqs), max(fqs)) if fqs else (None, None)
    return row


# --------------------------------------------------------------------------- formatting


def _fmt(metric: str, v: float | None) -> str:
    """Like the evaluation report's cells, plus the cost columns."""
    if v is not None and metric in ("wall_seconds", "peak_rss_mb"):
        return f"{v:.1f}" if v < 100 else f"{v:.0f}"
    from t3unlearn.eval.report import fmt

    return fmt(metric, v)


def _cell(metric: str, pair) -> str:
    mu, sd = pair if isinstance(pair, (tuple, list)) else (pair, None)
    if mu is None:
        return "n/a"
    return _fmt(metric, mu) if not sd else f"{_fmt(metric, mu)} ± {_fmt(metric, sd)}"


def _params(n) -> str:
    if n is None:
        return "n/a"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


COLUMNS = (
    ("forget_quality", "forget quality ↑"),
    ("model_utility", "model utility ↑"),
    ("forget_Q_A_ROUGE", "forget ROUGE ↓"),
    ("forget_truth_ratio", "forget truth ratio"),
    ("privleak", "privleak (→0)"),
    ("extraction_strength", "extraction strength ↓"),
)


def markdown_table(rows: Sequence[dict]) -> str:
    head = ["method", "setting", "seeds", *(t for _, t in COLUMNS), "trainable params", "wall time (s)", "peak RSS (MB)"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---:|" + "---:|" * (len(head) - 3)]
    for r in rows:
        cells = [r["title"], r["setting"], str(len(r["seeds"]))]
        cells += [_cell(k, r[k]) for k, _ in COLUMNS]
        cells += [_params(r["trainable_params"]), _cell("wall_seconds", r["wall_seconds"]), _cell("peak_rss_mb", r["peak_rss_mb"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep_table(sweeps: dict[str, list[dict]], chosen: dict[str, int], selection: dict) -> str:
    metric = selection.get("metric", "forget_Q_A_Prob")
    umetric = selection.get("utility_metric", "retain_Q_A_Prob")
    lines = [f"| method | setting (first seed) | {metric} | {umetric} | chosen |", "|---|---|---:|---:|:---:|"]
    for method, recs in sweeps.items():
        for i, r in enumerate(recs):
            s = r["summary"]
            lines.append(
                f"| {TITLES.get(method, method)} | {r['setting']} | {_fmt('x', s.get(metric))} | {_fmt('x', s.get(umetric))} | "
                f"{'✓' if chosen.get(method) == i else ''} |"
            )
    return "\n".join(lines)


def verdict(rows: Sequence[dict], full_utility: float | None, tol: float) -> list[str]:
    """Plain-language checks: does T3 beat every baseline on forget quality within the utility band; wall-time ratios."""
    by = {r["method"]: r for r in rows}
    out = []
    if "t3" in by and full_utility is not None:
        floor = full_utility - tol
        t3 = by["t3"]
        fq = t3["forget_quality"][0]
        mu = t3["model_utility"][0]
        others = [r for r in rows if r["method"] not in ("t3", "full", "retrain") and r["forget_quality"][0] is not None]
        in_band = [r for r in others if r["model_utility"][0] is not None and r["model_utility"][0] >= floor]
        beaten = [r for r in in_band if fq is not None and r["forget_quality"][0] >= fq]
        status = "within" if mu is not None and mu >= floor else "outside"
        out.append(
            f"- T3: forget quality {_fmt('forget_quality', fq)} at model utility {_fmt('x', mu)} ({status} {tol} of the full "
            f"model's {full_utility:.3f}). Methods within that utility band: "
            + (", ".join(f"{r['title']} ({_fmt('forget_quality', r['forget_quality'][0])})" for r in in_band) or "none")
            + ". "
            + ("T3 has the highest forget quality among them." if not beaten and status == "within" else
               ("Not beaten within the band, but T3 itself is outside it." if not beaten else
                "T3 is matched or beaten by: " + ", ".join(r["title"] for r in beaten) + "."))
        )
    if "t3" in by and by["t3"]["wall_seconds"][0]:
        t = by["t3"]["wall_seconds"][0]
        ratios = [f"{by[m]['title']} {by[m]['wall_seconds'][0] / t:.1f}x" for m in ("graddiff", "npo", "gradascent", "simnpo", "idkdpo", "rmu", "uld")
                  if m in by and by[m]["wall_seconds"][0]]
        if ratios:
            out.append(f"- Unlearning wall time relative to T3's {t:.1f}s (feature extraction + head training): " + ", ".join(ratios) + ".")
    return out


def plot(rows: Sequence[dict], path: Path, title: str) -> Path:
    """Forget quality (log x) vs model utility: one marker per method (mean over seeds), with a legend,
    horizontal bars from the lowest to the highest seed's forget quality; the oracle starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from t3unlearn.io import atomic_write

    fig, ax = plt.subplots(figsize=(7.2, 4.8), dpi=150)
    ax.set_xscale("log")
    markers = "osD^vP<>Xhp"
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    k = 0
    xs = []
    for r in rows:
        fq, mu = r["forget_quality"][0], r["model_utility"][0]
        if fq is None or mu is None:
            continue
        x = max(fq, 1e-300)
        xs.append(x)
        if r["method"] == "retrain":
            ax.scatter([x], [mu], marker="*", s=260, color="black", zorder=4, label=f"{r['title']} (reference)")
            ax.axhline(mu, color="0.6", ls="--", lw=0.8)
            continue
        lo, hi = r.get("fq_range", (None, None))
        c = "0.45" if r["method"] == "full" else colors[k % len(colors)]
        if lo is not None and hi is not None and hi > lo:
            ax.plot([max(lo, 1e-300), hi], [mu, mu], color=c, lw=1.2, alpha=0.7, zorder=2)
        ax.scatter([x], [mu], marker="x" if r["method"] == "full" else markers[k % len(markers)], s=70, color=c,
                   edgecolor="black" if r["method"] != "full" else None, lw=0.5, zorder=3, label=r["title"])
        if r["method"] != "full":
            k += 1
    ax.axvline(0.05, color="tab:green", ls=":", lw=1)
    ax.set_xlim(min(xs + [1e-3]) / 10, 3.0)
    ax.set_xlabel("forget quality (KS p-value vs the oracle; log scale) → better")
    ax.set_ylabel("model utility → better")
    ax.set_title(f"{title}: forget quality vs model utility (mean over seeds; bars: seed range)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- the driver


def _resolve_models(benchmark: str, split: str, world, model, retain_model, pretrained, log):
    """``(bench, model, retain_model, pretrained)``: the benchmark's own tiny models unless given."""
    from t3unlearn.benchmarks import get_benchmark, resolve_model
    from t3unlearn.eval.runner import retain_split

    bench = get_benchmark(world if benchmark == "world" and world else benchmark)
    if bench.kind != benchmark:
        raise T3Error(f"--world applies to --benchmark world, not {benchmark}.")
    if model or retain_model:
        model = resolve_model(model, log=log) if model else None
        retain_model = resolve_model(retain_model, log=log) if retain_model else None
        if bench.kind == "tofu" and not model:
            raise T3Error("with --retain-model on TOFU, give --model too (the fine-tuned 'full' model to unlearn from).")
        if bench.kind == "tofu" and not retain_model and not pretrained:
            raise T3Error("--benchmark tofu with your own --model needs --retain-model (the oracle) or --pretrained (to retrain one).")
    need = [n for n, given in (("full", model), (retain_split(split), retain_model or (pretrained if model else None))) if not given]
    got = {k: str(v) for k, v in bench.models(tuple(need), log=log).items()} if need else {}
    return bench, model or got["full"], retain_model or got.get(retain_split(split)), pretrained


def compare(
    benchmark: str = "world",
    split: str = "forget10",
    methods: Sequence[str] = ALL_METHODS,
    seeds: int = 3,
    config: str | os.PathLike | dict | None = None,
    out: str | os.PathLike = "compare",
    *,
    world: str | None = None,
    model: str | None = None,
    retain_model: str | None = None,
    pretrained: str | None = None,
    isolate: bool | None = None,
    keep_models: bool = False,
    progress: bool = True,
    threads: int | None = None,
    jobs: int = 1,
    log: Callable[[str], None] = print,
) -> dict:
    """Run, evaluate and tabulate ``methods`` on one split (see the module doc). Returns the report dict
    (``rows``, ``sweeps``, ``markdown``, ``plot``), also written to ``OUT/SPLIT/``."""
    from t3unlearn.eval.runner import retain_split, split_configs
    from t3unlearn.io import atomic_write, fingerprint, save_json

    split_configs(split)
    methods = [m.strip().lower() for m in methods if m.strip()]
    bad = [m for m in methods if m not in ALL_METHODS]
    if bad:
        raise T3Error(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(ALL_METHODS)}.")
    if seeds < 1:
        raise T3Error(f"--seeds must be >= 1, not {seeds}.")
    cfg = config if isinstance(config, dict) else load_compare_config(config)
    isolate = cfg.get("isolate", True) if isolate is None else isolate
    threads = threads or cfg.get("threads")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    ev = cfg.get("eval", {})
    out = Path(out) / split
    t_start = time.perf_counter()

    bench, model, retain_model, pretrained = _resolve_models(benchmark, split, world, model, retain_model, pretrained, log)
    source = bench.data_source()
    world_dir = str(bench.world_dir()) if bench.kind == "world" else None
    forget_spec, retain_spec = f"{source}:{split}", f"{source}:{retain_split(split)}"
    idk = str(Path(world_dir) / "idk.jsonl") if world_dir and (Path(world_dir) / "idk.jsonl").is_file() else None
    max_length = int(cfg.get("max_length", 512))
    log(f"compare: {bench.label} {split}; model {model}; retain model {retain_model}; out {out}")

    # the retain (oracle) reference: forget quality and privleak of every run are against it
    ref_dir = out / "reference"
    if not (ref_dir / "TOFU_EVAL.json").is_file():
        from t3unlearn.benchmarks import cached_evaluation

        if not retain_model:
            raise T3Error("give --retain-model: forget quality needs the oracle's results.")
        res = cached_evaluation(retain_model, name=retain_split(split), split=split, data=bench.data(split),
                                benchmark=bench.label, batch_size=int(ev.get("batch_size", 32)),
                                max_new_tokens=int(ev.get("max_new_tokens", 200)), progress=progress, log=log, role="retain")
        res.save(ref_dir)

    base_spec = {
        "benchmark": bench.label, "source": source, "split": split, "world": world_dir, "model": model, "retain_model": retain_model,
        "pretrained": pretrained, "forget": forget_spec, "retain": retain_spec, "idk": idk, "eval": ev,
        "reference": str(ref_dir), "artifacts": str(out / "artifacts"), "progress": progress, "max_length": max_length,
        "keep_model": keep_models, "threads": threads, "retain_subset": cfg.get("retain_subset", "forget"),
    }

    def spec_of(method: str, setting: dict, seed: int, mode: str = "full") -> dict:
        key = fingerprint("unit-v2", method, setting["params"], setting["train"], seed, mode,
                          {k: base_spec[k] for k in ("benchmark", "split", "world", "model", "retain_model", "pretrained", "eval", "max_length", "retain_subset")})
        return {**base_spec, "method": method, "params": setting["params"], "train": setting["train"], "seed": seed, "eval_mode": mode,
                "setting": setting_label(setting), "label": method, "unit_dir": str(out / "runs" / method / f"{key[:10]}-seed{seed}{'-quick' if mode == 'quick' else ''}")}

    def run_all(specs: list[dict]) -> list[dict]:
        if jobs <= 1 or not isolate or len(specs) < 2:
            return [_run_unit(s, isolate=isolate, log=log) for s in specs]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            return list(pool.map(lambda s: _run_unit(s, isolate=True, log=log), specs))

    no_setting = {"params": {}, "train": {}, "override": {}}
    settings = {
        m: (method_settings(cfg, m) if m != "retrain" or not retain_model else [no_setting]) for m in methods
    }
    seed_list = list(range(seeds))
    selection = cfg.get("selection", {})
    sel_mode = selection.get("eval", "quick")
    tol = float(selection.get("utility_tolerance", 0.05))
    # 1. the sweeps, first seed (quick evaluation by default: forget / retain Q_A_Prob, no generation)
    swept = [m for m in methods if len(settings[m]) > 1]
    sel_specs = [spec_of("full", no_setting, 0, sel_mode)] + [spec_of(m, st, seed_list[0], sel_mode) for m in swept for st in settings[m]]
    done = run_all(sel_specs) if swept else [None]
    full_sel, done = done[0], done[1:]
    full_sel_u = full_sel["summary"].get(selection.get("utility_metric", "retain_Q_A_Prob")) if full_sel else None
    sweeps: dict[str, list[dict]] = {}
    chosen: dict[str, int] = {m: 0 for m in methods}
    for m in swept:
        sweeps[m], done = done[: len(settings[m])], done[len(settings[m]) :]
        chosen[m] = select_setting(sweeps[m], full_sel_u, selection)
        log(f"{TITLES[m]}: selected {setting_label(settings[m][chosen[m]])}")
    # 2. the full evaluation of the selected settings, every seed (the world's retain model is one fixed model)
    todo = [("full", no_setting, 0)] + [
        (m, settings[m][chosen[m]], s) for m in methods for s in seed_list if s == seed_list[0] or not (m == "retrain" and retain_model)
    ]
    recs = run_all([spec_of(m, st, s) for m, st, s in todo])
    full = recs[0]
    full_mu = full["summary"].get("model_utility")
    rows = [aggregate("full", "-", [full])]
    for m in methods:
        rows.append(aggregate(m, setting_label(settings[m][chosen[m]]), [r for (mm, _, _), r in zip(todo, recs) if mm == m]))

    title = f"{benchmark} {split}"
    png = plot(rows, out / f"fq_vs_mu_{split}.png", title)
    lines = [
        f"### {title}: {len(seed_list)} seed(s) per method",
        "",
        markdown_table(rows),
        "",
        *verdict(rows, full_mu, tol),
        "",
        f"Sweep (first seed, {sel_mode} evaluation; selection: lowest {selection.get('metric', 'forget_Q_A_Prob')} among "
        f"settings with {selection.get('utility_metric', 'retain_Q_A_Prob')} ≥ the full model's ({_g(full_sel_u)}) − {tol}):",
        "",
        sweep_table(sweeps, chosen, selection),
        "",
    ]
    text = "\n".join(lines)
    report = {"benchmark": benchmark, "split": split, "seeds": seed_list, "full_utility": full_mu, "rows": rows,
              "sweeps": {m: [{"setting": r["setting"], "summary": r["summary"], "cost": r["cost"]} for r in recs] for m, recs in sweeps.items()},
              "chosen": chosen, "config": cfg, "wall_seconds": time.perf_counter() - t_start}
    if not keep_models:  # fine-tuned weights were only needed between the sweep and the evaluations
        for art in (out / "artifacts").glob("*-seed*"):
            if art.name.split("-")[0] in FINETUNE and (art / "model.safetensors").is_file():
                (art / "model.safetensors").unlink()
    save_json(out / "compare.json", report)
    with atomic_write(out / "compare.md", "w", encoding="utf-8") as fh:
        fh.write(text)
    report["markdown"] = text
    report["plot"] = str(png)
    return report


def doc_markers(split: str) -> tuple[str, str]:
    """The markers around one split's generated section of a ``--doc`` file."""
    return (f"<!-- t3unlearn compare {split}: generated, do not edit by hand -->", f"<!-- end of generated section {split} -->")


def write_doc(doc: str | os.PathLike, reports: Sequence[dict], command: str) -> Path:
    """Put each report's table and plot into ``doc``, one generated section per split (replaced when
    present, appended otherwise, each with the command that made it); plots are copied beside the document."""
    import shutil

    from t3unlearn.io import atomic_write

    doc = Path(doc)
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = doc.read_text(encoding="utf-8") if doc.is_file() else "# Comparison\n"
    for rep in reports:
        begin, end = doc_markers(rep["split"])
        png = Path(rep["plot"])
        target = doc.parent / f"comparison_{rep['split']}.png"
        if png.resolve() != target.resolve():
            shutil.copyfile(png, target)
        block = "\n".join([begin, "", "```bash", command, "```", "", rep["markdown"],
                           f"![forget quality vs model utility, {rep['split']}]({target.name})", "", end])
        if begin in text and end in text:
            pre, rest = text.split(begin, 1)
            _, post = rest.split(end, 1)
            text = pre + block + post
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
    with atomic_write(doc, "w", encoding="utf-8") as fh:
        fh.write(text)
    return doc


def _main(argv: Sequence[str]) -> int:  # the isolated child: python -m t3unlearn.baselines.compare SPEC.json
    if len(argv) != 1:
        print("usage: python -m t3unlearn.baselines.compare SPEC.json (internal: one run of t3unlearn compare)", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    try:
        execute_unit(spec)
    except T3Error as exc:
        print(f"t3unlearn compare: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through subprocess
    raise SystemExit(_main(sys.argv[1:]))
