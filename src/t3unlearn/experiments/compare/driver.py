"""The comparison's driver: resolve the models, run the units (in parallel with ``jobs``), select, report."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from t3unlearn.experiments.compare.config import ALL_METHODS, NO_SETTING, Setting, load_compare_config
from t3unlearn.experiments.compare.probes import oracle_result, probe_markdown, probe_plan, probe_report
from t3unlearn.experiments.compare.report import markdown_table, number, plot, sweep_table, verdict
from t3unlearn.experiments.compare.selection import aggregate, select_setting, title
from t3unlearn.experiments.compare.units import UnitSpec, run_unit, unit_key
from t3unlearn.errors import T3Error
from t3unlearn.methods import names as method_names


def unit_threads(setting: int | str | None, jobs: int) -> tuple[int | None, str]:
    """Torch threads for each unit's own process: ``auto`` never oversubscribes (at most ``cores / jobs``
    per unit, fewer on a busy machine); a number is used as given; 0 is torch's default."""
    from t3unlearn.io import choose_threads

    setting = "auto" if setting is None else setting
    n, why = choose_threads(setting)
    if str(setting) == "auto":
        cores = os.cpu_count() or 1
        cap = max(1, cores // max(1, jobs))
        if n is None or n > cap:
            n, why = cap, f"{cores} cores shared by {jobs} parallel run(s)"
    return n, why


def _resolve_models(benchmark: str, split: str, world, model, retain_model, pretrained, log, training: dict):
    """``(bench, model, retain_model, pretrained)``: the benchmark's own tiny models (of ``training``: e.g.
    ``{"seed": 1}``) unless given."""
    from t3unlearn.benchmarks import get_benchmark, resolve_model
    from t3unlearn.eval.runner import retain_split

    if world and benchmark != "world":
        raise T3Error(f"applies to the world benchmark only, not {benchmark}.", option="world")
    bench = get_benchmark(world if benchmark == "world" and world else benchmark)
    if model or retain_model:
        model = resolve_model(model, log=log) if model else None
        retain_model = resolve_model(retain_model, log=log) if retain_model else None
        if bench.kind == "tofu" and not model:
            raise T3Error("TOFU with a retain model needs the model to unlearn from as well (the fine-tuned 'full' model).")
        if bench.kind == "tofu" and not retain_model and not pretrained:
            raise T3Error("TOFU with your own model needs its retain model (the oracle) or a pretrained base to retrain one from.")
    need = [n for n, given in (("full", model), (retain_split(split), retain_model or (pretrained if model else None))) if not given]
    got = {k: str(v) for k, v in bench.models(tuple(need), log=log, **training).items()} if need else {}
    return bench, model or got["full"], retain_model or got.get(retain_split(split)), pretrained


def _reference_name(setting: Setting) -> str | None:
    """The model a T3 / cg setting's calibration compares truth ratios with (``"calibrate": {"reference_model": ...}``)."""
    from t3unlearn.experiments.compare.config import calibration_options

    return (calibration_options(setting.params.get("calibrate", False)) or {}).get("reference_model")


def _calibration_references(bench, settings: dict, pretrained, log, selection=None, training: dict | None = None) -> dict[str, str]:
    """Every reference model the settings' calibration and the sweeps' selection name, resolved to a path (at the
    edge, before any unit runs): ``"pretrained"`` is compare's ``--pretrained`` or the benchmark's own checkpoint
    before fine-tuning."""
    from t3unlearn.benchmarks import resolve_model

    out = {}
    names = {_reference_name(st) for m in method_names("lm", style="guidance") for st in settings.get(m, [])}
    if selection is not None and any(len(v) > 1 for v in settings.values()):
        names.add(selection.reference_model)
    for name in names - {None}:
        if name == "pretrained":
            out[name] = str(resolve_model(pretrained, log=log) if pretrained else bench.models(("pretrained",), log=log, **(training or {}))["pretrained"])
        else:
            out[name] = str(resolve_model(name, log=log))
        log(f"calibration reference model ({name}): {out[name]}")
    return out


def _check_arguments(split: str, methods: Sequence[str], seeds: int, jobs: int) -> list[str]:
    """The methods asked for, each one checked against the registry (as are the seeds and jobs)."""
    from t3unlearn.eval.runner import split_configs

    split_configs(split)
    known = method_names("lm")
    methods = [m.strip().lower() for m in methods if m.strip()]
    bad = [m for m in methods if m not in known]
    if bad or not methods:
        raise T3Error(f"has unknown method(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(known)}.",
                      option="methods")
    if seeds < 1:
        raise T3Error(f"must be >= 1, not {seeds}.", option="seeds")
    if jobs < 1:
        raise T3Error(f"must be >= 1, not {jobs}.", option="jobs")
    return methods


def _oracle_reference(out: Path, bench, split: str, retain_model, cfg, progress: bool, log) -> Path:
    """The retain (oracle) model's results on the split, under ``OUT/reference``: forget quality and privleak of
    every run are against them."""
    from t3unlearn.eval.runner import retain_split

    ref_dir = out / "reference"
    if not (ref_dir / "TOFU_EVAL.json").is_file():
        from t3unlearn.benchmarks import cached_evaluation

        if not retain_model:
            raise T3Error("forget quality needs the oracle's results: give the retain model.", option="retain_model")
        res = cached_evaluation(retain_model, name=retain_split(split), split=split, data=bench.data(split),
                                benchmark=bench.label, batch_size=cfg.eval.batch_size, max_new_tokens=cfg.eval.max_new_tokens,
                                progress=progress, log=log, role="retain")
        res.save(ref_dir)
    return ref_dir


def _calibration_set(out: Path, bench, split: str, model, log) -> tuple[str | None, Path | None]:
    """``(name, file)`` of the never-seen items like the forget set that the oracle-free selection metric compares
    the forget set with (``OUT/calibration.jsonl``); ``(None, None)`` when the benchmark has none."""
    from t3unlearn.io import atomic_write

    calib = bench.calibration(split, model)
    if calib is None:
        return None, None
    calib_file = out / "calibration.jsonl"
    rows = calib[0].to_list() if hasattr(calib[0], "to_list") else list(calib[0])
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)  # every field: perturbed answers too
    if not calib_file.is_file() or calib_file.read_text(encoding="utf-8") != text:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(calib_file) as fh:
            fh.write(text)
    log(f"calibration set (selection): {calib[1]}, {len(calib[0])} items")
    return calib[1], calib_file


def _retain_without_never_seen(out: Path, spec: str, calib_file: Path | None, log) -> str:
    """The retain set every method trains with: the split's retain config, less any item of the never-seen
    calibration set (offline TOFU's ``retain90`` holds the 20 calibration authors, which no tiny model trained on: a
    head taught that they are retain content would be calibrated on its own training items). Without an overlap, the
    config itself (``spec``: ``SOURCE:retainXX``); else ``OUT/retain.jsonl``."""
    from t3unlearn.data import load_qa
    from t3unlearn.io import atomic_write

    if calib_file is None:
        return spec
    never_seen = {json.loads(line)["question"] for line in calib_file.read_text(encoding="utf-8").splitlines() if line}
    rows = load_qa(spec, what="retain set").to_list()
    keep = [{"question": r["question"], "answer": r["answer"]} for r in rows if r["question"] not in never_seen]
    if len(keep) == len(rows):
        return spec
    path = out / "retain.jsonl"
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        with atomic_write(path) as fh:
            fh.write(text)
    log(f"retain set: {spec} less the {len(rows) - len(keep)} never-seen calibration items, {len(keep)} items ({path})")
    return str(path)


@dataclass
class _Units:
    """Makes the comparison's units (:class:`UnitSpec`) and runs them, ``jobs`` at a time when isolated."""

    out: Path
    fields: dict  # the UnitSpec fields every unit shares
    context: dict  # what enters every unit's cache key
    references: dict  # reference model name -> resolved path
    selection_reference: str | None
    isolate: bool
    jobs: int
    log: Callable[[str], None]
    probes: dict | None = None  # the leakage probes' plan (full units only), when asked for

    def _dir(self, method: str, setting: Setting, seed: int, mode: str, probes: dict | None = None) -> Path:
        quick = mode == "quick"
        context = {**self.context, "selection_reference": self.selection_reference} if quick else self.context
        key = unit_key(method, setting, seed, mode, context, probes)
        return self.out / "runs" / method / f"{key[:10]}-seed{seed}{'-quick' if quick else ''}"

    def spec(self, method: str, setting: Setting, seed: int, mode: str = "full", sweep: bool = False) -> UnitSpec:
        """One unit; a ``sweep`` unit never gets the probes (a full-evaluation sweep's chosen setting gets them in
        its row's unit, which reuses the sweep unit's TOFU evaluation)."""
        quick = mode == "quick"
        probes = self.probes if not (quick or sweep) else None
        reuse = str(self._dir(method, setting, seed, mode)) if probes else None  # the unit without the probes
        return UnitSpec(method=method, params=setting.params, train=setting.train, setting=setting.label, seed=seed,
                        eval_mode=mode, unit_dir=str(self._dir(method, setting, seed, mode, probes)),
                        calibration_reference=self.references.get(_reference_name(setting)),
                        selection_reference=self.selection_reference if quick else None, probes=probes, reuse=reuse,
                        **self.fields)

    def run(self, specs: list[UnitSpec]) -> list[dict]:
        if self.jobs <= 1 or not self.isolate or len(specs) < 2:
            return [run_unit(s, isolate=self.isolate, log=self.log) for s in specs]
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:  # each unit is its own process
            return list(pool.map(lambda s: run_unit(s, isolate=True, log=self.log), specs))


def _sweep(units: _Units, methods: list[str], settings: dict, selection, seed: int) -> tuple[dict, dict, float | None]:
    """The sweeps on the first seed (quick evaluation by default: teacher-forced, no generation): ``(sweeps, chosen,
    the full model's selection utility)``; ``chosen``: each method's selected setting (0 when it has one)."""
    swept = [m for m in methods if len(settings[m]) > 1]
    sel_specs = [units.spec("full", NO_SETTING, 0, selection.eval, sweep=True)] + [
        units.spec(m, st, seed, selection.eval, sweep=True) for m in swept for st in settings[m]]
    done = units.run(sel_specs) if swept else [None]
    full_sel, done = done[0], done[1:]
    full_sel_u = full_sel["summary"].get(selection.utility_metric) if full_sel else None
    sweeps: dict[str, list[dict]] = {}
    chosen: dict[str, int] = {m: 0 for m in methods}
    for m in swept:
        sweeps[m], done = done[: len(settings[m])], done[len(settings[m]) :]
        chosen[m] = select_setting(sweeps[m], full_sel_u, selection)
        units.log(f"{title(m)}: selected {settings[m][chosen[m]].label}")
    return sweeps, chosen, full_sel_u


def _rows(units: _Units, methods: list[str], settings: dict, chosen: dict, seeds: list[int],
          fixed_retrain: bool) -> tuple[list[dict], float | None, dict[str, list[dict]]]:
    """The full evaluation of the selected settings, every seed (the world's retain model is one fixed model:
    ``fixed_retrain``): ``(rows, the full model's utility, each method's records)``, one table row per method after
    the full model's."""
    todo = [("full", NO_SETTING, 0)] + [
        (m, settings[m][chosen[m]], s) for m in methods for s in seeds if s == seeds[0] or not (m == "retrain" and fixed_retrain)
    ]
    recs = units.run([units.spec(m, st, s) for m, st, s in todo])
    rows = [aggregate("full", "-", [recs[0]])]
    by_method = {"full": [recs[0]]}
    for m in methods:
        mrecs = by_method[m] = [r for (mm, _, _), r in zip(todo, recs) if mm == m]
        label = settings[m][chosen[m]].label
        if settings[m][chosen[m]].params.get("calibrate"):  # each seed chose its own T and s
            label = "calibrated: " + " / ".join(r["cost"].get("calibration", {}).get("chosen", "?") for r in mrecs)
        rows.append(aggregate(m, label, mrecs))
    return rows, recs[0]["summary"].get("model_utility"), by_method


def _markdown(title: str, rows: list[dict], sweeps: dict, chosen: dict, selection, seeds: int, full_mu, full_sel_u) -> str:
    tol = selection.utility_tolerance
    sweep = [] if not any(sweeps.values()) else [  # no method swept (every one a single setting): no sweep table
        f"Sweep (first seed, {selection.eval} evaluation; selection: lowest {selection.metric} among "
        f"settings with {selection.utility_metric} ≥ {1 - tol:g} × the full model's ({number(full_sel_u)})"
        + (f" and {selection.mia_metric} within 0.5 ± {selection.mia_tolerance:g}" if selection.mia_metric else "")
        + "; if none, the one that misses that by least):",
        "",
        sweep_table(sweeps, chosen, selection, full_sel_u),
        "",
    ]
    return "\n".join([
        f"### {title}: {seeds} seed(s) per method",
        "",
        markdown_table(rows),
        "",
        *verdict(rows, full_mu, tol),
        "",
        *sweep,
    ])


def _drop_finetuned_weights(out: Path) -> None:
    """Fine-tuned weights were only needed between the sweep and the evaluations."""
    finetuned = method_names("lm", style="finetune")
    for art in (out / "artifacts").glob("*-seed*"):
        if art.name.split("-")[0] in finetuned and (art / "model.safetensors").is_file():
            (art / "model.safetensors").unlink()


def compare(
    benchmark: str = "world",
    split: str = "forget10",
    methods: Sequence[str] = ALL_METHODS,
    seeds: int = 3,
    config=None,
    out: str | os.PathLike = "compare",
    *,
    world: str | None = None,
    model: str | None = None,
    retain_model: str | None = None,
    pretrained: str | None = None,
    isolate: bool | None = None,
    keep_models: bool = False,
    progress: bool = True,
    threads: int | str | None = None,
    jobs: int = 1,
    log: Callable[[str], None] = print,
    loading: dict | None = None,
    probes: bool | None = None,
    trainings: Sequence[int] | None = None,
) -> dict:
    """Run, evaluate and tabulate ``methods`` on one split (see :mod:`t3unlearn.experiments.compare`). Returns the
    report dict (``rows``, ``sweeps``, ``chosen``, ``markdown``, ``plot``), also written to ``OUT/SPLIT/``.

    ``methods``: names in the method registry (:mod:`t3unlearn.methods`; one you registered runs too).
    ``config``: a JSON file, a dict laid over the packaged defaults, or a :class:`CompareConfig`. ``isolate``:
    each unit in its own process (default: the config's, true). ``threads``: torch threads of each isolated
    unit (a number, 0 for torch's default, ``auto``; default: the config's, else ``auto``, which gives each
    of ``jobs`` parallel units at most ``cores / jobs``). Units run in this process use its own threads (the
    command line sets them; see :func:`t3unlearn.io.torch_threads`). ``loading``: model-loading keywords
    (``dtype``, ``device_map``, ``revision``, ``trust_remote_code``, ``attn_implementation``; see
    :mod:`t3unlearn.loading`) for the model to unlearn and the pretrained base retrain starts from, handed to
    every unit in its spec and part of the units' (and their artifacts') cache keys. ``probes``: also run the
    leakage probes on every full-evaluation unit and the oracle, reported in a table of their own (report key
    ``probes``; default: the config's ``eval.probes``; :mod:`t3unlearn.experiments.compare.probes`).

    ``trainings``: training seeds of the benchmark's own tiny models (``t3unlearn world train --seed S``: the
    pretrained base, the full model and the oracle, each training its own). The whole comparison runs on each
    training (``OUT/SPLIT/training-S/``, its own sweeps, selections and oracle), and ``OUT/SPLIT/compare.json``
    holds the table over all of them: mean ± sd over trainings × seeds (:mod:`.trainings`). Default: the
    benchmark's default training alone (seed 0), written to ``OUT/SPLIT/`` as before.
    """
    methods = _check_arguments(split, methods, seeds, jobs)
    cfg = load_compare_config(config)
    out = Path(out) / split
    if out.exists() and not out.is_dir():
        raise T3Error(f"{out} is a file; give a directory.", option="out")
    args = dict(benchmark=benchmark, split=split, methods=methods, seeds=seeds, cfg=cfg, world=world, model=model,
                retain_model=retain_model, pretrained=pretrained, isolate=isolate, progress=progress, threads=threads,
                jobs=jobs, log=log, loading=loading, probes=probes)
    if trainings is None:
        report, text, png, _ = _compare_training(out=out, training={}, **args)
        return _write(out, report, text, png, keep_models)
    from t3unlearn.experiments.compare.trainings import check_trainings, combine

    trainings = check_trainings(trainings, benchmark, model, retain_model, pretrained)
    done = []
    for i, t in enumerate(trainings):
        log(f"compare: model training {t} ({i + 1} of {len(trainings)})")
        t_out = out / f"training-{t}"
        report, text, png, records = _compare_training(out=t_out, training={"seed": t}, **args)
        _write(t_out, report, text, png, keep_models)
        done.append((t, report, records))
    from t3unlearn.eval.results import EvalResults
    from t3unlearn.eval.runner import cross_reference

    exact = cross_reference({t: EvalResults.load(out / f"training-{t}" / "reference") for t, _, _ in done})
    report, text, png = combine(done, methods, benchmark, split, cfg.selection, out, exact=exact)
    return _write(out, report, text, png, keep_models=True)


def _compare_training(*, benchmark, split, methods, seeds, cfg, out: Path, world, model, retain_model, pretrained, isolate,
                      progress, threads, jobs, log, loading, probes, training: dict):
    """One comparison on one training of the models: ``(report, markdown, plot, each method's records)``."""
    isolate = cfg.isolate if isolate is None else isolate
    n_threads, why = unit_threads(threads if threads is not None else cfg.threads, jobs if isolate else 1)
    t_start = time.perf_counter()

    own_model = model is None  # the benchmark's own model to unlearn
    bench, model, retain_model, pretrained = _resolve_models(benchmark, split, world, model, retain_model, pretrained, log,
                                                             training)
    source = bench.data_source()
    world_dir = str(bench.world_dir()) if bench.kind == "world" else None
    idk = str(Path(world_dir) / "idk.jsonl") if world_dir and (Path(world_dir) / "idk.jsonl").is_file() else None
    log(f"compare: {bench.label} {split}; model {model}; retain model {retain_model}; out {out}")
    if isolate:
        log(f"torch threads per run: {n_threads or 'torch default'} ({why})")
    ref_dir = _oracle_reference(out, bench, split, retain_model, cfg, progress, log)
    calib_name, calib_file = _calibration_set(out, bench, split, model, log)
    retain_source, retain_name = bench.retain_set(split, None if own_model else model)
    log(f"retain set (every method): {retain_name}, {retain_source}")
    retain = _retain_without_never_seen(out, retain_source, calib_file, log)

    ev = {"batch_size": cfg.eval.batch_size, "max_new_tokens": cfg.eval.max_new_tokens}
    context = {"calibration": calib_name, "benchmark": bench.label, "split": split, "world": world_dir, "model": model,
               "retain_model": retain_model, "pretrained": pretrained, "eval": ev, "max_length": cfg.max_length,
               "retain_subset": cfg.retain_subset}
    loading = dict(loading or {})
    if loading:  # only when given: the keys of runs without loading options stay what they were
        context["loading"] = loading
        log(f"model loading: {', '.join(f'{k}={v}' for k, v in sorted(loading.items()))}")

    settings = {m: (cfg.settings(m) if m != "retrain" or not retain_model else [NO_SETTING]) for m in methods}
    selection = cfg.selection
    references = _calibration_references(bench, settings, pretrained, log, selection, training)
    fields = dict(benchmark=bench.label, source=source, split=split, model=model, retain_model=retain_model,
                  pretrained=pretrained, forget=f"{source}:{split}", retain=retain, idk=idk,
                  eval=ev, reference=str(ref_dir), artifacts=str(out / "artifacts"), max_length=cfg.max_length,
                  retain_subset=cfg.retain_subset, threads=n_threads, progress=progress,
                  calibration=str(calib_file) if calib_file else None, calibration_name=calib_name, loading=loading)
    plan, oracle = _probes(cfg.eval.probes if probes is None else probes, bench, split, retain_model, pretrained,
                           own_model or bench.owns_model(model), cfg, progress, log, training)
    units = _Units(out, fields, context, references, references.get(selection.reference_model), isolate, jobs, log, plan)

    seed_list = list(range(seeds))
    sweeps, chosen, full_sel_u = _sweep(units, methods, settings, selection, seed_list[0])
    rows, full_mu, records = _rows(units, methods, settings, chosen, seed_list, fixed_retrain=bool(retain_model))
    title = f"{bench.label if bench.directory is None else 'world ' + bench.directory.name} {split}"  # world-tiny too
    png = plot(rows, out / f"fq_vs_mu_{split}.png", title)
    text = _markdown(title, rows, sweeps, chosen, selection, len(seed_list), full_mu, full_sel_u)
    report = {"benchmark": benchmark, "split": split, "seeds": seed_list, "full_utility": full_mu, "rows": rows,
              "sweeps": {m: [{"setting": r["setting"], "summary": r["summary"], "cost": r["cost"]} for r in rs] for m, rs in sweeps.items()},
              "chosen": chosen, "config": cfg.to_dict(), "wall_seconds": time.perf_counter() - t_start}
    if training:
        report["training"] = training["seed"]
    if plan is not None:  # a table of their own, after TOFU's
        report["probes"] = probe_report(rows, records, oracle, plan)
        text += "\n" + probe_markdown(report["probes"]) + "\n"
    return report, text, png, records


def _probes(on: bool, bench, split: str, retain_model, pretrained, own_model: bool, cfg, progress: bool, log,
            training: dict | None = None):
    """``(plan, the oracle's result)`` of the leakage probes, the oracle probed here once (then cached) before any
    unit runs; ``(None, None)`` when they are not asked for."""
    if not on:
        return None, None
    plan = probe_plan(bench, split, retain_model, pretrained, own_model, cfg.eval, log, training)
    log(f"leakage probes: every evaluated model and the oracle {plan['oracle_name']} (not TOFU metrics; not used for selection)")
    return plan, oracle_result(plan, split, progress=progress, log=log)


def _write(out: Path, report: dict, text: str, png: Path, keep_models: bool) -> dict:
    """Write ``compare.json`` and ``compare.md``; return the report with its markdown and plot."""
    from t3unlearn.io import atomic_write, save_json

    if not keep_models:
        _drop_finetuned_weights(out)
    save_json(out / "compare.json", report)
    with atomic_write(out / "compare.md", "w", encoding="utf-8") as fh:
        fh.write(text)
    report["markdown"] = text
    report["plot"] = str(png)
    return report


__all__ = ["compare", "unit_threads"]
