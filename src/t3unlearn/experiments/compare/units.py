"""Units and artifacts of ``t3unlearn compare``.

A *unit* is one (method, setting, seed, evaluation mode): unlearn (or reuse the trained artifact),
evaluate, and write ``UNIT_DIR/record.json`` (plus ``eval/`` for a full evaluation) in one atomic
directory, so a unit is either done, whole, or not there. A rerun finds the finished units and skips
them. A unit runs in its own Python process (``python -m t3unlearn.experiments.compare``, its spec on
standard input) so that its peak memory is its own; that process exits when its parent dies, and it
takes a file lock on its unit, so an orphan and a rerun never both write it.

*Artifacts* are trained models that several units share, under ``OUT/artifacts``: the T3 head (also classifier
guidance's, the same head at T = 1), the ULD assistant (``alpha`` only matters at inference), and the fine-tuned
models between the sweep and the evaluation; each built once under a file lock, in an atomic directory.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from t3unlearn.experiments.compare.config import (QUICK_METRICS, SUMMARY_METRICS, T3_GUIDANCE_KEYS, T3_HEAD_KEYS, Setting,
                                                 calibration_rule)
from t3unlearn.experiments.compare.report import number
from t3unlearn.errors import T3Error
from t3unlearn.methods import Method, get as get_method, names as method_names

RECORD = "record.json"
COST = "cost.json"
LOCKS = ".locks"
# the training recipe of the fine-tuning baselines and ULD (bumped when it changes: their cached units and
# artifacts are then redone). 2: transformers.Trainer (its linear warm-up starts at lr 0).
TRAINER_VERSION = 2


@dataclass
class UnitSpec:
    """Everything one unit needs (JSON: it is handed to the unit's process)."""

    method: str
    params: dict
    train: dict
    setting: str  # the setting's label
    seed: int
    eval_mode: str  # "full" or "quick"
    benchmark: str
    source: str  # the data source of the evaluation configs
    split: str
    model: str
    retain_model: str | None
    pretrained: str | None
    forget: str
    retain: str
    idk: str | None
    eval: dict
    reference: str  # the retain model's results directory
    artifacts: str
    max_length: int
    retain_subset: str | int | None
    unit_dir: str
    threads: int | None = None  # torch threads of the unit's own process (None: torch's default)
    progress: bool = True
    calibration: str | None = None  # a JSONL file of never-seen items like the forget set (selection metric)
    calibration_name: str | None = None
    calibration_reference: str | None = None  # the model calibrate's reference_model names, resolved (T3 / cg)
    selection_reference: str | None = None  # selection.reference_model, resolved (quick units: forget_reference_tr_ks)
    loading: dict = field(default_factory=dict)  # model-loading keywords for the model (and pretrained base) to unlearn
    probes: dict | None = None  # full units with the leakage probes: their plan (compare.probes.probe_plan)
    reuse: str | None = None  # the same unit without the probes: its TOFU evaluation, when done, is copied, not redone

    def loading_key(self) -> tuple:
        """What the loading options add to an artifact's cache key: nothing when none were given."""
        return (self.loading,) if self.loading else ()

    def saved_loading(self) -> dict:
        """The loading keywords for a model this comparison saved itself (a local directory: no hub revision)."""
        return {k: v for k, v in self.loading.items() if k != "revision"}

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "UnitSpec":
        return cls(**json.loads(text))


def unit_key(method: str, setting: Setting, seed: int, mode: str, context: dict, probes: dict | None = None) -> str:
    """The unit's cache key: everything that changes its result (``probes``: the leakage probes' plan, when asked)."""
    from t3unlearn.io import fingerprint

    parts = ["unit-v2", method, setting.params, setting.train, seed, mode, context]
    if probes:
        parts.append({"probes": probes})
    if mode == "quick":
        parts.append({"quick_metrics": QUICK_METRICS})  # a record without a metric the selection reads is redone
    if setting.params.get("calibrate"):  # the calibration's rule and grid decide what the unit runs
        parts.append({"calibration": calibration_rule(method, setting.params["calibrate"])[0]})
    if method in method_names("lm", style=("finetune", "assistant")):
        parts.append({"trainer": TRAINER_VERSION})
    return fingerprint(*parts)


# --------------------------------------------------------------------------- locks and artifacts


def lock_for(path: Path):
    """A file lock for ``path``, kept in a ``.locks`` directory beside it (parallel runs share entries)."""
    from filelock import FileLock

    path = Path(path)
    locks = path.parent / LOCKS
    locks.mkdir(parents=True, exist_ok=True)
    return FileLock(str(locks / f"{path.name}.lock"))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None  # unreadable: rebuilt


def artifact(art: Path, build: Callable[[Path], dict], *, needs: tuple[str, ...] = ()) -> dict:
    """The cost of ``art``, built by ``build(tmp_dir) -> cost`` once, under a file lock, in an atomic directory with
    ``cost.json``; reused while it and the ``needs`` files are there."""
    from t3unlearn.io import atomic_dir, save_json

    with lock_for(art):
        cost = _read_json(art / COST)
        if cost is None or not all((art / n).is_file() for n in needs):
            with atomic_dir(art) as tmp:
                cost = build(tmp)
                save_json(tmp / COST, cost)
    return cost


def _num_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def attach_head(base, head_dir, tokenizer, guidance: dict):
    """The head in ``head_dir`` on ``base`` with ``guidance`` (every knob); a head saved before word-piece tables
    (a reused artifact) gets its tokenizer's, the one training makes, so any calibrated setting can be set on it."""
    from t3unlearn.t3.head import ensure_pieces
    from t3unlearn.t3.model import T3ForCausalLM

    model = T3ForCausalLM.from_base(base, str(head_dir), **{**guidance, "piece_floor": None, "spelling": None})  # None: saved
    ensure_pieces(model.head, tokenizer)
    return model.set_guidance(piece_floor=guidance.get("piece_floor"), spelling=guidance.get("spelling"))


def _t3_model(spec: UnitSpec, method: Method, base, tokenizer, forget, retain):
    """T3 / classifier guidance: train (or reuse) the head, attach it with this setting's T and s."""
    from t3unlearn.io import fingerprint

    from t3unlearn.t3.config import Guidance, TrainConfig

    p = spec.params
    head_kw = {k: p[k] for k in T3_HEAD_KEYS if k in p}
    # every knob, the unset ones at Guidance's defaults (not the shared head's saved ones)
    guidance = {**asdict(Guidance()), **{k: p[k] for k in T3_GUIDANCE_KEYS if k in p}}
    # the head's recipe as it runs: the packaged defaults (TrainConfig) with the config's overrides
    recipe = {k: v for k, v in asdict(TrainConfig(**head_kw).validate()).items() if k != "seed"}
    key = fingerprint("t3-head-v2", recipe, spec.seed, spec.model, spec.forget, spec.retain, spec.max_length, spec.retain_subset,
                      *spec.loading_key())
    art = Path(spec.artifacts) / f"t3-head-{key}-seed{spec.seed}"

    def build(tmp: Path) -> dict:
        from t3unlearn.results import measure

        with measure() as m:
            result = method.run(base, forget, retain, tokenizer=tokenizer, params={**guidance, **head_kw}, seed=spec.seed,
                                progress=spec.progress, cache=False, max_length=spec.max_length)
        result.model.save_pretrained(tmp)
        report = {k: v for k, v in result.report.items() if isinstance(v, (int, float, str, bool))}
        return {**m.cost(_num_params(result.model.head)).to_dict(), "report": report}

    cost = artifact(art, build)
    model = attach_head(base, art, tokenizer, guidance)
    if p.get("calibrate"):
        return model, _calibrated(spec, model, tokenizer, forget, retain, art, cost)
    return model, {**cost, "artifact": str(art)}


def _calibrated(spec: UnitSpec, model, tokenizer, forget, retain, art: Path, cost: dict) -> dict:
    """``"calibrate"``: the head's guidance chosen by ``t3unlearn calibrate``'s oracle-free rule on the comparison's
    calibration set (its default grid unless the config gives one; classifier guidance: the grid's T = 1 settings;
    with ``reference_model``, truth ratios against that model's on the forget set's paraphrased and perturbed
    answers), cached beside the head. Sets the choice on ``model``; returns the unit's cost with the calibration's
    seconds added to the unlearning time."""
    from t3unlearn.data import load_qa
    from t3unlearn.errors import ConfigError
    from t3unlearn.eval.runner import split_configs
    from t3unlearn.io import fingerprint, save_json
    from t3unlearn.t3.calibrate import calibrate
    from t3unlearn.t3.config import Guidance

    if not spec.calibration:
        raise ConfigError(f"{spec.method}: \"calibrate\" needs the benchmark's calibration set (never-seen items "
                          "like the forget set); this benchmark has none.")
    rule, settings = calibration_rule(spec.method, spec.params["calibrate"])
    holdout = load_qa(spec.calibration, what="calibration set")
    key = fingerprint("calibration-v2", rule, spec.calibration_name, len(holdout))  # v2: the calibration items as reference
    cal_dir = art.parent / f"{art.name}-{spec.method}-calibration-{key[:10]}"

    def build(tmp: Path) -> dict:
        from t3unlearn.lm import load_model

        from t3unlearn.t3.calibrate import has_perturbed

        t = time.perf_counter()
        reference = perturbed = None
        if has_perturbed(holdout):  # the base's truth ratios on these never-seen items are the reference
            perturbed = load_qa(f"{spec.source}:{split_configs(spec.split)['forget']}", what="perturbed forget set",
                                require=("question", "paraphrased_answer", "perturbed_answer"))
        elif rule.get("reference_model"):
            if not spec.calibration_reference:
                raise ConfigError(f"{spec.method}: calibrate's reference_model {rule['reference_model']!r} was not resolved.")
            reference = load_model(spec.calibration_reference, device=model.device)
            perturbed = load_qa(f"{spec.source}:{split_configs(spec.split)['forget']}", what="perturbed forget set",
                                require=("question", "paraphrased_answer", "perturbed_answer"))
        cal = calibrate(model, tokenizer, forget, holdout, retain, settings=settings, seed=spec.seed,
                        tolerance=rule["tolerance"], mia_tolerance=rule["mia_tolerance"], reference=reference,
                        perturbed=perturbed, max_length=spec.max_length, progress=spec.progress)
        save_json(tmp / "calibration.json", cal.as_dict())
        return {"seconds": time.perf_counter() - t, "chosen": asdict(cal.chosen.setting)}

    cal_cost = artifact(cal_dir, build, needs=("calibration.json",))
    model.guidance = Guidance(**cal_cost["chosen"])
    out = {**cost, "artifact": str(art), "calibration": {"chosen": model.guidance.label(), "seconds": cal_cost["seconds"]}}
    if out.get("wall_seconds") is not None:
        out["wall_seconds"] = out["wall_seconds"] + cal_cost["seconds"]
    return out


def _uld_model(spec: UnitSpec, method: Method, forget, retain):
    from t3unlearn.baselines.uld import ULDForCausalLM
    from t3unlearn.io import fingerprint

    p = dict(spec.params)
    alpha = float(p.pop("alpha", 1.0))
    train = {**spec.train, "seed": spec.seed, "max_length": spec.max_length}
    key = fingerprint("uld-v1", p, train, spec.model, spec.forget, spec.retain, spec.retain_subset, {"trainer": TRAINER_VERSION},
                      *spec.loading_key())
    art = Path(spec.artifacts) / f"uld-{key}-seed{spec.seed}"

    def build(tmp: Path) -> dict:
        res = method.run(spec.model, forget, retain, tmp, params={**p, "alpha": alpha}, config=train, progress=spec.progress,
                         loading=spec.loading)
        history = res.report["history"]
        return {**res.cost.to_dict(), "steps": res.report["steps"], "final": history[-1] if history else {}}

    cost = artifact(art, build)
    return ULDForCausalLM.from_pretrained(str(art), alpha=alpha, **spec.loading), {**cost, "artifact": str(art)}


def _finetuned(spec: UnitSpec, m: Method, forget, retain):
    """A fine-tuning method's model: trained once per (method, setting, seed), cached as an artifact."""
    from t3unlearn.baselines.api import load_base, load_idk, save_model
    from t3unlearn.io import fingerprint

    method, seed = spec.method, spec.seed
    start = spec.pretrained if method == "retrain" else spec.model
    if method == "retrain" and not start:
        raise T3Error("retrain needs a pretrained base or a retain model to start from; give one of them.")
    key = fingerprint("ft-v1", method, spec.params, spec.train, seed, start, spec.forget, spec.retain, spec.max_length,
                      spec.retain_subset, {"trainer": TRAINER_VERSION}, *spec.loading_key())
    art = Path(spec.artifacts) / f"{method}-{key}-seed{seed}"

    def build(tmp: Path) -> dict:
        net, tok = load_base(start, loading=spec.loading)
        extra = {"idk": load_idk(spec.idk) if spec.idk else None} if m.uses_idk else {}
        res = m.run(net, forget, retain, tokenizer=tok, params=spec.params, progress=spec.progress,
                    config={**spec.train, "seed": seed, "max_length": spec.max_length}, **extra)
        rep = res.report
        save_model(res.model, res.tokenizer, tmp, {k: v for k, v in rep.items() if k != "history"})
        return {**res.cost.to_dict(), "steps": rep["steps"], "final": rep["history"][-1] if rep["history"] else {}}

    cost = artifact(art, build, needs=("model.safetensors",))
    net, tok = load_base(str(art), loading=spec.saved_loading())
    return net.eval(), tok, cost


def retain_subset(spec: UnitSpec, forget, retain):
    """The retain items every method trains with: a seeded subset as large as the forget set (``retain_subset:
    "forget"``, the default), a number of items, or all of them (``null`` / ``"all"``). Same subset for every
    method of a seed."""
    how = spec.retain_subset
    if how in (None, "all") or retain is None:
        return retain
    n = len(forget) if how == "forget" else int(how)
    if n >= len(retain):
        return retain
    idx = sorted(random.Random(f"retain-subset-{spec.seed}").sample(range(len(retain)), n))
    return retain.select(idx)


def _world_model_cost(model_dir: Path) -> dict:
    info = _read_json(Path(model_dir) / "train_info.json") or {}
    secs = info.get("seconds") or (info.get("log") or {}).get("seconds")
    if secs is None:
        return {"wall_seconds": None, "peak_rss_mb": None, "note": "the world's retain model, reused"}
    return {"wall_seconds": float(secs), "peak_rss_mb": None,
            "note": "the world's retain model, reused (its training time from train_info.json)"}


def reference_truth_ratios(spec: UnitSpec, forget, batch_size: int, calibration=None) -> list[float]:
    """The truth ratios a forgetting model's forget truth ratios should match (teacher-forced), computed once per
    comparison and cached among its artifacts: the model to unlearn's own on the ``calibration`` items when they
    carry perturbed answers (never-seen authors, as ``t3unlearn calibrate`` does), else the selection reference
    model's on the forget items."""
    from t3unlearn.eval.runner import truth_ratios
    from t3unlearn.io import fingerprint, load_json, save_json
    from t3unlearn.lm import load_lm
    from t3unlearn.t3.calibrate import has_perturbed

    never_seen = calibration is not None and has_perturbed(calibration)
    model, items = (spec.model, calibration) if never_seen else (spec.selection_reference, forget)
    key = fingerprint(model, spec.source, spec.split, spec.calibration_name if never_seen else None, *spec.loading_key())
    art = Path(spec.artifacts) / f"reference-truth-ratios-{key[:12]}"

    def build(tmp: Path) -> dict:
        lm = load_lm(model, **spec.loading) if never_seen else load_lm(model)
        save_json(tmp / "truth_ratios.json", truth_ratios(lm, items, batch_size=batch_size))
        return {"reference": model, "items": spec.calibration_name if never_seen else "forget"}

    artifact(art, build, needs=("truth_ratios.json",))
    return load_json(art / "truth_ratios.json")


def quick_scores(lm, data: dict, batch_size: int = 32, calibration=None, reference_truth_ratios=None) -> dict:
    """Teacher-forced only (no generation), for selecting a sweep setting: forget and retain Q_A_Prob and, given a
    ``calibration`` set of never-seen items like the forget set, the two statistics ``t3unlearn calibrate`` chooses
    by: ``forget_calibration_ks``, the KS distance between the forget and the calibration items' mean answer losses
    (0 when the model treats forgotten items as items it never saw), and ``forget_calibration_mia``, the min-k
    membership AUC between them (0.5: an attacker cannot tell them apart). Given ``reference_truth_ratios`` (those
    of a model that never saw the forget set on its perturbed set), ``forget_reference_tr_ks``: the KS distance
    between the model's forget truth ratios and them -- calibrate's objective with --pretrained."""
    import math

    from t3unlearn.eval.metrics import mia_auc, min_k_score
    from t3unlearn.eval.runner import truth_ratios
    from t3unlearn.t3.calibrate import ks_distance

    out, losses, min_k = {}, {}, {}
    for role, key in zip(("forget_qa", "retain"), QUICK_METRICS):
        ds = data[role]
        scores = lm.token_scores(lm.encode(ds["question"], ds["answer"]), batch_size=batch_size)
        losses[role] = [s.avg_loss for s in scores]
        min_k[role] = [min_k_score(s.without_eos().logprob) for s in scores]
        out[key] = sum(math.exp(-x) for x in losses[role]) / len(scores)
    if calibration is not None:
        scores = lm.token_scores(lm.encode(calibration["question"], calibration["answer"]), batch_size=batch_size)
        out["forget_calibration_ks"] = ks_distance(losses["forget_qa"], [s.avg_loss for s in scores])
        out["forget_calibration_mia"] = mia_auc(min_k["forget_qa"], [min_k_score(s.without_eos().logprob) for s in scores])
    if reference_truth_ratios is not None:
        out["forget_reference_tr_ks"] = ks_distance(truth_ratios(lm, data["forget"], batch_size=batch_size),
                                                    reference_truth_ratios)
    return out


# --------------------------------------------------------------------------- one unit


def execute_unit(spec: UnitSpec) -> dict:
    """Unlearn with one (method, setting, seed), evaluate, write ``record.json`` + results. Returns the record.

    ``spec.eval_mode``: ``"full"`` (the TOFU evaluation) or ``"quick"`` (forget / retain Q_A_Prob only, for the
    sweep); the trained model is an artifact shared by both. Takes the unit's lock: a unit that another process
    finished meanwhile is read, not redone.
    """
    unit_dir = Path(spec.unit_dir)
    with lock_for(unit_dir):
        done = _read_json(unit_dir / RECORD)
        if done is not None:
            return done
        return _execute(spec)


def _guided_lm(spec: UnitSpec, m: Method, forget, retain):
    from t3unlearn.io import default_device
    from t3unlearn.lm import CausalLM, load_model, load_tokenizer
    from t3unlearn.loading import tokenizer_kwargs

    base = load_model(spec.model, device=default_device(), **spec.loading)
    tok = load_tokenizer(spec.model, **tokenizer_kwargs(spec.loading))
    model, cost = _t3_model(spec, m, base, tok, forget, retain)
    return CausalLM(model, tok, name=m.name), cost


def _assistant_lm(spec: UnitSpec, m: Method, forget, retain):
    from t3unlearn.io import default_device
    from t3unlearn.lm import CausalLM, load_tokenizer
    from t3unlearn.loading import tokenizer_kwargs

    model, cost = _uld_model(spec, m, forget, retain)
    if "device_map" not in spec.loading:
        model = model.to(default_device())
    return CausalLM(model, load_tokenizer(spec.model, **tokenizer_kwargs(spec.loading)), name=m.name), cost


def _finetuned_lm(spec: UnitSpec, m: Method, forget, retain):
    from t3unlearn.lm import CausalLM

    net, tok, cost = _finetuned(spec, m, forget, retain)
    return CausalLM(net, tok, name=m.name), cost


# a method's style (t3unlearn.methods) -> its unit's model and cost
_UNLEARNED = {"guidance": _guided_lm, "assistant": _assistant_lm, "finetune": _finetuned_lm}


def _execute(spec: UnitSpec) -> dict:
    from t3unlearn.data import load_qa
    from t3unlearn.eval.results import EvalResults
    from t3unlearn.eval.runner import evaluate, load_eval_data
    from t3unlearn.io import atomic_dir, save_json, set_seed
    from t3unlearn.lm import load_lm

    import torch

    method, seed = spec.method, spec.seed
    set_seed(seed)
    t_unit, started = time.perf_counter(), time.time()
    forget = retain = None
    if method not in ("full", "retrain") or not spec.retain_model:
        forget = load_qa(spec.forget, what="forget set")
        retain = retain_subset(spec, forget, load_qa(spec.retain, what="retain set"))

    cost: dict[str, Any]
    if method == "full":
        lm = load_lm(spec.model, name="full", **spec.loading)
        cost = {"wall_seconds": 0.0, "peak_rss_mb": None, "trainable_params": 0, "note": "no unlearning"}
    elif method == "retrain" and spec.retain_model:
        lm = load_lm(spec.retain_model, name="retrain")
        cost = {**_world_model_cost(Path(spec.retain_model)), "trainable_params": _num_params(lm.model)}
    else:  # the registry says how the method unlearns, and so what its unit trains and caches
        m = get_method(method)
        if m.style not in _UNLEARNED:
            raise T3Error(f"{m.name} is a {m.style} method; compare runs {', '.join(_UNLEARNED)} methods.")
        lm, cost = _UNLEARNED[m.style](spec, m, forget, retain)

    data = load_eval_data(spec.source, spec.split)
    batch_size, max_new_tokens = int(spec.eval.get("batch_size", 32)), int(spec.eval.get("max_new_tokens", 200))
    record = {"method": method, "setting": spec.setting, "params": spec.params, "train": spec.train, "seed": seed,
              "split": spec.split, "benchmark": spec.benchmark, "eval_mode": spec.eval_mode, "cost": cost}

    def process() -> dict:  # where and when the unit ran (each isolated unit is its own process)
        return {"pid": os.getpid(), "torch_threads": torch.get_num_threads(), "started": started, "finished": time.time()}

    if spec.eval_mode == "quick":
        from t3unlearn.t3.calibrate import has_perturbed

        t = time.perf_counter()
        calib = load_qa(spec.calibration, what="calibration set") if spec.calibration else None
        ref_tr = (reference_truth_ratios(spec, data["forget"], batch_size, calib)
                  if spec.selection_reference or (calib is not None and has_perturbed(calib)) else None)
        record["summary"] = quick_scores(lm, data, batch_size, calibration=calib, reference_truth_ratios=ref_tr)
        record["calibration_set"] = spec.calibration_name
        record.update(eval_seconds=time.perf_counter() - t, unit_seconds=time.perf_counter() - t_unit, process=process())
        with atomic_dir(spec.unit_dir) as tmp:
            save_json(tmp / RECORD, record)
        return record
    reuse = Path(spec.reuse) if spec.reuse else None
    done = _read_json(reuse / RECORD) if reuse is not None and (reuse / "eval" / "TOFU_EVAL.json").is_file() else None
    with atomic_dir(spec.unit_dir) as tmp:
        if done is not None:  # the same unit without the probes: its TOFU evaluation stands
            shutil.copytree(reuse / "eval", tmp / "eval")
            record = {**done, "tofu_eval_from": str(reuse)}
        else:
            res = evaluate(lm, data=data, split=spec.split, benchmark=spec.benchmark, retain_results=EvalResults.load(spec.reference),
                           batch_size=batch_size, max_new_tokens=max_new_tokens, progress=spec.progress)
            res.info.update({"name": method, "method": method, "setting": spec.setting, "seed": seed,
                             "role": "retain" if method == "retrain" else "model"})
            res.save(tmp / "eval")
            record.update(eval_seconds=res.info.get("wall_time_s"), summary={k: res.agg(k) for k in SUMMARY_METRICS})
        if spec.probes:  # beside the TOFU results, never in them
            from t3unlearn.experiments.compare.probes import probe_unit

            t = time.perf_counter()
            oracle = method == "retrain" and Path(str(spec.retain_model)) == Path(spec.probes["oracle"])
            record["probes"] = probe_unit(spec.probes, spec.split, lm, tmp, is_oracle=oracle, progress=spec.progress,
                                          log=lambda m: print(m, file=sys.stderr))
            record["probe_seconds"] = time.perf_counter() - t
        record.update(unit_seconds=time.perf_counter() - t_unit, process=process())
        save_json(tmp / RECORD, record)
    return record


def run_unit(spec: UnitSpec, *, isolate: bool, log: Callable[[str], None]) -> dict:
    """The unit's record: read when the unit is done, else run here or (``isolate``) in a fresh process."""
    unit_dir = Path(spec.unit_dir)
    done = _read_json(unit_dir / RECORD)
    if done is not None:
        return done
    log(f"  run {spec.method} [{spec.setting}] seed {spec.seed} ({spec.eval_mode} eval) ...")
    t0 = time.perf_counter()
    if not isolate:
        rec = execute_unit(spec)
    else:
        proc = subprocess.Popen([sys.executable, "-m", "t3unlearn.experiments.compare"], stdin=subprocess.PIPE, text=True,
                                env={**os.environ, PARENT_ENV: str(os.getpid())})
        try:
            proc.communicate(spec.to_json())
        except BaseException:  # Ctrl+C, ...: let the unit remove its temporaries (subprocess.run would SIGKILL it)
            from t3unlearn.workers import stop_process

            stop_process(proc)
            raise
        rec = _read_json(unit_dir / RECORD)
        if proc.returncode != 0 or rec is None:
            raise T3Error(f"the run {spec.method} [{spec.setting}] seed {spec.seed} failed (exit {proc.returncode}); "
                          "its error is printed above.")
    s = rec["summary"]
    if rec.get("eval_mode") == "quick":
        scores = f"forget prob {number(s.get('forget_Q_A_Prob'))}, retain prob {number(s.get('retain_Q_A_Prob'))}"
    else:
        scores = (f"forget quality {number(s.get('forget_quality'))}, utility {number(s.get('model_utility'))}, "
                  f"forget prob {number(s.get('forget_Q_A_Prob'))}"
                  + (f", greedy key-fact leak {number(rec['probes'].get('greedy leak'))}" if rec.get("probes") else ""))
    log(f"    {spec.method} [{spec.setting}] seed {spec.seed} done in {time.perf_counter() - t0:.0f}s "
        f"({rec.get('eval_mode', 'full')} eval): {scores}, unlearning {number(rec['cost'].get('wall_seconds'))}s")
    return rec


# --------------------------------------------------------------------------- the unit's own process


PARENT_ENV = "T3UNLEARN_UNIT_PARENT"  # the pid of the driver that started a unit's process


def exit_with_parent(parent: int, interval: float = 0.2) -> None:
    """End this process when ``parent``, the process that started it, is gone (killed with -9, say): an
    orphaned unit would otherwise go on computing, and writing, what the rerun computes again. On Linux the
    kernel kills it at once (``PR_SET_PDEATHSIG``); elsewhere, and as a fallback, a thread watches the parent.
    ``parent`` comes from the driver (``$T3UNLEARN_UNIT_PARENT``): a parent that died before this call is
    noticed too."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - no libc prctl
            pass
    if os.getppid() != parent:  # the parent died before we asked
        os._exit(3)

    def watch():
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str]) -> int:
    """``python -m t3unlearn.experiments.compare`` (internal): run the unit whose spec is on standard input
    (``__main__`` first ties this process's life to its parent's, :func:`exit_with_parent`)."""
    if argv:
        print("usage: python -m t3unlearn.experiments.compare < SPEC.json (internal: one run of t3unlearn compare)",
              file=sys.stderr)
        return 2
    import signal

    from t3unlearn.io import torch_threads

    signal.signal(signal.SIGINT, signal.default_int_handler)  # a driver started in the background ignores SIGINT
    spec = UnitSpec.from_json(sys.stdin.read())
    try:
        with torch_threads(spec.threads or 0):  # this process's own threads: the driver split the machine
            execute_unit(spec)
    except KeyboardInterrupt:  # the driver was interrupted and stops us: our temporaries are gone, no traceback
        return 130
    except (T3Error, OSError) as exc:
        from t3unlearn.errors import user_error_message

        message = user_error_message(exc)
        if message is None:
            raise
        print(f"t3unlearn compare: error: {message}", file=sys.stderr)
        return 2
    return 0


__all__ = ["RECORD", "UnitSpec", "execute_unit", "quick_scores", "retain_subset", "run_unit", "unit_key"]
