"""``t3unlearn eval`` and ``t3unlearn report``. torch and friends are imported inside the handlers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# the probes run beside the oracle live in the evaluation (compare uses them too); imported here by older scripts
from t3unlearn.eval.probing import PROBE_CACHE_VERSION, probe_with_reference  # noqa: F401

EVAL_EPILOG = """\
what it computes (the TOFU suite, as open-unlearning defines it; see docs/eval.md):
  forget_quality        KS-test p-value of forget truth ratios vs the retain model's (needs a reference)
  model_utility         harmonic mean of retain / real-authors / world-facts prob, ROUGE, truth ratio
  forget_truth_ratio, forget_Q_A_Prob, forget_Q_A_ROUGE, extraction_strength, exact_memorization
  privleak              min-k MIA AUC (forget vs holdout) relative to the retain model's, in %
  mia_min_k, mia_min_k_plus_plus, mia_loss, mia_zlib

files written to --out:
  TOFU_EVAL.json     per-metric agg_value + value_by_index (open-unlearning's layout)
  TOFU_SUMMARY.json  metric -> aggregate
  run_info.json      model, head, split, settings, package versions, wall time
  PROBES.json, probes.md   with --probes: t3unlearn probe's measures beside the oracle's (key-fact leakage
                     under rephrasings / prefix / sampling, entity kept, non-word rate, judge loss);
                     reported beside the TOFU metrics, not part of them

retain reference (for forget quality and privleak), --oracle-results:
  auto (default)  --benchmark world: the world's retainXX model (forget10 -> retain90), evaluated
                  once and cached; --benchmark tofu: the tiny TOFU retain model when --model is one
                  of the tiny TOFU models (tofu:full, or a head / baseline built on it)
  FILE            the retain model's TOFU_EVAL.json or results directory (open-unlearning's
                  published eval logs work for real TOFU models)
  none            forget quality and privleak are reported as n/a

data: --benchmark tofu reads the local copy in $T3UNLEARN_TOFU_DIR when it is set, else locuslab/TOFU
from the hub (cached by datasets after the first download).

examples:
  t3unlearn eval --model world:full --benchmark world --split forget10 --out runs/full
  t3unlearn eval --model world:full --head runs/head --benchmark world --out runs/t3
  t3unlearn eval --model world:retain90 --out runs/retain90
  T3UNLEARN_TOFU_DIR=~/tofu t3unlearn eval --model tofu:full --benchmark tofu --out runs/tofu-full
  t3unlearn eval --model meta-llama/Llama-3.2-1B-Instruct --benchmark tofu --split forget10 \\
      --oracle-results retain90/TOFU_EVAL.json --batch-size 32 --out runs/llama
  t3unlearn report runs/full runs/retain90 runs/t3 --out runs/report
"""

REPORT_EPILOG = """\
Each argument is a results directory written by 't3unlearn eval --out' or a TOFU_EVAL.json file
(the reference framework's published ones work too). The retain model (run_info role 'retain',
or a name like retain90) is drawn as the reference star; --retain NAME marks it explicitly.

writes to --out (default: the current directory):
  report.md     default report per model (forget quality, model utility, forget truth ratio,
                forget prob, forget ROUGE, privleak, extraction strength) + the nine utility parts
  fq_vs_mu.png  forget quality (log axis) vs model utility, one labelled point per model

example:
  t3unlearn report runs/full runs/retain90 runs/t3 --out runs/report
"""


PROBE_EPILOG = """\
what it measures (docs/eval.md, "Leakage probes"), on the forget items, each beside the retain (oracle)
model's value under the same probe (--oracle auto, probed once and cached):
  key-fact leakage  the fraction of an item's key words (answer words in none of its perturbed answers,
                    nor in the question) that the model says, averaged over the items, under
      greedy      the question
      paraphrase  the data set's paraphrased question
      instruct    an instruction-style preamble before the question
      suffix      "Please give the exact answer." after it
      surname     the author named by surname only
      initial     the author named by initial and surname
      prefix      the question and the first half of the answer; the rest's key words
      sampled     --samples answers at temperature 1, the best of them
  entity kept       the question's named entities that the true answer repeats, kept in the greedy answer
  non-word rate     greedy answers' words that are not in the benchmark's vocabulary (its data files)
  judge loss        per-token loss of the greedy answers under --judge (default: the benchmark's
                    pretrained checkpoint, which never saw the forget set)
  answer entropy    teacher-forced on the true forget answers: the mean entropy (nats) of the next-token
                    distribution at each answer token (a model that never saw the author is unsure of
                    the fact and sure of the sentence around it)

examples:
  t3unlearn probe --model world:full --head runs/head --out runs/probe-t3
  t3unlearn probe --model world:full --out runs/probe-full
  t3unlearn probe --model world:full --head runs/head --probes greedy,instruct,prefix --out runs/probe-quick
  t3unlearn probe --model tofu:full --head head --benchmark tofu --samples 10 --out runs/probe
"""


def register(sub) -> None:
    from t3unlearn.eval.probe import PROBES
    from t3unlearn.loading import add_loading_options
    from t3unlearn.flags import add_quiet, deprecated_alias
    from t3unlearn.t3.options import add_force_option, add_guidance_options, positive_int

    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "eval",
        help="evaluate a model on TOFU or the embedded world (every TOFU metric)",
        description="Evaluate any model (base, T3 head, baseline) on a TOFU split, metric for metric as the "
        "field reports them, and write the results in open-unlearning's TOFU_EVAL.json layout.",
        epilog=EVAL_EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("--model", required=True, help="model directory or hub id; world:full, world:retain90, tofu:full ... name the benchmarks' tiny models")
    p.add_argument("--head", default=None, help="a T3 head directory to put on --model (t3unlearn unlearn --out)")
    add_guidance_options(p.add_argument_group("T3 guidance (overrides the head's saved values)"), saved=True)
    p.add_argument("--benchmark", choices=("world", "tofu"), default="world", help="world: embedded offline benchmark (default); tofu: TOFU ($T3UNLEARN_TOFU_DIR, else the hub)")
    p.add_argument("--split", default="forget10", help="forget01, forget05 or forget10 (default forget10)")
    p.add_argument("--world", default=None, help="--benchmark world: a world directory or preset (default: the default preset)")
    p.add_argument("--oracle-results", default="auto", metavar="FILE|auto|none", help="the oracle's (retain model's) results for forget quality and privleak (see below) [auto]")
    deprecated_alias(p, "--retain-results", "--oracle-results", dest="oracle_results")
    p.add_argument("--batch-size", type=int, default=32, help="batch size for scoring and generation (default 32)")
    p.add_argument("--max-new-tokens", type=int, default=200, help="generation length for ROUGE (default 200, as TOFU)")
    p.add_argument("--name", default=None, help="label for tables and plots (default: the model/head name)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--threads", default="auto",
        help="torch CPU threads: a number, 0 (torch's default) or auto (default): the cores not already busy "
        "(on a loaded machine several threads wait on each other and run several times slower)",
    )  # fmt: skip
    p.add_argument("--probes", action="store_true", help="also run the leakage probes (t3unlearn probe's defaults, beside the "
                   "oracle's; written to PROBES.json and probes.md, not mixed into the TOFU metrics)")
    add_quiet(p, old="--no-progress")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="only the first N items of each set: a quick check of a large model (the metrics are then "
                        "not comparable with a full run's) [all]")
    p.add_argument("--out", required=True, help="results directory to write")
    add_force_option(p)
    add_loading_options(p)
    p.set_defaults(func=run_eval)

    q = sub.add_parser(
        "probe",
        help="what a user or attacker gets about the forget set: key facts under rewording, prefix, sampling; names; non-words",
        description="Beyond the TOFU metrics: key-fact leakage under rephrased questions, answer-prefix completion and "
        "sampling, entity preservation and fluency, each set beside the retain (oracle) model's.",
        epilog=PROBE_EPILOG,
        formatter_class=fmt,
    )
    q.add_argument("--model", required=True, help="model directory, hub id, world:NAME / tofu:NAME, or a head directory")
    q.add_argument("--head", default=None, help="a T3 head directory to put on --model")
    add_guidance_options(q.add_argument_group("T3 guidance (overrides the head's saved values)"), saved=True)
    q.add_argument("--benchmark", choices=("world", "tofu"), default="world",
                   help="world: the embedded offline benchmark; tofu: TOFU ($T3UNLEARN_TOFU_DIR, else the hub) [world]")
    q.add_argument("--world", default=None, help="--benchmark world: a world directory or preset [default]")
    q.add_argument("--split", default="forget10", help="forget01, forget05 or forget10: the forget items probed [forget10]")
    q.add_argument("--probes", default="all", help=f"comma-separated probes to run, or all [all: {','.join(PROBES)}]")
    q.add_argument("--judge", default="auto", help="model scoring the answers' per-token loss: auto (the benchmark's "
                   "pretrained checkpoint), none, or a model directory / world:NAME / tofu:NAME [auto]")
    q.add_argument("--samples", type=int, default=5, help="sampled answers per question [5]")
    q.add_argument("--seed", type=int, default=0, help="sampling seed [0]")
    q.add_argument("--oracle", default="auto", choices=("auto", "none"), help="also probe the benchmark's retain (oracle) model [auto]")
    deprecated_alias(q, "--reference", "--oracle", dest="oracle", choices=("auto", "none"))
    q.add_argument("--batch-size", type=positive_int, default=32, help="batch size of generation and scoring [32]")
    q.add_argument("--max-new-tokens", type=positive_int, default=200, help="longest answer generated, in tokens [200]")
    q.add_argument("--name", default=None, help="label in the table")
    q.add_argument("--device", default=None, help="cpu or cuda [cuda when available]")
    q.add_argument("--threads", default="auto", help="torch CPU threads: a number, 0 (torch's default) or auto [auto]")
    add_quiet(q, old="--no-progress")
    q.add_argument("--out", required=True, help="directory for PROBES.json and probes.md")
    add_force_option(q)
    add_loading_options(q)
    q.set_defaults(func=run_probe)

    r = sub.add_parser(
        "report",
        help="compare results: markdown table and forget-quality vs utility plot",
        description="Compare TOFU results of several models: a markdown table and a forget quality vs model utility scatter plot.",
        epilog=REPORT_EPILOG,
        formatter_class=fmt,
    )
    r.add_argument("results", nargs="+", help="results directories or TOFU_EVAL.json files")
    r.add_argument("--retain", default=None,
                   help="name or path of the retain (reference) model among the results [the one named retainXX]")
    r.add_argument("--out", default=".", help="directory for report.md and fq_vs_mu.png (default: .)")
    r.set_defaults(func=run_report)


def run_eval(args) -> int:
    from t3unlearn.io import torch_threads

    with torch_threads(args.threads, log=lambda m: print(m, file=sys.stderr)):
        return _eval(args)


def _reference(args, bench, model_path: str, split: str):
    """The retain reference the options ask for: ``(results or "auto" or None, note)``."""
    from t3unlearn.eval.results import EvalResults
    from t3unlearn.eval.runner import retain_split

    choice = str(args.oracle_results).strip()
    if choice.lower() == "none":
        return None, "forget quality and privleak: n/a (--oracle-results none)."
    if choice.lower() != "auto":
        ref = EvalResults.load(choice)
        if not ref.forget_truth_ratios():
            print(f"note: {choice} has no per-item forget_truth_ratio; forget quality will be n/a.", file=sys.stderr)
        return ref, None
    base = model_path
    if args.head is None and (Path(model_path) / "t3_config.json").is_file():
        from t3unlearn.t3.model import T3ForCausalLM

        base = T3ForCausalLM.base_model_path(model_path)
    if bench.kind == "world" or bench.owns_model(base):
        return "auto", None
    return None, ("forget quality and privleak: n/a (no retain reference for this model). Pass the retain model's results "
                  f"with --oracle-results FILE: its TOFU_EVAL.json on {split} (e.g. from open-unlearning's published eval "
                  f"logs of the {retain_split(split)} model, or 't3unlearn eval' of that model).")


def _benchmark_of(args):
    """The benchmark --model is evaluated on: --benchmark (with --world), or the world a world model names
    (world-tiny:full is evaluated on the tiny world without --world tiny); a model of another benchmark is refused."""
    from t3unlearn.benchmarks import get_benchmark, model_benchmark
    from t3unlearn.errors import T3Error

    if args.world and args.benchmark != "world":
        raise T3Error("--world applies to --benchmark world; TOFU's local copy is named by $T3UNLEARN_TOFU_DIR.")
    owner = model_benchmark(args.model)
    if args.benchmark == "world" and not args.world and owner is not None and owner.kind == "world":
        return owner
    bench = get_benchmark(args.world or "world", option="world") if args.benchmark == "world" else get_benchmark("tofu")
    if owner is not None and owner.kind != bench.kind:
        raise T3Error(f"--model {args.model} is a model of {owner.label}; evaluate it with --benchmark {owner.kind}.")
    if owner is not None and owner.label != bench.label:
        raise T3Error(f"--model {args.model} is a model of {owner.label}, not of --world {args.world}; drop --world "
                      "(the model names its world) or give that world's model.")
    return bench


def _run_name(args, default: str | None) -> str | None:
    """The run's label: --name, else the benchmark model's name (world:full -> full) or ``default``, with the
    head's directory name after a '+' when there is a head (full+head)."""
    from t3unlearn.benchmarks import model_benchmark

    if args.name:
        return args.name
    model = args.model.partition(":")[2] if model_benchmark(args.model) is not None else default
    return f"{model}+{Path(args.head).name}" if model and args.head else model


def _eval(args) -> int:
    import time

    import torch

    from t3unlearn.benchmarks import resolve_model
    from t3unlearn.errors import T3Error
    from t3unlearn.eval import runner
    from t3unlearn.eval.report import single_table
    from t3unlearn.lm import load_lm
    from t3unlearn.loading import loading_kwargs
    from t3unlearn.t3.options import check_writable, guidance_overrides

    runner.split_configs(args.split)  # unknown split: fail before loading anything
    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise T3Error("--batch-size and --max-new-tokens must be >= 1.")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise T3Error(f"--out {out} is a file; give a directory for the results.")
    check_writable(out)
    bench = _benchmark_of(args)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    model_path = resolve_model(args.model, log=log)
    adapter_kwargs = guidance_overrides(args, model_path)
    reference, note = _reference(args, bench, model_path, args.split)
    data = bench.data(args.split)
    if args.limit is not None:  # a quick check: the first N items of every set
        data = {k: v.select(range(min(args.limit, len(v)))) if hasattr(v, "select") else v for k, v in data.items()}

    t0 = time.perf_counter()
    name = _run_name(args, default=None)  # a model directory: load_lm names it
    lm = load_lm(model_path, head=args.head, device=args.device, name=name, force=args.force, **adapter_kwargs,
                 **loading_kwargs(args))
    load_s = time.perf_counter() - t0
    log(f"evaluating {lm.name} on {bench.label} {args.split} (batch size {args.batch_size}, max {args.max_new_tokens} new tokens)")
    if reference == "auto":
        log(f"retain reference: {bench.label}'s {runner.retain_split(args.split)} model (evaluated once, then cached; "
            "--oracle-results FILE or none skips this)")
    kw = dict(data=data, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, progress=not args.quiet, log=log)
    retain_name = runner.retain_split(args.split)
    if reference == "auto" and not args.head and not adapter_kwargs and args.limit is None \
            and Path(model_path).resolve() == bench.model(retain_name, log=log).resolve():
        res = bench.retain_reference(args.split, **kw)  # the retain model itself: its results are the reference
    else:
        res = bench.evaluate(lm, args.split, reference=reference, **kw)
    res.info.update(
        {
            "model": args.model,
            "model_path": model_path,
            "head": args.head,
            "head_overrides": adapter_kwargs or None,
            "limit": args.limit,
            "loading": {k: str(v) for k, v in loading_kwargs(args).items()} or None,
            "load_time_s": round(load_s, 3),
            "torch_threads": torch.get_num_threads(),
        }
    )
    if args.oracle_results not in ("auto", "none"):
        res.info["retain_reference"]["source"] = str(args.oracle_results)
    notes = [note] if note else []
    warn = res.info.get("retain_reference", {}).get("warning")
    if warn:
        notes.append(f"warning: {warn}")
    res.save(out)

    t = res.info["timings"]
    print(f"\n{lm.name}  ({bench.label} {args.split})")
    print(single_table(res))
    print(
        f"\nwall time {res.info['wall_time_s']:.1f} s (scoring {t['scoring_s']:.1f} s for {res.info['scored_answers']} answers, "
        f"generation {t['generation_s']:.1f} s for {res.info['generations']} questions; model load {load_s:.1f} s)"
    )
    for n in notes:
        print(n)
    print(f"results: {out / 'TOFU_EVAL.json'}, {out / 'TOFU_SUMMARY.json'}, {out / 'run_info.json'}")
    if args.probes:
        log("leakage probes (t3unlearn probe's defaults; reported beside the TOFU metrics, not part of them)")
        table = probe_with_reference(lm, bench, args.split, out, reference=reference is not None, device=args.device, log=log,
                                     judge="auto" if reference is not None else "none",
                                     max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, progress=not args.quiet)
        print(f"\nleakage probes ({bench.label} {args.split}; not part of the TOFU metrics)")
        print(table)
        print(f"probes: {out / 'PROBES.json'}, {out / 'probes.md'}")
    return 0


def run_probe(args) -> int:
    from t3unlearn.io import torch_threads

    with torch_threads(args.threads, log=lambda m: print(m, file=sys.stderr)):
        return _probe(args)


def _probe(args) -> int:
    from t3unlearn.benchmarks import resolve_model
    from t3unlearn.errors import T3Error
    from t3unlearn.eval import runner
    from t3unlearn.eval.probe import PROBES
    from t3unlearn.lm import load_lm
    from t3unlearn.loading import loading_kwargs
    from t3unlearn.t3.model import T3ForCausalLM
    from t3unlearn.t3.options import check_writable, guidance_overrides

    runner.split_configs(args.split)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise T3Error(f"--out {out} is a file; give a directory.")
    probes = PROBES if args.probes.strip() == "all" else tuple(p.strip() for p in args.probes.split(",") if p.strip())
    bad = [p for p in probes if p not in PROBES]
    if bad or not probes:
        raise T3Error(f"--probes {args.probes}: unknown probe(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(PROBES)} or all.")
    check_writable(out)
    bench = _benchmark_of(args)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    model_path = resolve_model(args.model, log=log)
    overrides = guidance_overrides(args, model_path)
    name = _run_name(args, default=Path(args.model).name)
    lm = load_lm(model_path, head=args.head, device=args.device, name=name, force=args.force, **overrides,
                 **loading_kwargs(args))
    kw = dict(probes=probes, samples=args.samples, seed=args.seed, max_new_tokens=args.max_new_tokens,
              batch_size=args.batch_size, progress=not args.quiet)
    reference, judge = args.oracle == "auto", args.judge
    base = T3ForCausalLM.base_model_path(model_path) if args.head is None and (Path(model_path) / "t3_config.json").is_file() \
        else model_path
    if bench.kind != "world" and not bench.owns_model(base) and (reference or judge.strip().lower() == "auto"):
        # as eval does: TOFU's tiny models (trained here on first use) are not another model's oracle or judge
        reference, judge = False, judge if judge.strip().lower() != "auto" else "none"
        log(f"note: no oracle column and no judge loss: {bench.label}'s tiny retain and pretrained models are not this "
            "model's oracle; give a judge with --judge MODEL (--oracle none --judge none: no note).")
    table = probe_with_reference(lm, bench, args.split, out, reference=reference, judge=judge, device=args.device, log=log, **kw)
    print(table)
    print(f"results: {out / 'PROBES.json'}, {out / 'probes.md'}")
    return 0


def run_report(args) -> int:
    from t3unlearn.eval.report import write_report

    text, paths = write_report(args.results, args.out, retain=args.retain)
    print(text)
    print(f"written: {paths['report']}, {paths['plot']}")
    return 0
