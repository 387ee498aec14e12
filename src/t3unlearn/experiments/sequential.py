"""Sequential deletion requests: how each method holds up as requests arrive one after another.

``t3unlearn sequential`` cuts a benchmark's ``forget10`` into ``n`` requests of whole authors (world: 20
forget authors -> 2 per request; TOFU likewise) and applies them one by one:

- ``t3``: T3 incremental -- the head is updated for each request (:func:`t3unlearn.t3.requests.update`,
  ``retrain``): features of the new request only, the rest from the cache, the head retrained on the union;
- ``t3-finetune``: the same, but the head is fine-tuned on the new request only (``finetune``);
- ``t3-scratch``: T3 from scratch at every request: every feature extracted again (no cache), the head
  trained on the union. Its head is compared with ``t3``'s byte for byte (they are the same computation on
  the same features; the run says whether they are identical) and, when identical, shares its evaluation;
- ``graddiff``, ``npo``, ``simnpo`` (or any fine-tuning method in the registry, :mod:`t3unlearn.methods`):
  applied sequentially, each request on the previous request's model (MUSE's "sustainability" protocol), with
  the packaged ``compare`` settings.

After each request every method is evaluated with the TOFU suite on the items forgotten so far: forget quality
against the ``retain90`` model (which never saw any forget10 author) restricted to the same items, forget
ROUGE-L, model utility, and the wall time of that request. ``t3-oneshot`` (the head trained on all of forget10
at once) gives T3's one-shot values.

Every (method, seed, request) is a *unit* under ``OUT/BENCH/runs/METHOD/seedS/stepKK/`` (``record.json``,
the evaluation, and the state the next request starts from), written atomically: a rerun resumes at the
first missing unit. The feature cache of the T3 runs is ``OUT/BENCH/features/seedS`` (each seed's first
request pays for the retain set, as a fresh deployment would).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from t3unlearn.errors import T3Error
from t3unlearn.methods import get as get_method, names as method_names

METHODS = ("t3", "t3-finetune", "t3-scratch", "graddiff", "npo", "simnpo")
T3_PROTOCOLS = ("t3", "t3-finetune", "t3-scratch")  # T3's own ways of taking a request; the rest: registry methods
BASELINES = ("graddiff", "npo", "simnpo")
TITLES = {"t3": "T3 incremental", "t3-finetune": "T3 incremental (fine-tune)", "t3-scratch": "T3 from scratch",
          "graddiff": "GradDiff", "npo": "NPO", "simnpo": "SimNPO", "t3-oneshot": "T3 one-shot (all of forget10)",
          "full": "Full (no unlearning)"}
# learning rates ``compare`` selected for forget10 by its rule before the membership-AUC bound (2026-12-03; the
# current rule keeps GradDiff's and NPO's world rates and moves SimNPO's to 1e-3), per benchmark kind: the rates
# docs/sequential.md's figures use. Each request is one run of the method's packaged recipe (10 epochs) at that
# rate, on the previous request's model
BASELINE_LR = {"world": {"graddiff": 1e-4, "npo": 1e-4, "simnpo": 3e-4},
               "tofu": {"graddiff": 1e-4, "npo": 1e-3, "simnpo": 1e-4}}
SPLIT = "forget10"
RECORD = "record.json"
METRICS = ("forget_quality", "forget_Q_A_ROUGE", "model_utility", "forget_Q_A_Prob", "forget_truth_ratio")


def choices() -> tuple[str, ...]:
    """What ``sequential`` runs: T3's three protocols and every fine-tuning method in the registry."""
    return (*T3_PROTOCOLS, *method_names("lm", style="finetune"))


def title(method: str) -> str:
    return TITLES.get(method) or get_method(method).title


# --------------------------------------------------------------------------- data


def request_sets(bench, n: int):
    """``(requests, retain, eval data)``: forget10 cut into ``n`` requests of whole authors, retain90, and the
    six evaluation sets of forget10."""
    from t3unlearn.t3.requests import split_requests

    forget = bench.qa(SPLIT, what="forget set")
    return split_requests(forget, n), bench.qa("retain90", what="retain set"), bench.data(SPLIT)


def restrict(data: dict, questions: set[str]) -> dict:
    """The evaluation sets with the forget sets cut to ``questions`` (the items forgotten so far)."""
    out = dict(data)
    for role in ("forget", "forget_qa"):
        ds = data[role]
        keep = [i for i, q in enumerate(ds["question"]) if q in questions]
        if len(keep) != len(questions):
            raise T3Error(f"the evaluation's {role} set lacks {len(questions) - len(keep)} of the requested items.")
        out[role] = ds.select(keep)
    return out


def restricted_reference(reference, indices: set[str]):
    """The reference's per-item forget truth ratios on ``indices`` only (forget quality on the same items)."""
    from t3unlearn.eval.results import EvalResults

    tr = reference.metrics["forget_truth_ratio"]["value_by_index"]
    return EvalResults(metrics={"forget_truth_ratio": {"agg_value": None, "value_by_index": {k: v for k, v in tr.items() if k in indices}}},
                       info={"name": f"{reference.name} (restricted to {len(indices)} items)"})


def _indices(ds) -> set[str]:
    return {str(i) for i in ds["index"]}


def restricted_metrics(res, indices: set[str], reference) -> dict:
    """Forget quality and forget ROUGE of full-split results ``res`` on ``indices`` only."""
    from t3unlearn.eval import metrics as M

    own = [v["score"] for k, v in res.metrics["forget_truth_ratio"]["value_by_index"].items() if k in indices]
    ref = [v["score"] for k, v in reference.metrics["forget_truth_ratio"]["value_by_index"].items() if k in indices]
    rouge = [v["rougeL_recall"] for k, v in res.metrics["forget_Q_A_ROUGE"]["value_by_index"].items() if k in indices]
    return {"forget_quality": M.forget_quality(own, ref), "forget_Q_A_ROUGE": M.mean(rouge),
            "model_utility": res.agg("model_utility")}


# --------------------------------------------------------------------------- units


class Runner:
    """One benchmark's sequential run (see the module doc)."""

    def __init__(self, bench, out: Path, n_requests: int, *, eval_cfg: dict, progress: bool, log: Callable,
                 config=None):
        self.bench, self.out, self.n = bench, Path(out), n_requests
        self.configure(config, bench.kind)
        self.eval_cfg, self.progress, self.log = eval_cfg, progress, log
        self.paths = bench.models(("full", "retain90"), log=log, progress=progress)
        self.requests, self.retain, self.data = request_sets(bench, n_requests)
        self._reference = None
        self._base = None

    def configure(self, config, kind: str) -> None:
        """Settings from ``config`` (see :func:`sequential`) for a benchmark of ``kind`` (world, tofu)."""
        from t3unlearn.experiments.compare import load_compare_config
        from t3unlearn.t3.config import split_settings

        self.cfg = load_compare_config(config)
        # T3's settings (head, training, guidance) for every T3 unit: the package's defaults unless a config says
        self.t3_settings = {} if config is None else dict(self.cfg.methods["t3"].params)
        # every request runs fixed settings: compare's per-seed calibration ("calibrate": true) is not part of this
        self.t3_settings.pop("calibrate", None)
        split_settings(self.t3_settings)  # unknown names are an error here, before any work
        self.lr = BASELINE_LR[kind if kind in BASELINE_LR else "world"]

    # ------------------------------------------------------------------ shared pieces
    @property
    def reference(self):
        """retain90 evaluated on all of forget10 (cached under ``cache_home()/eval``), copied to ``OUT/reference``."""
        if self._reference is None:
            from t3unlearn.eval.results import EvalResults

            ref_dir = self.out / "reference"
            if not (ref_dir / "TOFU_EVAL.json").is_file():
                self.bench.retain_reference(SPLIT, data=self.data, progress=self.progress, log=self.log,
                                            batch_size=self.eval_cfg["batch_size"], max_new_tokens=self.eval_cfg["max_new_tokens"]).save(ref_dir)
            self._reference = EvalResults.load(ref_dir)
        return self._reference

    def base(self):
        """``(model, tokenizer)`` of ``full`` (frozen; shared by every T3 unit of this process)."""
        if self._base is None:
            from t3unlearn.lm import load_model, load_tokenizer

            path = str(self.paths["full"])
            self._base = (load_model(path, device="cpu"), load_tokenizer(path))
        return self._base

    def questions_upto(self, k: int) -> set[str]:
        return {q for r in self.requests[:k] for q in r["question"]}

    def evaluate(self, lm, k: int | None):
        """TOFU suite on the forget items of requests ``1..k`` (all of forget10 for None)."""
        from t3unlearn.eval.runner import apply_reference, evaluate

        data = self.data if k is None else restrict(self.data, self.questions_upto(k))
        res = evaluate(lm, data=data, split=SPLIT, benchmark=self.bench.label, batch_size=self.eval_cfg["batch_size"],
                       max_new_tokens=self.eval_cfg["max_new_tokens"], progress=self.progress)
        ref = self.reference if k is None else restricted_reference(self.reference, _indices(data["forget"]))
        return apply_reference(res, ref)

    def unit_dir(self, method: str, seed: int, k: int) -> Path:
        return self.out / "runs" / method / f"seed{seed}" / f"step{k:02d}"

    def recipe(self, method: str) -> str:
        """A fingerprint of what a unit of ``method`` is made with (T3's default settings; a baseline's
        training recipe and learning rate): a unit made with another recipe is stale and made again."""
        from t3unlearn.io import fingerprint

        if method not in T3_PROTOCOLS:
            cfg = self.cfg
            entry = self._entry(method)
            return fingerprint("seq-baseline", cfg.train, entry.train, dict(entry.params), self._lr(method), cfg.max_length)
        from t3unlearn.t3.config import defaults

        return fingerprint("seq-t3", {**defaults(), **self.t3_settings})

    def _entry(self, method: str):
        """The method's compare settings (params and training): the config's entry, else none."""
        from t3unlearn.experiments.compare.config import MethodEntry

        return self.cfg.methods.get(method) or MethodEntry()

    def _lr(self, method: str) -> float | None:
        """The learning rate of a fine-tuning method: the rate compare selected on the benchmark (``BASELINE_LR``),
        else its compare settings'."""
        if method in self.lr:
            return self.lr[method]
        return {**self.cfg.train, **self._entry(method).train}.get("lr")

    def done(self, method: str, seed: int, k: int) -> dict | None:
        f = self.unit_dir(method, seed, k) / RECORD
        if f.is_file():
            try:
                rec = json.loads(f.read_text())
            except ValueError:
                return None
            if rec.get("recipe") != self.recipe(method):
                return None  # made with other settings (say, T3's previous defaults): stale
            return rec
        return None

    def _save_unit(self, method, seed, k, record, res, state_writer=None) -> dict:
        from t3unlearn.io import atomic_dir, save_json

        record = {**record, "recipe": self.recipe(method)}
        with atomic_dir(self.unit_dir(method, seed, k)) as tmp:
            if res is not None:
                res.save(tmp / "eval")
            if state_writer is not None:
                state_writer(tmp / "state")
            save_json(tmp / RECORD, record)
        return record

    def _summary(self, res) -> dict:
        return {m: res.agg(m) for m in METRICS}

    # ------------------------------------------------------------------ the reference rows
    def full_row(self) -> dict:
        """The full model (no unlearning): its results on all of forget10, restricted after the fact."""
        from t3unlearn.eval.results import EvalResults
        from t3unlearn.lm import load_lm

        d = self.out / "full"
        if not (d / "TOFU_EVAL.json").is_file():
            self.log("full model: evaluating once on all of forget10")
            self.evaluate(load_lm(str(self.paths["full"]), name="full"), None).save(d)
        res = EvalResults.load(d)
        steps = [restricted_metrics(res, _indices(restrict(self.data, self.questions_upto(k))["forget"]), self.reference)
                 for k in range(1, self.n + 1)]
        return {"method": "full", "steps": steps, "utility": res.agg("model_utility")}

    def oneshot(self, seed: int) -> dict:
        """T3 trained on all of forget10 at once (one request), evaluated on all of forget10."""
        from t3unlearn.lm import CausalLM
        from t3unlearn.t3 import unlearn

        d = self.out / "runs" / "t3-oneshot" / f"seed{seed}"
        if (d / RECORD).is_file():
            rec = json.loads((d / RECORD).read_text())
            if rec.get("recipe") == self.recipe("t3"):
                return rec
        base, tok = self.base()
        t0 = time.perf_counter()
        t3, rep = unlearn(base, tok, self.bench.qa(SPLIT), self.retain, seed=seed, cache=False, progress=self.progress,
                          **self.t3_settings)
        wall = time.perf_counter() - t0
        res = self.evaluate(CausalLM(t3, tok, name="t3-oneshot"), None)
        rec = {"method": "t3-oneshot", "seed": seed, "wall_s": wall, "summary": self._summary(res),
               "recipe": self.recipe("t3")}
        from t3unlearn.io import atomic_dir, save_json

        with atomic_dir(d) as tmp:
            res.save(tmp / "eval")
            t3.save_pretrained(tmp / "state")
            save_json(tmp / RECORD, rec)
        self.log(f"  t3-oneshot seed {seed}: utility {_g(rec['summary']['model_utility'])}, forget quality "
                 f"{_g(rec['summary']['forget_quality'])}, {wall:.1f}s")
        return rec

    # ------------------------------------------------------------------ one request of one method
    def step(self, method: str, seed: int, k: int) -> dict:
        rec = self.done(method, seed, k)
        if rec is not None:
            return rec
        t0 = time.perf_counter()
        if method in ("t3", "t3-finetune"):
            rec = self._t3_step(method, seed, k)
        elif method == "t3-scratch":
            rec = self._scratch_step(seed, k)
        else:  # a fine-tuning method of the registry, on the previous request's model
            rec = self._baseline_step(get_method(method, among=choices(), what="sequential method"), seed, k)
        s = rec["summary"]
        self.log(f"  {method} seed {seed} request {k}/{self.n}: utility {_g(s['model_utility'])}, forget quality "
                 f"{_g(s['forget_quality'])}, forget ROUGE {_g(s['forget_Q_A_ROUGE'])}; request {rec['wall_s']:.2f}s "
                 f"(unit {time.perf_counter() - t0:.0f}s)")
        if k > 1:  # only the last state is needed to go on
            prev = self.unit_dir(method, seed, k - 1) / "state"
            if method not in T3_PROTOCOLS and prev.is_dir():
                shutil.rmtree(prev, ignore_errors=True)
        return rec

    def _t3_step(self, method: str, seed: int, k: int) -> dict:
        from t3unlearn.lm import CausalLM
        from t3unlearn.t3 import unlearn
        from t3unlearn.t3.requests import update

        base, tok = self.base()
        cache = self.out / "features" / f"seed{seed}"
        rid = f"req{k:02d}"
        t0 = time.perf_counter()
        if k == 1:
            t3, rep = unlearn(base, tok, self.requests[0], self.retain, seed=seed, request_id=rid, cache_dir=cache,
                              progress=self.progress, **self.t3_settings)
        else:
            prev = self.unit_dir(method, seed, k - 1) / "state"
            t3, rep = update(prev, [(rid, self.requests[k - 1])], model=base, tokenizer=tok, cache_dir=cache,
                             mode="finetune" if method == "t3-finetune" else "retrain", progress=self.progress)
        wall = time.perf_counter() - t0
        res = self.evaluate(CausalLM(t3, tok, name=method), k)
        rec = {"method": method, "seed": seed, "step": k, "wall_s": wall, "features_s": rep["features_s"],
               "train_s": rep["train_s"], "extracted": rep.get("extracted", ["req01", "retain"]),
               "summary": self._summary(res)}
        return self._save_unit(method, seed, k, rec, res, t3.save_pretrained)

    def _scratch_step(self, seed: int, k: int) -> dict:
        """Every feature extracted again (no cache) and the head trained on the union: T3 from scratch."""
        from t3unlearn.data import QAFormatter
        from t3unlearn.lm import CausalLM
        from t3unlearn.t3.config import TrainConfig, split_settings
        from t3unlearn.t3.feature_cache import assemble, extract_part
        from t3unlearn.t3.features import vocab_size_of
        from t3unlearn.t3.head import word_pieces
        from t3unlearn.t3.model import T3ForCausalLM
        from t3unlearn.t3.requests import DataSet
        from t3unlearn.t3.train import CachedProvider, train_head

        base, tok = self.base()
        t0 = time.perf_counter()
        fmt = QAFormatter(tok)
        sets = [DataSet.load(r, what="request").encode(fmt) for r in self.requests[:k]] + [DataSet.load(self.retain, what="retain set").encode(fmt)]
        parts = [extract_part(base, s.examples, pad_id=fmt.pad_id, cache=False) for s in sets]
        fs = assemble(parts[:-1], parts[-1])
        head, _ = train_head(CachedProvider(fs), fs.n_forget, fs.n_retain, fs.dim, vocab_size_of(base), TrainConfig(**{**split_settings(self.t3_settings)[1], "seed": seed}).validate())
        head.fit_support(fs.feats).set_pieces(word_pieces(tok, vocab_size_of(base)))
        wall = time.perf_counter() - t0
        inc = self.step("t3", seed, k)  # the incremental head of the same request
        inc_head = self.unit_dir("t3", seed, k) / "state"
        t3 = T3ForCausalLM.from_base(base, inc_head)
        identical = all(bool((a == b).all()) for a, b in zip(head.state_dict().values(), t3.head.state_dict().values()))
        rec = {"method": "t3-scratch", "seed": seed, "step": k, "wall_s": wall, "identical_to_incremental": identical}
        if identical:
            rec["summary"] = dict(inc["summary"])
            rec["eval"] = "shared with t3 (identical head)"
            return self._save_unit("t3-scratch", seed, k, rec, None)
        t3.head.load_state_dict(head.state_dict())
        res = self.evaluate(CausalLM(t3, tok, name="t3-scratch"), k)
        rec["summary"] = self._summary(res)
        return self._save_unit("t3-scratch", seed, k, rec, res)

    def _baseline_step(self, m, seed: int, k: int) -> dict:
        import torch

        from t3unlearn.baselines.api import load_base
        from t3unlearn.lm import CausalLM

        cfg, method = self.cfg, m.name
        entry = self._entry(method)
        train = {**cfg.train, **entry.train, "seed": seed, "max_length": int(cfg.max_length)}
        if self._lr(method) is not None:
            train["lr"] = self._lr(method)
        start = self.paths["full"] if k == 1 else self.unit_dir(method, seed, k - 1) / "state"
        net, tok = load_base(str(start))
        result = m.run(net, self.requests[k - 1], self.retain, tokenizer=tok, params=dict(entry.params), config=train,
                       progress=self.progress)
        net, tok, wall = result.model, result.tokenizer, float(result.cost.wall_seconds)
        res = self.evaluate(CausalLM(net, tok, name=method), k)
        out = {"method": method, "seed": seed, "step": k, "wall_s": wall, "lr": train.get("lr"), "summary": self._summary(res)}

        def write(path):
            from t3unlearn.baselines.api import save_model

            save_model(net, tok, path, {"method": method, "step": k, "seed": seed})

        out = self._save_unit(method, seed, k, out, res, write)
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
        return out


# --------------------------------------------------------------------------- the whole run, tables, plot


def _g(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def _stats(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return None, None
    m = sum(v) / len(v)
    return m, (sum((x - m) ** 2 for x in v) / (len(v) - 1)) ** 0.5 if len(v) > 1 else 0.0


def sequential(
    benchmark: str = "world",
    *,
    n_requests: int = 10,
    methods: Sequence[str] = METHODS,
    seeds: int = 3,
    baseline_seeds: int | None = None,
    out: str | Path = "sequential",
    eval_batch_size: int = 32,
    max_new_tokens: int = 200,
    config=None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the sequential benchmark on ``benchmark`` (see the module doc); returns the report dict, also
    written to ``OUT/BENCH/sequential.json`` with ``sequential.md`` and ``sequential.png``.

    ``config``: a ``compare`` config (file or dict, laid over the packaged one): its ``t3`` params are T3's
    settings for every T3 unit (head shape, training, guidance), its training settings the baselines'. The
    baselines' learning rates are the ones ``compare`` selected on the benchmark (``BASELINE_LR``).
    ``baseline_seeds``: seeds of the fine-tuning baselines, if fewer than ``seeds`` (each of their requests
    costs several T3 requests); the table names a method's seed count where it differs."""
    from t3unlearn.benchmarks import get_benchmark
    from t3unlearn.io import atomic_write, save_json

    methods = [m.strip() for m in methods if m.strip()]
    bad = [m for m in methods if m not in choices()]
    if bad:
        raise T3Error(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(choices())}.")
    baseline_seeds = seeds if baseline_seeds is None else baseline_seeds
    if seeds < 1 or n_requests < 1 or baseline_seeds < 1:
        raise T3Error("--seeds, --baseline-seeds and --requests must be >= 1.")
    bench = get_benchmark(benchmark)
    out = Path(out) / bench.label.replace("/", "_")
    t_start = time.perf_counter()
    runner = Runner(bench, out, n_requests, eval_cfg={"batch_size": eval_batch_size, "max_new_tokens": max_new_tokens},
                    progress=progress, log=log, config=config)
    sizes = [len(r) for r in runner.requests]
    log(f"sequential: {bench.label} {SPLIT} as {n_requests} requests of {sizes[0]} items; methods {', '.join(methods)}; "
        f"{seeds} seed(s); out {out}")
    runner.reference  # noqa: B018 - evaluated once up front
    full = runner.full_row()
    oneshot = [runner.oneshot(s) for s in range(seeds)] if any(m.startswith("t3") for m in methods) else []
    records: dict[str, list[list[dict]]] = {}
    for m in methods:
        records[m] = []
        for s in range(seeds if m in T3_PROTOCOLS else baseline_seeds):
            records[m].append([runner.step(m, s, k) for k in range(1, n_requests + 1)])
    report = summarize(bench.label, n_requests, sizes, methods, records, full, oneshot)
    report["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    png = plot(report, out / "sequential.png")
    text = markdown(report, png.name)
    save_json(out / "sequential.json", report)
    with atomic_write(out / "sequential.md", "w", encoding="utf-8") as fh:
        fh.write(text)
    report["markdown"], report["plot"] = text, str(png)
    return report


def summarize(label, n, sizes, methods, records, full, oneshot) -> dict:
    rows = []
    for m in methods:
        per_step = []
        for k in range(n):
            recs = [seed_recs[k] for seed_recs in records[m]]
            cell = {metric: _stats([r["summary"].get(metric) for r in recs]) for metric in METRICS}
            cell["wall_s"] = _stats([r["wall_s"] for r in recs])
            per_step.append(cell)
        row = {"method": m, "title": title(m), "steps": per_step, "seeds": len(records[m])}
        if m == "t3-scratch":
            row["identical_to_incremental"] = all(r.get("identical_to_incremental") for seed in records[m] for r in seed)
        rows.append(row)
    one = {metric: _stats([r["summary"].get(metric) for r in oneshot]) for metric in METRICS} if oneshot else None
    if oneshot:
        one["wall_s"] = _stats([r["wall_s"] for r in oneshot])
    return {"benchmark": label, "split": SPLIT, "requests": n, "request_items": sizes, "rows": rows,
            "full": full, "oneshot": one, "seeds": max((r["seeds"] for r in rows), default=0)}


def _titled(row: dict, report: dict) -> str:
    """A method's title, with its seed count where it ran fewer seeds than the report's."""
    n = row["seeds"]
    return row["title"] if n == report["seeds"] else f"{row['title']} ({n} seed{'s' * (n > 1)})"


def _cell(stat, fmt="{:.3f}") -> str:
    m, s = stat
    if m is None:
        return "n/a"
    return fmt.format(m) + (f" ± {fmt.format(s)}" if s else "")


def markdown(report: dict, png_name: str) -> str:
    n = report["requests"]
    picks = sorted({1, max(1, n // 2), n})
    fq = "{:.2g}"
    head = (["method"] + [f"utility after {k}" for k in picks] + [f"forget quality after {k}" for k in picks]
            + [f"forget ROUGE after {n}", "request wall time (s): first / last"])
    lines = [f"### {report['benchmark']} {report['split']} as {n} requests of {report['request_items'][0]} items, "
             f"{report['seeds']} seed(s)", "", "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    full = report["full"]
    lines.append("| " + " | ".join([TITLES["full"]] + [f"{full['utility']:.3f}"] * len(picks)
                                   + [fq.format(full["steps"][k - 1]["forget_quality"]) for k in picks]
                                   + [f"{full['steps'][n - 1]['forget_Q_A_ROUGE']:.3f}", "-"]) + " |")
    for r in report["rows"]:
        st = r["steps"]
        cells = [_titled(r, report)] + [_cell(st[k - 1]["model_utility"]) for k in picks] + [_cell(st[k - 1]["forget_quality"], fq) for k in picks]
        cells += [_cell(st[n - 1]["forget_Q_A_ROUGE"]), f"{_cell(st[0]['wall_s'], '{:.2f}')} / {_cell(st[n - 1]['wall_s'], '{:.2f}')}"]
        lines.append("| " + " | ".join(cells) + " |")
    one = report.get("oneshot")
    if one:
        lines.append("| " + " | ".join([TITLES["t3-oneshot"]] + [_cell(one["model_utility"])] * len(picks)
                                       + ["-"] * (len(picks) - 1) + [_cell(one["forget_quality"], fq), _cell(one["forget_Q_A_ROUGE"]),
                                       f"{_cell(one['wall_s'], '{:.2f}')} (once)"]) + " |")
    lines += ["", f"![utility and forget quality vs number of requests]({png_name})", ""]
    # per-request detail: utility and forget quality
    lines += ["Model utility after each request (mean over seeds):", "",
              "| method | " + " | ".join(str(k) for k in range(1, n + 1)) + " |", "|---|" + "---:|" * n]
    for r in report["rows"]:
        lines.append(f"| {r['title']} | " + " | ".join(_g(s["model_utility"][0]) for s in r["steps"]) + " |")
    lines += ["", "Forget quality after each request (mean over seeds; the full model's on the same items first):", "",
              "| method | " + " | ".join(str(k) for k in range(1, n + 1)) + " |", "|---|" + "---:|" * n]
    lines.append(f"| {TITLES['full']} | " + " | ".join(_g(s["forget_quality"]) for s in full["steps"]) + " |")
    for r in report["rows"]:
        lines.append(f"| {r['title']} | " + " | ".join(_g(s["forget_quality"][0]) for s in r["steps"]) + " |")
    lines.append("")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from t3unlearn.io import atomic_write

    n = report["requests"]
    ks = list(range(1, n + 1))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10.5, 4.0), dpi=140)
    styles = {"t3": ("tab:blue", "o", "-"), "t3-finetune": ("tab:cyan", "s", "--"), "t3-scratch": ("navy", "x", ":"),
              "graddiff": ("tab:red", "^", "-"), "npo": ("tab:orange", "v", "-"), "simnpo": ("tab:purple", "D", "-")}
    full = report["full"]
    ax1.axhline(full["utility"], color="0.5", ls="--", lw=0.9, label="full (before unlearning)")
    if report.get("oneshot") and report["oneshot"]["model_utility"][0] is not None:
        ax1.axhline(report["oneshot"]["model_utility"][0], color="tab:blue", ls=":", lw=0.9, label="T3 one-shot")
    ax2.plot(ks, [max(s["forget_quality"], 1e-300) for s in full["steps"]], color="0.5", ls="--", lw=0.9, label="full (no unlearning)")
    for r in report["rows"]:
        c, mk, ls = styles.get(r["method"], ("k", ".", "-"))
        for ax, metric, floor in ((ax1, "model_utility", None), (ax2, "forget_quality", 1e-300)):
            mean = [s[metric][0] for s in r["steps"]]
            if any(v is None for v in mean):
                continue
            ax.plot(ks, [max(v, floor) if floor else v for v in mean], color=c, marker=mk, ls=ls, ms=4, lw=1.3, label=_titled(r, report))
    ax1.set_xlabel("deletion requests applied")
    ax1.set_ylabel("model utility")
    ax2.set_xlabel("deletion requests applied")
    ax2.set_ylabel("forget quality on all items requested so far (log)")
    ax2.set_yscale("log")
    for ax in (ax1, ax2):
        ax.set_xticks(ks)
        ax.grid(True, alpha=0.3)
    ax1.legend(fontsize=7, loc="best")
    fig.suptitle(f"{report['benchmark']}: {n} sequential deletion requests (mean over up to {report['seeds']} seeds)", fontsize=10)
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)
    return Path(path)


def write_doc(doc: str | Path, reports: Sequence[dict], command: str) -> Path:
    """Put each report's table and plot into ``doc`` between generated-section markers (one per benchmark)."""
    from t3unlearn.io import atomic_write, replace_section

    doc = Path(doc)
    text = doc.read_text(encoding="utf-8") if doc.is_file() else "# Sequential deletion requests\n"
    for rep in reports:
        begin = f"<!-- t3unlearn sequential {rep['benchmark']}: generated, do not edit by hand -->"
        end = f"<!-- end of generated section {rep['benchmark']} -->"
        target = doc.parent / f"sequential_{rep['benchmark']}.png"
        if Path(rep["plot"]).resolve() != target.resolve():
            shutil.copyfile(rep["plot"], target)
        body = rep["markdown"].replace(f"]({Path(rep['plot']).name})", f"]({target.name})")
        block = "\n".join([begin, "", "```bash", command, "```", "", body, end])
        try:
            text = replace_section(text, begin, end, block)
        except ValueError as e:
            from t3unlearn.errors import T3Error

            raise T3Error(f"{doc} {e}.", option="doc") from None
    with atomic_write(doc, "w", encoding="utf-8") as fh:
        fh.write(text)
    return doc


def report_json(report: dict) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in ("markdown",)}
