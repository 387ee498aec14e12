"""``t3unlearn compare`` (T3 against the baselines) and ``t3unlearn baseline`` (run one baseline).

torch and transformers are imported inside the handlers only, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from t3unlearn.flags import add_quiet, deprecated_alias
from t3unlearn.loading import add_loading_options, loading_kwargs

_COMPARE_EPILOG = """\
methods:
  t3          Temper-Then-Tilt: frozen model, tempered (T > 1) and tilted by a small head
  cg          plain classifier guidance: the same head with T = 1
  uld         logit difference: base - alpha * assistant (assistant remembers forget, flat on retain)
  gradascent, graddiff, npo, simnpo, idkdpo, rmu     fine-tuning baselines (change the weights)
  retrain     the oracle: on the world, its retain model (trained without the forget authors)

per method: a sweep of at least 6 settings (learning rate x epochs and the method's own knob) with the
first seed, chosen by the rule, reference and tolerances of T3's calibration ('t3unlearn calibrate'):
the setting whose forget truth ratios are closest (KS) to the reference -- the full model's own truth
ratios on the benchmark's never-seen calibration authors when their items carry perturbed answers (the
world's), else those of the checkpoint the model was fine-tuned from (TOFU's) -- among those that keep 97 %
of the full model's retain Q_A_Prob and whose forget-vs-calibration membership (min-k) AUC is within
0.5 ± 0.075 (never forget quality or privleak: that would peek at the oracle), then the remaining seeds;
table = mean ± std over seeds. T3 and cg ("calibrate") run calibrate per seed on their own grid instead
(cg: T = 1 only), against the same reference. The rule and tolerances are the config's "selection" (see
--print-config).
Every run is cached under OUT/SPLIT/runs: rerun the same command to resume (also after a crash or
kill -9: finished runs are kept whole). Each run is its own process; --jobs N runs N at once, each with
at most cores/N torch threads (--threads auto, the default).
--probes also runs t3unlearn probe's leakage probes (key-fact leak under rephrasings / prefix / sampling,
entity kept, non-word rate) on each method's evaluated models (every seed) and the oracle (probed once,
cached): PROBES.json beside each run's TOFU results and a "Leakage probes" table of its own in the report.
They are not TOFU metrics and never used for selection (config: "eval": {"probes": true}). Runs already
evaluated without them only get the probes added.

examples:
  t3unlearn compare --methods t3,cg,graddiff --seeds 1 --out cmp            quick look (forget10)
  t3unlearn compare --split forget10,forget05 --seeds 3 --out cmp --doc docs/results/comparison.md
  t3unlearn compare --print-config > my.json   (edit lrs / sweeps)   then  --config my.json
  t3unlearn compare --world tiny --methods t3,npo --seeds 1 --out /tmp/cmp  tiny world, minutes on CPU
  t3unlearn compare --world tiny --methods t3,npo --seeds 1 --out /tmp/cmp --probes   ... and the leakage probes
  t3unlearn compare --methods t3,cg,retrain --trainings 0,1,2 --out cmp   over three trainings of the world's models
"""

_BASELINE_EPILOG = """\
examples:
  t3unlearn baseline npo --model M --forget world:forget10 --retain world:retain90 --out npo_model
  t3unlearn baseline graddiff --model M --forget f.jsonl --retain r.jsonl --lr 1e-4 --epochs 5 --out gd
  t3unlearn baseline uld --model M --forget world:forget10 --retain world:retain90 --set alpha=0.5 --out uld
  t3unlearn baseline rmu ... --set steering_coeff=8 --set layer=1
  t3unlearn baseline npo --model BIG --forget tofu:forget10 --retain tofu:retain90 --mixed-precision bf16 \\
      --gradient-checkpointing --checkpoint-dir ckpt --save-steps 50 --out npo_big      an 8B model on a GPU
The output is a model directory (safetensors) that 't3unlearn eval --model OUT' evaluates. Training is
transformers.Trainer: 'accelerate launch -m t3unlearn baseline ...' runs it on several GPUs.
"""


def register(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="run T3 and the baselines on a split, evaluate, and write the comparison table and plot",
        description="Unlearn with every method, evaluate each with the same TOFU runner, and report a table "
        "(forget quality, model utility, forget ROUGE / truth ratio, privleak, extraction strength, "
        "trainable parameters, unlearning wall time, peak memory; mean ± std over seeds) and the "
        "forget-quality vs model-utility plot.",
        epilog=_COMPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--benchmark", default="world", choices=["world", "tofu"], help="world (embedded, offline; default) or tofu ($T3UNLEARN_TOFU_DIR when set, else the hub)")
    p.add_argument("--split", default="forget10", help="forget01 / forget05 / forget10, or several comma-separated (default forget10)")
    p.add_argument("--methods", default=",".join(_all_methods()), help="comma-separated (default: all)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per method for the selected setting (default 3)")
    p.add_argument("--config", default=None, help="JSON with per-method settings and sweeps (default: the packaged one; see --print-config)")
    p.add_argument("--out", default="compare", help="output directory (runs are cached there; default ./compare)")
    p.add_argument("--world", default=None, help="world preset or directory (default: the default preset)")
    p.add_argument("--model", default=None, help="the model to unlearn from (default: the world's full model)")
    p.add_argument("--oracle", default=None, metavar="MODEL",
                   help="the retain (oracle) model: never saw the forget set (default: the benchmark's retainXX model)")
    deprecated_alias(p, "--retain-model", "--oracle", dest="oracle")
    p.add_argument("--pretrained", default=None, metavar="MODEL",
                   help="the checkpoint --model was fine-tuned from, that never saw the forget set: retrain starts from it when no --oracle is given")
    p.add_argument("--trainings", default=None, metavar="SEEDS",
                   help="training seeds of the benchmark's own tiny models, e.g. 0,1,2: the whole comparison on each "
                        "training (models trained on first use, then cached; each with its own sweeps, calibration and "
                        "oracle, under OUT/SPLIT/training-S/) and one table over all of them, mean ± sd over trainings x "
                        "seeds (default: the cached training, seed 0, alone)")
    p.add_argument("--doc", default=None, help="also write the tables and plots into this markdown file (generated section)")
    p.add_argument("--threads", default=None,
                   help="torch CPU threads of each run: a number, 0 (torch's default) or auto: the cores not busy, "
                        "at most cores/JOBS per run (default: the config's threads, else auto)")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (separate processes; default 1)")
    p.add_argument("--in-process", action="store_true", help="run every unit in this process (faster start; peak memory then not per run)")
    p.add_argument("--probes", action="store_true",
                   help="also the leakage probes (t3unlearn probe's defaults) of every evaluated model and the oracle, "
                        "in a table of their own: not TOFU metrics, not used for selection (config: eval.probes)")
    p.add_argument("--keep-models", action="store_true", help="also save each fine-tuned model (safetensors) in its run directory")
    add_quiet(p)
    p.add_argument("--print-config", action="store_true", help="print the default config (JSON) and exit")
    add_loading_options(p, "loading the model to unlearn (--model, --pretrained; passed to transformers' from_pretrained)")
    p.set_defaults(func=run_compare)

    b = sub.add_parser(
        "baseline",
        help="unlearn with one fine-tuning baseline (GradAscent, GradDiff, NPO, SimNPO, IdkDPO, RMU, Retrain) or ULD",
        description="Fine-tune a model with one baseline's loss (or train a ULD assistant) and save the result.",
        epilog=_BASELINE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("method", help="gradascent, graddiff, npo, simnpo, idkdpo, rmu, retrain or uld")
    b.add_argument("--model", required=True, help="model directory or hub id (for retrain: the pretrained base)")
    b.add_argument("--forget", default=None, help="forget set (world:forget10, DIR:CONFIG, file.jsonl)")
    b.add_argument("--retain", required=True, help="retain set")
    b.add_argument("--out", required=True, help="output directory")
    b.add_argument("--idk", default=None, help="IdkDPO: file of 'I don't know' answers (default: idk.jsonl beside the forget set)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a method setting, e.g. beta=0.2 (repeatable; see docs/baselines.md for each method's)")
    t = b.add_argument_group("training (transformers.Trainer; defaults: the reference framework's for 8B models)")
    t.add_argument("--lr", type=float, default=None, help="learning rate [1e-5]")
    t.add_argument("--epochs", type=int, default=None, help="passes over the forget set [10]")
    t.add_argument("--batch-size", type=int, default=None, help="items per forward pass and device [8]")
    t.add_argument("--grad-accum", type=int, default=None, help="gradient accumulation steps [4]")
    t.add_argument("--seed", type=int, default=0, help="training seed (data order, initialization) [0]")
    t.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default="no",
                   help="training precision, as accelerate names it: bf16 / fp16 mixed precision (GPUs that have it) [no]")
    deprecated_alias(t, "--bf16", "--mixed-precision", dest="mixed_precision", value="bf16")
    t.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations: less memory, more time")
    t.add_argument("--deepspeed", default=None, metavar="FILE", help="a DeepSpeed config (launch with 'accelerate launch')")
    t.add_argument("--checkpoint-dir", default=None, metavar="DIR", help="save checkpoints (safetensors) here, with --save-steps")
    t.add_argument("--save-steps", type=int, default=None, metavar="N", help="a checkpoint every N optimizer steps")
    t.add_argument("--train-config", default=None, metavar="FILE",
                   help="a JSON object of training settings (any BaselineConfig field; see docs/baselines.md)")
    b.add_argument("--threads", default="auto", help="torch CPU threads: a number, 0 (torch's default) or auto [auto]")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    add_loading_options(b)
    b.set_defaults(func=run_baseline)


def _all_methods():
    from t3unlearn.experiments.compare.config import ALL_METHODS

    return ALL_METHODS


def run_compare(args) -> int:
    import contextlib
    from pathlib import Path

    from t3unlearn.experiments.compare import DEFAULT_CONFIG, compare, load_compare_config, unit_threads, write_doc
    from t3unlearn.experiments.compare.trainings import parse_trainings
    from t3unlearn.errors import T3Error
    from t3unlearn.experiments.compare.report import check_doc
    from t3unlearn.io import torch_threads
    from t3unlearn.t3.options import check_writable

    if args.print_config:
        sys.stdout.write(Path(DEFAULT_CONFIG).read_text(encoding="utf-8"))
        return 0
    splits = [s.strip() for s in args.split.split(",") if s.strip()]
    if not splits:
        raise T3Error("is empty; give e.g. forget10.", option="split")
    if args.oracle and len(splits) > 1:
        raise T3Error("belongs to one split; run one split at a time with it.", option="oracle")
    if args.jobs < 1:
        raise T3Error(f"must be >= 1, not {args.jobs}.", option="jobs")
    cfg = load_compare_config(args.config)
    trainings = parse_trainings(args.trainings) if args.trainings is not None else None
    check_writable(args.out)  # before any run: a directory (runs are cached there)
    if args.doc:
        check_doc(args.doc)
    setting = args.threads if args.threads is not None else cfg.threads
    isolate = cfg.isolate and not args.in_process
    reports = []
    restore = _term_as_interrupt()  # kill PID: stop like Ctrl+C, so the runs under way remove their temporaries
    # this process's own threads (the reference evaluation, units run here): the units' share of the machine
    with contextlib.ExitStack() as stack, torch_threads(unit_threads(setting, args.jobs if isolate else 1)[0] or 0):
        stack.callback(restore)
        for split in splits:
            rep = compare(
                args.benchmark, split, args.methods.split(","), args.seeds, cfg, args.out,
                world=args.world, model=args.model, retain_model=args.oracle, pretrained=args.pretrained,
                isolate=isolate, keep_models=args.keep_models, progress=not args.quiet, threads=setting, jobs=args.jobs,
                loading=loading_kwargs(args), probes=True if args.probes else None, trainings=trainings,
            )
            print()
            print(rep["markdown"])
            print(f"table: {Path(args.out) / split / 'compare.md'}   plot: {rep['plot']}")
            reports.append(rep)
    if args.doc:
        cmd = "t3unlearn " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv and sys.argv[0].endswith("t3unlearn") else _reconstruct(args)
        print(f"wrote {write_doc(args.doc, reports, cmd)}")
    return 0


def _term_as_interrupt():
    """SIGTERM raises KeyboardInterrupt until the returned function is called (main thread only)."""
    import signal
    import threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _reconstruct(args) -> str:
    parts = ["t3unlearn compare", f"--benchmark {args.benchmark}", f"--split {args.split}", f"--methods {args.methods}", f"--seeds {args.seeds}"]
    for flag, val in (("--config", args.config), ("--world", args.world), ("--trainings", args.trainings), ("--threads", args.threads), ("--jobs", args.jobs if args.jobs > 1 else None), ("--out", args.out), ("--doc", args.doc)):
        if val:
            parts.append(f"{flag} {shlex.quote(str(val))}")
    if args.probes:
        parts.append("--probes")
    from t3unlearn.loading import LOADING_OPTIONS

    for opt in LOADING_OPTIONS:
        val = getattr(args, opt.keyword, None)
        if val:
            parts.append(opt.option if opt.flag else f"{opt.option} {shlex.quote(str(val))}")
    return " ".join(parts)


def _parse_value(text: str):
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def _check_out(path) -> None:
    """Refuse to replace a directory that is not a previous baseline's output (it is replaced whole)."""
    from t3unlearn.baselines.uld import OUTPUT_MARKERS
    from t3unlearn.io import check_replaceable
    from t3unlearn.t3.options import check_writable

    check_replaceable(path, OUTPUT_MARKERS, "a baseline's output", option="out")
    check_writable(path)  # before any training


def run_baseline(args) -> int:
    from t3unlearn.errors import T3Error
    from t3unlearn.methods import get, names

    m = get(args.method, among=(*names("lm", style="finetune"), *names("lm", style="assistant")), what="baseline")
    if m.data == "paired" and not args.forget:
        raise T3Error(f"{m.title} needs --forget (the set to forget; only retrain trains on the retain set alone).")
    params = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise T3Error(f"--set takes KEY=VALUE, not {item!r}.")
        params[key.strip()] = _parse_value(value.strip())
    config = {}
    if args.train_config:
        from t3unlearn.io import load_json

        config = load_json(args.train_config)
        if not isinstance(config, dict):
            raise T3Error(f"{args.train_config} must hold a JSON object of training settings, e.g. {{\"lr\": 1e-4}}.")
    config["seed"] = args.seed
    for key in ("lr", "epochs", "batch_size", "grad_accum", "deepspeed", "checkpoint_dir", "save_steps"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    if args.mixed_precision != "no":
        config[args.mixed_precision] = True
    if args.gradient_checkpointing:
        config["gradient_checkpointing"] = True
    _check_out(args.out)
    from t3unlearn.benchmarks import resolve_data, resolve_model
    from t3unlearn.io import torch_threads

    with torch_threads(args.threads, log=None if args.quiet else print):
        forget = resolve_data(args.forget) if args.forget else None
        result = m.run(resolve_model(args.model, log=print), forget, resolve_data(args.retain), args.out, params=params,
                       config=config, progress=not args.quiet, loading=loading_kwargs(args),
                       **({"idk": args.idk} if m.uses_idk else {}))
    rep, cost = result.report, result.cost
    last = rep["history"][-1] if rep["history"] else {}
    peak = "n/a" if cost.peak_rss_mb is None else f"{cost.peak_rss_mb:.0f} MB"
    print(f"{m.title}: {rep['steps']} steps in {cost.wall_seconds:.1f}s, peak RSS {peak}, "
          f"{cost.trainable_params:,} trainable parameters; final "
          + ", ".join(f"{k} {v:.4g}" for k, v in last.items() if isinstance(v, float) and k != "lr"))
    print(f"saved {result.out}")
    return 0
