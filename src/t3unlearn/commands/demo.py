"""``t3unlearn demo``: the whole job on the embedded world, offline, on a CPU.

1. build the world (fictitious authors in TOFU's schema) and train its tiny models: a "full"
   model that memorised every author and a "retain" oracle that never saw the forget authors;
2. unlearn the forget authors from the full model with T3 (the weights stay frozen) and choose T and s
   with ``t3unlearn calibrate``'s oracle-free rule: the forget truth ratios must look like the full model's own
   on the world's never-seen calibration authors, and the forget answers as unfamiliar to a membership attack
   as theirs;
3. show some answers before and after;
4. evaluate full, retain, T3 and plain classifier guidance (the same head at T = 1, its s calibrated by the
   same rule) on every TOFU metric,
   and write the comparison table and the forget-quality vs utility plot.

Everything is cached under ``$T3UNLEARN_HOME`` (default ``~/.cache/t3unlearn``), so a second run
takes seconds. Each step prints its wall time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from t3unlearn.t3.config import Guidance
from t3unlearn.t3.options import add_guidance_options

_EPILOG = """\
examples:
  t3unlearn demo                          # default world, forget10; writes t3-runs/demo/
  t3unlearn demo --preset tiny            # the test-sized world: about a minute cold
  t3unlearn demo --split forget05 --out runs/demo05
  t3unlearn demo --images                 # the image job: DDPM + VAE unlearning (docs/images.md)

what it writes to --out:
  t3-head/                  the T3 head (head.safetensors + t3_config.json, with the calibration), loadable with
                            T3ForCausalLM.from_pretrained or 't3unlearn generate --model t3-head'
  full/ retain90/ t3/ cg/   each model's TOFU_EVAL.json, TOFU_SUMMARY.json, run_info.json
  report.md, fq_vs_mu.png   the comparison table and the forget quality vs model utility plot
"""


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="build the offline world, unlearn with T3, evaluate and report (the whole job)",
        description="Run the whole t3unlearn job on the embedded offline world: build it and its tiny "
        "models, unlearn the forget authors with T3, show answers before and after, evaluate every model "
        "on the TOFU metrics and write the comparison.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", default="default", help="world preset (default, tiny) or a built world's directory; with --images, the "
                   "image preset (default, tiny) [default]")
    p.add_argument("--split", default="forget10", choices=("forget01", "forget05", "forget10"),
                   help="the forget split to unlearn and evaluate [forget10]")
    p.add_argument("--out", default="t3-runs/demo", help="output directory [t3-runs/demo]")
    add_guidance_options(p.add_argument_group("T3's guidance"), knobs=("temperature", "scale", "tempering"))
    p.add_argument("--no-calibrate", action="store_true",
                   help="keep --temperature, --scale and --tempering instead of choosing T and s with the oracle-free "
                        "rule of 't3unlearn calibrate' (forget truth ratios like the full model's on never-seen calibration "
                        "authors, forget answers as unfamiliar to a membership attack as theirs; see docs/t3.md)")
    p.add_argument("--seed", type=int, default=0, help="head training seed [0]")
    p.add_argument("--threads", default="auto", help="torch CPU threads: a number, 0 (torch's default) or auto: the cores not busy [auto]")
    p.add_argument("--jobs", default="auto",
                   help="processes for the steps that need nothing from each other (the two fine-tunes; the four "
                        "evaluations, beside unlearning), one torch thread each: a number (1 = one after the other) "
                        "or auto: one per core [auto]")
    p.add_argument("--no-eval", action="store_true", help="stop after showing answers (skip the TOFU evaluation)")
    p.add_argument("--train-models", action="store_true",
                   help="train the default world's models here (600-700 CPU s, most of a first demo) instead of using "
                        "the copies shipped with t3unlearn (one training, seed 0); the same as T3UNLEARN_TRAIN_MODELS=1. "
                        "Models already in the cache are reused either way")
    p.add_argument("--images", action="store_true", help="instead: the image job (DDPM + VAE, SISS, Adaptive-λ SISS, "
                   "baselines) on the augmented-digits benchmark; writes t3-runs/images-demo (see docs/images.md)")
    p.set_defaults(func=run_demo)


class _Clock:
    """Wall seconds of each step, and this process's CPU seconds in it (workers' are counted at the end)."""

    def __init__(self):
        self.start, self.cpu_start = time.perf_counter(), time.process_time()
        self.steps: list[tuple[str, float, float]] = []
        self._cpu = self.cpu_start

    def step(self, label: str, t0: float) -> None:
        dt, cpu = time.perf_counter() - t0, time.process_time()
        self.steps.append((label, dt, cpu - self._cpu))
        self._cpu = cpu
        print(f"  [{dt:6.1f} s] {label}", flush=True)

    def total(self) -> float:
        return time.perf_counter() - self.start

    def summary(self) -> str:
        from t3unlearn.workers import children_cpu_seconds

        own, workers = time.process_time() - self.cpu_start, children_cpu_seconds()
        lines = [f"\ndemo finished in {self.total():.1f} s ({own + workers:.1f} CPU s: this process {own:.1f}, "
                 f"worker processes {workers:.1f})"]
        lines += [f"  {dt:7.1f} s  {cpu:7.1f} CPU s  {label.split(':')[0]}" for label, dt, cpu in self.steps]
        return "\n".join(lines)


def _calibrate(t3, tokenizer, forget, retain, bench, split: str, clock: _Clock) -> tuple[dict, dict]:
    """T3's guidance and plain guidance's (the same head at T = 1), each chosen by calibrate's oracle-free rule on
    the benchmark's never-seen calibration authors; T3's is set on ``t3`` and recorded in its config."""
    from dataclasses import asdict

    from t3unlearn.errors import T3Error
    from t3unlearn.lm import load_model
    from t3unlearn.t3.calibrate import calibrate

    found = bench.calibration(split)
    if found is None:
        raise T3Error(f"the {bench.label} benchmark has no calibration set for {split}; run the demo with --no-calibrate.")
    holdout, name = found
    t = time.perf_counter()
    from t3unlearn.t3.calibrate import has_perturbed

    # the reference truth ratios: the full model's own on the never-seen calibration authors (the world's calibration
    # set carries perturbed answers); without them, the checkpoint the full model was fine-tuned from on the forget set
    never_seen = has_perturbed(holdout)
    reference = None if never_seen else load_model(str(bench.models(("pretrained",), log=print)["pretrained"]))
    against = (f"the full model's truth ratios on {name} (never-seen authors)" if never_seen
               else f"{bench.label}:pretrained's forget truth ratios, {name} as never-seen items")
    perturbed = bench.qa(f"{split}_perturbed", what="perturbed forget set")
    cal = calibrate(t3, tokenizer, forget, holdout, retain, reference=reference, perturbed=perturbed, progress=True)
    t3.config.calibration.update(holdout=name, perturbed=f"{bench.label}:{split}_perturbed")
    if not never_seen:
        t3.config.calibration["reference_model"] = f"{bench.label}:pretrained"
    plain = cal.restricted(lambda s: s.temperature == 1.0)  # the same grid's T = 1 rows, the same rule
    c, p = cal.chosen, plain.chosen
    skipped = f"; {cal.unscored} plain-token settings not needed" if cal.unscored else ""
    clock.step(f"calibrated: {len(cal.rows)} settings ({len(plain.rows)} at T = 1{skipped}) against {against}; "
               f"T3 {c.setting.label()} (truth-ratio KS {c.tr_ks:.3f}, "
               f"membership AUC {c.mia_auc:.3f}); T = 1: {p.setting.label()}", t)
    if c.setting == p.setting:
        print("  note: the rule chose no tempering (T = 1) here, so T3 and plain guidance are the same model on this "
              "data; the default world shows them apart", flush=True)
    return asdict(c.setting), asdict(p.setting)


def _show_answers(lms: dict, questions: list[tuple[str, str, str]]) -> None:
    """Print each question with the reference and every model's greedy answer."""
    answers = {name: lm.generate([q for _, q, _ in questions], max_new_tokens=60) for name, lm in lms.items()}
    width = max(len(n) for n in lms)
    for i, (kind, q, ref) in enumerate(questions):
        print(f"\n  [{kind}] {q}\n    {'truth'.ljust(width)} : {ref}")
        for name in lms:
            print(f"    {name.ljust(width)} : {answers[name][i]}")


def run_demo(args) -> int:
    from t3unlearn.io import torch_threads

    if getattr(args, "images", False):
        from t3unlearn.commands.images_demo import run_images_demo

        return run_images_demo(args)
    from t3unlearn.workers import choose_jobs

    jobs = choose_jobs(args.jobs)
    if str(args.threads) == "auto" and jobs > 1:
        # the worker processes run beside this one, one thread each: more threads here would only wait for cores
        print(f"torch threads: 1 here and in each worker process (--jobs {args.jobs}: {jobs} at a time)", flush=True)
        with torch_threads(1):
            return _demo(args)
    with torch_threads(args.threads, log=print):
        return _demo(args)


class _Evaluations:
    """The demo's evaluations in worker processes (``--jobs`` > 1; :mod:`t3unlearn.workers`), each started as soon
    as what it needs exists: the oracle and the full model as soon as each is trained, T3 and plain guidance once
    the head is saved, while this process unlearns, calibrates and shows answers. Each writes the evaluation cache
    that step 4 then reads (the same results: every evaluation is the same computation in any process). With
    one job nothing starts here and step 4 evaluates in this process, as before."""

    def __init__(self, label: str, split: str, jobs: int):
        self.label, self.split, self.jobs = label, split, jobs
        self.futures: dict = {}
        self._pool = None
        self._progress = None

    def __enter__(self) -> "_Evaluations":
        import os

        from t3unlearn.progress import mode
        from t3unlearn.workers import Workers

        if self.jobs > 1:
            # started now: their imports run while the base pretrains on one core
            self._pool = Workers(self.jobs, preload=("t3unlearn.benchmarks", "t3unlearn.eval.runner", "t3unlearn.t3")).__enter__()
            # bars redrawn on a line the workers' lines also go to would mix: plain lines while they run
            self._progress = os.environ.get("T3UNLEARN_PROGRESS")
            if mode() == "bar":
                os.environ["T3UNLEARN_PROGRESS"] = "log"
        return self

    def start(self, name: str, model_dir=None, head=None, settings=None, *, retain: bool = False) -> None:
        if self._pool is not None:
            self.futures[name] = self._pool.submit(name, evaluation_job, self.label, self.split, name,
                                                   None if model_dir is None else str(model_dir),
                                                   None if head is None else str(head), settings, retain)

    def wait(self, name: str) -> None:
        if name in self.futures:
            self.futures.pop(name).result()

    def __exit__(self, *exc) -> None:
        import os

        if self._pool is not None:
            self._pool.__exit__(*exc)
            if self._progress is None:
                os.environ.pop("T3UNLEARN_PROGRESS", None)
            else:
                os.environ["T3UNLEARN_PROGRESS"] = self._progress


def evaluation_job(label: str, split: str, name: str, model_dir: str | None, head: str | None, settings: dict | None,
                   retain: bool) -> None:
    """A worker's job: one of the demo's evaluations, into the evaluation cache (``retain``: the benchmark's
    retain reference, as :meth:`t3unlearn.benchmarks.Benchmark.retain_reference` computes it)."""
    from t3unlearn.benchmarks import cached_evaluation, get_benchmark

    bench = get_benchmark(label)
    data = bench.data(split)
    if retain:
        bench.retain_reference(split, data=data, log=print)
    else:
        cached_evaluation(model_dir, name=name, split=split, data=data, benchmark=bench.label, head=head,
                          head_settings=settings, log=print)


def _demo(args) -> int:
    import torch

    from t3unlearn.benchmarks import get_benchmark
    from t3unlearn.eval.runner import retain_split
    from t3unlearn.io import cache_home
    from t3unlearn.t3.options import check_writable
    from t3unlearn.workers import choose_jobs

    torch.manual_seed(args.seed)
    out = Path(args.out)
    check_writable(out)  # before any work (a file there failed with a traceback after training)
    clock = _Clock()
    retain_name = retain_split(args.split)
    bench = get_benchmark(args.preset, option="preset")
    jobs = choose_jobs(args.jobs)
    print(f"t3unlearn demo: world preset {args.preset!r}, {args.split}; cache in {cache_home()}", flush=True)

    print("\n1. the world and its models", flush=True)
    t = time.perf_counter()
    world = bench.world_dir()
    clock.step(f"world ready: {world}", t)
    with _Evaluations(bench.label, args.split, 1 if args.no_eval else jobs) as evals:
        t = time.perf_counter()
        # each model's evaluation starts as soon as it is trained, while the other may still train
        models = bench.models(("full", retain_name), log=print, jobs=jobs, shipped=not args.train_models,
                              on_ready=lambda name, path: evals.start(name, path, retain=name == retain_name))
        clock.step(f"models ready: full, {retain_name} ({models['full'].parent})", t)
        head_dir, guidance, cg_guidance, lms, forget, retain = _unlearn(args, bench, models, retain_name, out, clock)
        evals.start("t3", models["full"], head_dir, guidance)
        evals.start("cg", models["full"], head_dir, cg_guidance)

        print("\n3. answers before and after (greedy)", flush=True)
        t = time.perf_counter()
        pick = [("forget", forget[i]) for i in (0, len(forget) // 2 + 3)] + [("retain", retain[i]) for i in (1, len(retain) // 2 + 5)]
        _show_answers(lms, [(kind, row["question"], row["answer"]) for kind, row in pick])
        clock.step("answers", t)

        if not args.no_eval:
            _evaluate(bench, args.split, models["full"], head_dir, {"t3": guidance, "cg": cg_guidance}, out, clock, evals)

    print(clock.summary())
    return 0


def _unlearn(args, bench, models: dict, retain_name: str, out: Path, clock: _Clock):
    """Step 2: the T3 head over the full model, calibrated (unless --no-calibrate) and saved; returns its directory,
    T3's and plain guidance's settings, the four models to show answers of, and the forget and retain sets."""
    from t3unlearn.lm import CausalLM, load_model, load_tokenizer
    from t3unlearn.t3 import T3ForCausalLM, unlearn
    from t3unlearn.t3.train import format_report

    g = Guidance().replace(**Guidance.changes_from(args))
    guidance = {"temperature": g.temperature, "scale": g.scale, "tempering": g.tempering}
    cg_guidance = {"temperature": 1.0, "scale": g.scale}
    print(f"\n2. unlearn {args.split} from the full model with T3 "
          + ("(then T and s calibrated without the oracle)" if not args.no_calibrate else
             f"(T = {g.temperature:g}, s = {g.scale:g}, {g.tempering} tempering)"), flush=True)
    t = time.perf_counter()
    tokenizer = load_tokenizer(str(models["full"]))
    base = load_model(str(models["full"]))
    forget = bench.qa(args.split, what="forget set")
    retain = bench.qa(retain_name, what="retain set")
    result = unlearn(base, tokenizer, forget, retain, **guidance, seed=args.seed, progress=True)
    rep = result.report
    clock.step(f"head trained (features {rep['features_s']:.1f} s{', cached' if rep['features_cached'] else ''}; "
               f"training {rep['train_s']:.1f} s)", t)
    print("  " + format_report(rep).replace("\n", "\n  "))
    if not args.no_calibrate:
        guidance, cg_guidance = _calibrate(result.model, tokenizer, forget, retain, bench, args.split, clock)
    head_dir = out / "t3-head"
    result.model.save_pretrained(head_dir)
    print(f"  saved to {head_dir}", flush=True)

    t3 = result.model.eval()
    cg = T3ForCausalLM.from_base(base, head_dir, **cg_guidance).eval()
    retain_model = load_model(str(models[retain_name]))
    lms = {
        "full": CausalLM(base, tokenizer, name="full"),
        retain_name: CausalLM(retain_model, tokenizer, name=retain_name),
        "t3": CausalLM(t3, tokenizer, name="t3"),
        "cg (T=1)": CausalLM(cg, tokenizer, name="cg"),
    }
    return head_dir, guidance, cg_guidance, lms, forget, retain


def _evaluate(bench, split: str, full: Path, head_dir: Path, settings: dict, out: Path, clock: _Clock,
              evals: _Evaluations) -> None:
    """Step 4: the oracle, full, T3 and plain guidance on every TOFU metric (from the workers' cache entries when
    they ran there), the comparison table and the plot."""
    from t3unlearn.benchmarks import cached_evaluation
    from t3unlearn.eval import apply_reference, write_report
    from t3unlearn.eval.runner import retain_split

    retain_name = retain_split(split)
    print(f"\n4. TOFU evaluation on {split} (every metric; cached per model and settings)", flush=True)
    t = time.perf_counter()
    data = bench.data(split)
    evals.wait(retain_name)
    reference = bench.retain_reference(split, data=data, log=print)
    reference.info["name"] = retain_name
    reference.save(out / retain_name)
    clock.step(f"{retain_name} ready: the oracle, forget quality's reference", t)
    for name, head in (("full", None), ("t3", head_dir), ("cg", head_dir)):
        t = time.perf_counter()
        evals.wait(name)
        res = cached_evaluation(full, name=name, split=split, data=data, benchmark=bench.label,
                                head=head, head_settings=settings.get(name), log=print)
        apply_reference(res, reference)
        res.info["name"] = name
        res.save(out / name)
        clock.step(f"evaluated {name}", t)
    table, files = write_report([out / retain_name, out / "full", out / "t3", out / "cg"], out, retain=retain_name)
    print("\n" + table)
    print(f"wrote {files.get('report', out / 'report.md')} and {files.get('plot', out / 'fq_vs_mu.png')}")
