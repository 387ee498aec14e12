"""The offline benchmarks, resolved in one place: names like ``world:forget10`` and ``tofu:full``, each
benchmark's tiny models, and each benchmark's retain reference for forget quality.

Two benchmarks ship with t3unlearn:

- ``world`` — the embedded synthetic world (:mod:`t3unlearn.world`); ``world`` is the default preset,
  ``world-tiny`` the test-sized one, and any built world directory works too;
- ``tofu`` — TOFU's own data (:mod:`t3unlearn.tofu`): the local copy in ``$T3UNLEARN_TOFU_DIR``, else
  the hub, with tiny models trained on its text.

Names (resolved by :func:`resolve_data` and :func:`resolve_model`, which the command line, the demo and
``compare`` call; the library below them takes directories, files and hub ids only):

==========================  ==================================================================
``world:forget10``          a data set: the default world's ``forget10`` config (built on first use)
``world-tiny:retain90``     the tiny world's ``retain90``
``tofu:forget10``           TOFU's ``forget10`` (local copy or hub)
``world:full`` (a model)    the default world's tiny model fine-tuned on ``full`` (trained on first use)
``tofu:retain90`` (a model) the tiny model fine-tuned on TOFU's ``retain90`` (see :mod:`t3unlearn.tofu`)
==========================  ==================================================================

From Python::

    from t3unlearn.benchmarks import get_benchmark
    bench = get_benchmark("world")                     # or "world-tiny", "tofu", a world directory
    full = bench.model("full")                         # the model directory
    results = bench.evaluate(lm, split="forget10")     # forget quality against bench's retain model
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from t3unlearn.errors import DataError, T3Error

KINDS = ("world", "tofu")


def _quiet(*_args, **_kwargs) -> None:
    return None


@dataclass
class Benchmark:
    """One offline benchmark: where its data lives, its tiny models, and its retain reference."""

    kind: str  # "world" or "tofu"
    preset: str | None = None  # world preset (None for a world directory or for TOFU)
    directory: Path | None = None  # a built world's directory (world only)
    subset: str | None = None  # TOFU: which authors the tiny models train on (see t3unlearn.tofu.SUBSETS)
    _world: Path | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ where things are
    @property
    def label(self) -> str:
        """``world``, ``world-tiny``, ``tofu``, or the world directory's name."""
        if self.kind == "tofu":
            return "tofu"
        if self.directory is not None:
            return str(self.directory)
        return "world" if self.preset in (None, "default") else f"world-{self.preset}"

    def world_dir(self) -> Path:
        """The world's directory (built on first use); world only."""
        if self.kind != "world":
            raise T3Error("TOFU has no world directory; its configs come from t3unlearn.tofu.source().")
        if self._world is None:
            from t3unlearn.world import ensure_world

            self._world = self.directory if self.directory is not None else Path(ensure_world(self.preset or "default"))
        return self._world

    def data_source(self) -> str:
        """What :func:`t3unlearn.data.load_qa` takes as ``SOURCE`` for this benchmark's configs."""
        if self.kind == "tofu":
            from t3unlearn.tofu import source

            return source()
        return str(self.world_dir())

    def training_dir(self) -> Path:
        """The directory of the tiny models' training files (``pretrain``, ``full``, ``retainXX``)."""
        if self.kind == "tofu":
            from t3unlearn.tofu import DEFAULT_SUBSET, training_dir

            return training_dir(self.subset or DEFAULT_SUBSET)
        return self.world_dir()

    # ------------------------------------------------------------------ models and data
    def models(self, names: Sequence[str], *, log: Callable | None = None, progress: bool = True, **overrides) -> dict[str, Path]:
        """The tiny models ``names`` (``pretrained``, ``full``, ``retainXX``): trained once, then cached."""
        from t3unlearn.world.train import ensure_models

        return ensure_models(self.training_dir(), names, log=log, progress=progress, **overrides)

    def model(self, name: str, **kwargs) -> Path:
        return self.models((name,), **kwargs)[name]

    def owns_model(self, path: str | Path) -> bool:
        """Whether ``path`` lies in this benchmark's model cache (``cache_home()/models/<preset>-*``); nothing
        is trained or loaded. For TOFU that tells the tiny TOFU models (and heads over them) from real ones."""
        from t3unlearn.io import cache_home

        p = Path(str(path)).expanduser()
        root = (cache_home() / "models").resolve()
        if not p.exists() or not p.resolve().is_relative_to(root):
            return False
        first = p.resolve().relative_to(root).parts[0] if p.resolve() != root else ""
        prefix = "tofu" if self.kind == "tofu" else (self.preset or "custom")
        return first.startswith(prefix + "-")

    def calibration(self, config: str, model: str | Path | None = None):
        """``(dataset, name)`` of never-seen items like the forget set ``config``, for oracle-free calibration, or None.

        Never an item the evaluation of ``config`` reads (:meth:`check_calibration`). World: its ``calibration``
        authors. TOFU, for its tiny models (``model`` None or one of them): ``tofu:calibration``, 20 authors that no
        evaluation reads and no tiny model trains on (:func:`t3unlearn.tofu.training_sets`). TOFU for another
        ``model`` (a checkpoint fine-tuned on all of TOFU, which saw those authors): the ``holdout10`` authors that
        are not in the split's own ``holdoutXX``; for forget10 none are left, so None (give one with --holdout).
        """
        pct = _forget_pct(config)
        if self.kind == "world":
            found = self.qa("calibration", what="calibration set"), f"{self.label}:calibration"
        elif pct is None:
            return None
        elif model is None or str(model).startswith("tofu:") or self.owns_model(model):
            found = self.qa("calibration", what="calibration set"), "tofu:calibration"
        elif pct == "10":
            return None
        else:
            every = self.qa("holdout10", what="holdout set")
            own = set(self.qa(f"holdout{pct}", what="holdout set")["question"])
            keep = [i for i, q in enumerate(every["question"]) if q not in own]
            found = every.select(keep), f"tofu:holdout10 minus holdout{pct}"
        if pct is not None:
            self.check_calibration(found[0], config, name=found[1])
        return found

    def retain_set(self, split: str, model: str | Path | None = None) -> tuple[str, str]:
        """``(source, name)`` of the retain set methods unlearn ``split`` with: the retain model's own training set.
        World, and TOFU for another ``model`` (a checkpoint fine-tuned on all of TOFU): ``retainXX``. TOFU for its tiny
        models (``model`` None or one of them): the retain items those models were fine-tuned on (the tiny ``retainXX``
        model's training file: the evaluated authors less the forget set), not TOFU's whole ``retainXX``, whose other
        authors the tiny models met only in pretraining or -- the calibration authors -- never."""
        from t3unlearn.eval.runner import retain_split

        name = retain_split(split)
        if self.kind == "tofu" and (model is None or str(model).startswith("tofu:") or self.owns_model(model)):
            return f"{self.training_dir()}:{name}", f"tofu:{name} as the tiny models were fine-tuned on it"
        return f"{self.data_source()}:{name}", f"{self.label}:{name}"

    def evaluated_questions(self, split: str) -> dict[str, set[str]]:
        """The questions an evaluation of ``split`` reads, by config, leaving out the forget set itself (which
        unlearning and calibration read by definition): the retain, real-author, world-fact and holdout sets."""
        from t3unlearn.eval.runner import split_configs

        configs = {role: c for role, c in split_configs(split).items() if role not in ("forget", "forget_qa")}
        return {c: set(self.qa(c, what=f"evaluation set {c}")["question"]) for c in configs.values()}

    def check_calibration(self, items, split: str, *, name: str = "the calibration set") -> None:
        """Refuse a calibration set that shares a question with what the evaluation of ``split`` reads: calibrating
        on the evaluation's own never-seen items (its membership attack's holdout) would tune to the evaluation."""
        questions = set(items["question"])
        shared = {c: len(questions & qs) for c, qs in self.evaluated_questions(split).items() if questions & qs}
        if shared:
            which = ", ".join(f"{n} of {self.label}:{c}" for c, n in shared.items())
            raise DataError(f"{name} shares items with what the evaluation of {split} reads ({which}); calibrate on "
                            f"never-seen items the evaluation does not read (e.g. {self.label}:calibration).")

    def data(self, split: str = "forget10") -> dict[str, Any]:
        """The six evaluation sets of ``split`` by role (see :func:`t3unlearn.eval.runner.split_configs`)."""
        from t3unlearn.eval.runner import load_eval_data

        return load_eval_data(self.data_source(), split)

    def qa(self, config: str, *, what: str = "data set"):
        """One config (``forget10``, ``retain90``, ...) as a ``datasets.Dataset``."""
        from t3unlearn.data import load_qa

        if self.kind == "tofu" and config == "calibration":  # not a TOFU config: the tiny models' held-out authors
            return load_qa(f"{self.training_dir()}:calibration", what=what)
        return load_qa(f"{self.data_source()}:{config}", what=what)

    # ------------------------------------------------------------------ evaluation
    def retain_reference(self, split: str = "forget10", *, data=None, batch_size: int = 16, max_new_tokens: int = 200,
                         progress: bool = True, log: Callable = _quiet):
        """The benchmark's retain model (``retainXX`` for ``forgetYY``) evaluated on ``split``: the reference
        for forget quality and privleak. Evaluated once, then cached under ``cache_home()/eval``, keyed by the
        evaluation data, the model's files, the settings that change the numbers and the metric code version.
        """
        from t3unlearn.eval.runner import retain_split

        name = retain_split(split)
        model_dir = self.model(name, log=log, progress=progress)
        return cached_evaluation(model_dir, name=name, split=split, data=data if data is not None else self.data(split),
                                 benchmark=self.label, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                 progress=progress, log=log, role="retain")

    def evaluate(self, lm, split: str = "forget10", *, reference="auto", data=None, batch_size: int = 16,
                 max_new_tokens: int = 200, progress: bool = True, log: Callable = _quiet, **kwargs):
        """Evaluate ``lm`` (a :class:`t3unlearn.lm.CausalLM`) on ``split`` with every TOFU metric.

        ``reference``: ``"auto"`` (this benchmark's retain model, evaluated once and cached), ``None``
        (forget quality and privleak n/a), or results / a results directory / a TOFU_EVAL.json file.
        """
        from t3unlearn.eval.runner import apply_reference, evaluate

        data = data if data is not None else self.data(split)
        res = evaluate(lm, data=data, split=split, benchmark=self.label, batch_size=batch_size,
                       max_new_tokens=max_new_tokens, progress=progress, **kwargs)
        if isinstance(reference, str) and reference == "auto":
            reference = self.retain_reference(split, data=data, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                              progress=progress, log=log)
        return apply_reference(res, reference)


# --------------------------------------------------------------------------- names


def get_benchmark(name: str | Path = "world", *, subset: str | None = None, option: str | None = None) -> Benchmark:
    """``world`` (default preset), ``world-PRESET``, a preset name, a built world's directory, or ``tofu``.
    ``option``: the parameter that gave ``name`` (``preset``, ``world``: a world only), named by the error on a bad one."""
    text = str(name).strip()
    if text == "tofu":
        return Benchmark("tofu", subset=subset)
    path = Path(text).expanduser()
    if path.is_dir():  # a built world, or any directory of configs in TOFU's schema (then it has no models)
        return Benchmark("world", directory=path)
    preset = "default" if text in ("world", "default") else text[len("world-"):] if text.startswith("world-") else text
    from t3unlearn.world import PRESETS

    if preset not in PRESETS and option:
        raise DataError(f"must be a world preset ({', '.join(PRESETS)}) or a built world's directory, not {text!r}.",
                        option=option)
    if preset not in PRESETS:
        raise DataError(f"unknown benchmark {text!r}; use world, {', '.join('world-' + p for p in PRESETS if p != 'default')}, "
                        "tofu, or a built world's directory.")
    return Benchmark("world", preset=preset)


def parse_spec(spec: str) -> tuple[Benchmark, str] | None:
    """``world:NAME`` / ``world-PRESET:NAME`` / ``tofu:NAME`` -> ``(benchmark, NAME)``; anything else
    (an existing path, a hub id, a file) -> None."""
    text = str(spec)
    head, sep, name = text.partition(":")
    if not sep or not name or Path(text).expanduser().exists():
        return None
    if head == "tofu" or head == "world" or head.startswith("world-"):
        return get_benchmark(head), name
    return None


def resolve_data(spec: str) -> str:
    """A data source as :func:`t3unlearn.data.load_qa` takes it: ``world:CONFIG`` becomes
    ``WORLD_DIR:CONFIG`` (the world built on first use); ``tofu:calibration`` the tiny TOFU models' held-out authors
    in their training directory; any other ``tofu:CONFIG`` and everything else is unchanged."""
    parsed = parse_spec(spec)
    if parsed is None:
        return str(spec)
    bench, config = parsed
    if bench.kind == "tofu":
        return f"{bench.training_dir()}:calibration" if config == "calibration" else str(spec)
    return f"{bench.data_source()}:{config}"


def resolve_model(spec: str, *, log: Callable | None = None) -> str:
    """A model as a loadable path: ``world:full`` / ``tofu:retain90`` become that tiny model's directory
    (trained on first use); anything else (a directory, a hub id, a head directory) is unchanged."""
    parsed = parse_spec(spec)
    if parsed is None:
        return str(spec)
    bench, name = parsed
    from t3unlearn.world.train import MODEL_NAMES

    if name not in MODEL_NAMES:
        raise DataError(f"{spec}: {bench.label} has no model {name!r}; its models are {', '.join(MODEL_NAMES)}.")
    return str(bench.model(name, log=log))


def calibration_set(forget_spec: str, model: str | Path | None = None):
    """``(dataset, name)`` of never-seen items to calibrate T3 on for a benchmark forget set, or None
    (see :meth:`Benchmark.calibration`). ``forget_spec``: ``world:forget10``, ``tofu:forget10``, or the
    resolved source of a world config (``WORLD_DIR:forget10``, as a head's request records it); ``model``: the
    model being unlearned, where known (a TOFU checkpoint other than the tiny ones saw ``tofu:calibration``)."""
    parsed = benchmark_config(forget_spec)
    return None if parsed is None else parsed[0].calibration(parsed[1], model)


def check_calibration_set(items, forget_spec: str, name: str) -> None:
    """Refuse ``items`` (a calibration set given by the user) when ``forget_spec`` is a benchmark's forget split and
    they share questions with what its evaluation reads (:meth:`Benchmark.check_calibration`); else nothing."""
    parsed = benchmark_config(forget_spec)
    if parsed is not None and _forget_pct(parsed[1]) is not None:
        parsed[0].check_calibration(items, parsed[1], name=name)


def _forget_pct(config: str) -> str | None:
    """``"10"`` for ``forget10`` (a forget split), None for any other config."""
    pct = config[len("forget"):]
    return pct if config.startswith("forget") and pct.isdigit() else None


def benchmark_config(spec: str) -> tuple[Benchmark, str] | None:
    """``(benchmark, CONFIG)`` for ``world:CONFIG`` / ``tofu:CONFIG`` (:func:`parse_spec`) and for a world
    config's resolved source ``WORLD_DIR:CONFIG`` (:func:`resolve_data`'s output); None for anything else."""
    parsed = parse_spec(spec)
    if parsed is None:
        directory, sep, config = str(spec).rpartition(":")
        if sep and directory and config and (Path(directory).expanduser() / "world.json").is_file():
            parsed = get_benchmark(directory), config
    return parsed


def model_benchmark(spec: str) -> Benchmark | None:
    """The benchmark a model spec names (``world:full`` -> world), or None for any other model."""
    parsed = parse_spec(spec)
    return parsed[0] if parsed else None


# --------------------------------------------------------------------------- cached evaluations


def cached_evaluation(model_dir: str | Path, *, name: str, split: str, data, benchmark: str, batch_size: int = 16,
                      max_new_tokens: int = 200, progress: bool = True, log: Callable = _quiet, role: str | None = None,
                      head: str | Path | None = None, head_settings: dict | None = None):
    """Evaluate a model directory (plus an optional head) once and cache the results under
    ``cache_home()/eval``, keyed by the evaluation data, the model's (and head's) files, the settings that
    change the numbers and the metric code version. A corrupt cache entry is recomputed."""
    from t3unlearn.eval.results import EvalResults
    from t3unlearn.eval.runner import EVAL_VERSION, apply_reference, evaluate
    from t3unlearn.io import cache_home, file_fingerprint, fingerprint

    def files(path):
        return file_fingerprint(path) if Path(str(path)).expanduser().exists() else str(path)  # a hub id: its name

    key = fingerprint("t3-eval", EVAL_VERSION, data_fingerprint(data), files(model_dir),
                      files(head) if head else None, head_settings or {}, split, max_new_tokens)
    cache = cache_home() / "eval" / f"{name}-{split}-{key}"
    if (cache / "TOFU_EVAL.json").is_file():
        try:
            res = EvalResults.load(cache)
            log(f"{name}: cached results ({cache})")
            return res
        except T3Error:
            pass  # corrupt: recompute
    from t3unlearn.lm import load_lm

    log(f"{name}: evaluating on {benchmark} {split} once (cached at {cache})")
    t0 = time.perf_counter()
    lm = load_lm(str(model_dir), head=str(head) if head else None, name=name, **(head_settings or {}))
    res = evaluate(lm, data=data, split=split, benchmark=benchmark, batch_size=batch_size,
                   max_new_tokens=max_new_tokens, progress=progress)
    res.info.update({"name": name, "model_path": str(model_dir), "head": str(head) if head else None,
                     "load_and_eval_s": round(time.perf_counter() - t0, 3)})
    if role == "retain":
        res.info["role"] = "retain"
        res = apply_reference(res, res)
    res.save(cache)
    return res


def data_fingerprint(data) -> str:
    """Hash of the evaluation sets' content (role -> rows)."""
    from t3unlearn.io import fingerprint

    return fingerprint({role: (ds.to_list() if hasattr(ds, "to_list") else list(ds)) for role, ds in sorted(data.items())})


# --------------------------------------------------------------------------- how well the tiny models learned


CHECK_COLUMNS = (
    # (header, metric, format)
    ("forget ROUGE-L", "forget_Q_A_ROUGE", "{:.3f}"),
    ("forget prob", "forget_Q_A_Prob", "{:.3f}"),
    ("forget EM", "exact_memorization", "{:.3f}"),
    ("retain ROUGE-L", "retain_Q_A_ROUGE", "{:.3f}"),
    ("retain prob", "retain_Q_A_Prob", "{:.3f}"),
    ("RA ROUGE-L", "ra_Q_A_ROUGE", "{:.3f}"),
    ("WF ROUGE-L", "wf_Q_A_ROUGE", "{:.3f}"),
    ("model utility", "model_utility", "{:.3f}"),
    ("forget quality", "forget_quality", "{:.3g}"),
)


def check_models(bench: Benchmark, names: Sequence[str] = ("pretrained", "full", "retain90"), *, split: str = "forget10",
                 limit: int | None = None, log: Callable = print, progress: bool = True, **train_overrides) -> dict:
    """Train what is missing and evaluate each tiny model on ``split`` with the TOFU suite: how well
    ``full`` memorised the forget authors, how far below it the retain model stays, and the utility.

    Forget quality is against the split's retain model (``retainXX``). ``limit`` evaluates the first N
    items of each set only (a quick look; forget quality then compares N items).
    """
    from t3unlearn.eval.runner import apply_reference, evaluate, retain_split
    from t3unlearn.lm import load_lm

    retain_name = retain_split(split)
    names = list(dict.fromkeys([*names, retain_name]))
    t0 = time.perf_counter()
    paths = bench.models(names, log=log, progress=progress, **train_overrides)
    train_s = time.perf_counter() - t0
    data = bench.data(split)
    if limit:
        data = {role: ds.select(range(min(limit, len(ds)))) for role, ds in data.items()}
    results = {}
    for name in [retain_name] + [n for n in names if n != retain_name]:
        t = time.perf_counter()
        lm = load_lm(str(paths[name]), name=name)
        res = evaluate(lm, data=data, split=split, benchmark=bench.label, progress=progress)
        results[name] = (res, round(time.perf_counter() - t, 1))
    reference = results[retain_name][0]
    rows = []
    for name in names:
        res, eval_s = results[name]
        apply_reference(res, reference)
        import json

        info = json.loads((paths[name] / "train_info.json").read_text())
        rows.append({"model": name, "metrics": {m: res.agg(m) for _, m, _ in CHECK_COLUMNS},
                     "train_seconds": info.get("seconds"), "epochs": info.get("epochs"), "eval_seconds": eval_s})
    return {"benchmark": bench.label, "split": split, "training_dir": str(bench.training_dir()),
            "models": {n: str(p) for n, p in paths.items()}, "items": {role: len(ds) for role, ds in data.items()},
            "ensure_seconds": round(train_s, 1), "rows": rows}


def format_check(result: dict) -> str:
    """The check as a markdown table."""
    heads = ["model", *(h for h, _, _ in CHECK_COLUMNS), "train s", "eval s"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" + "---:|" * (len(heads) - 1)]
    for r in result["rows"]:
        cells = [r["model"]]
        for _, metric, fmt in CHECK_COLUMNS:
            v = r["metrics"].get(metric)
            cells.append("n/a" if v is None else fmt.format(v))
        cells += [f"{r['train_seconds'] or 0:.1f}", f"{r['eval_seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    items = ", ".join(f"{k} {v}" for k, v in result["items"].items())
    lines.append(f"\n{result['benchmark']} {result['split']} (items: {items}). ROUGE-L = greedy ROUGE-L recall; prob = "
                 f"Q_A_Prob; EM = exact memorization of the forget answers; forget quality vs the retain model. "
                 f"Training/loading took {result['ensure_seconds']:.1f}s this run.")
    return "\n".join(lines)
