"""``t3unlearn features`` (extract and cache a data set's features, data-parallel under ``accelerate launch``)
and ``t3unlearn sequential`` (the sequential-requests benchmark). torch is imported inside the handlers only."""

from __future__ import annotations

import argparse

from t3unlearn.loading import add_loading_options
from t3unlearn.t3.options import positive_float, positive_int

_FEATURES_EPILOG = """\
examples:
  # cache the retain set's features once, streamed to disk in shards (memory: one shard)
  t3unlearn features --model world:full --data world:retain90
  # a large retain set on two GPUs (or two CPU processes): each process extracts half of the shards
  accelerate launch --multi_gpu --num_processes 2 -m t3unlearn features --model my-llama --data retain.jsonl
  torchrun --nproc_per_node 2 -m t3unlearn features --model my-llama --data retain.jsonl      # the same
  # then unlearning reads them from the cache and runs the base over the forget set only
  t3unlearn unlearn --model my-llama --forget forget.jsonl --retain retain.jsonl --out head

The cache entry of a data set is keyed by the base (config, dtype, weights) and the set's token ids, so
--max-length and --template must be those 'unlearn' will use (the defaults are the same). An interrupted
extraction resumes at the first missing shard. Cache: $T3UNLEARN_HOME/features (or --cache-dir).
"""

_SEQUENTIAL_EPILOG = """\
examples:
  t3unlearn sequential --benchmark world --seeds 3 --out seq --doc docs/results/sequential.md
  T3UNLEARN_TOFU_DIR=/path/to/tofu t3unlearn sequential --benchmark tofu --seeds 3 --out seq \\
      --config benchmarks/sequential_tofu.json --doc docs/results/sequential.md
  t3unlearn sequential --benchmark world-tiny --requests 2 --methods t3,graddiff --seeds 1 --out seq-tiny

methods: t3 (incremental: features of the new request only, head retrained on the union), t3-finetune (head
fine-tuned on the new request only), t3-scratch (every feature extracted again, head retrained; compared with
t3's head byte for byte), graddiff, npo, simnpo (each request fine-tunes the previous request's model, at the
learning rate 'compare' selected for forget10 on that benchmark).
After each request: forget quality and forget ROUGE on all items requested so far (against the retain90 model
on the same items), model utility, wall time of the request. Every (method, seed, request) is cached under
OUT/BENCH/runs: a rerun resumes. --doc puts the table and plot into a markdown file (generated section).
"""


def register(sub) -> None:
    p = sub.add_parser(
        "features",
        help="extract a data set's T3 features into the cache (streamed in shards; data-parallel with accelerate)",
        description="One forward pass of the frozen model over each data set; the pooled features T3 trains on "
        "are cached per data set, written in shards, so 'unlearn' never runs the model over that set again.",
        epilog=_FEATURES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="base causal LM: local directory, hub id or world:NAME")
    p.add_argument("--data", required=True, action="append", metavar="SOURCE",
                   help="a data set (world:retain90, DIR:CONFIG, FILE.jsonl, tofu:retain90, ...); repeatable")
    p.add_argument("--shard-mb", type=positive_float, default=None, help="feature MB per shard: what one process holds at once [256]")
    p.add_argument("--feature-batch-size", type=positive_int, default=32, help="items per forward pass [32]")
    p.add_argument("--max-length", type=int, default=512, help="token budget per item, as for unlearn [512]")
    p.add_argument("--template", choices=("auto", "chat", "plain"), default="auto", help="prompt format, as for unlearn [auto]")
    p.add_argument("--cache-dir", default=None, help="feature cache directory [$T3UNLEARN_HOME/features]")
    p.add_argument("--device", default=None, help="cpu, cuda ... [cuda if available; under accelerate: the process's device]")
    p.add_argument("--threads", default="auto", help="torch CPU threads: a number, 0 (torch's default) or auto [auto]")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_loading_options(p)  # --dtype: a bf16 base has its own cache entries
    p.set_defaults(func=run_features)

    s = sub.add_parser(
        "sequential",
        help="deletion requests one after another: T3 (incremental, from scratch) vs fine-tuning baselines",
        description="Cut forget10 into requests of whole authors and apply them one by one with each method; "
        "evaluate after each request (forget quality and ROUGE on everything requested so far, model utility, "
        "wall time); write a table and a plot of utility and forget quality vs the number of requests.",
        epilog=_SEQUENTIAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--benchmark", default="world", help="world, world-tiny, tofu (comma-separated for several) [world]")
    s.add_argument("--requests", type=int, default=10, help="number of requests forget10 is cut into [10]")
    s.add_argument("--methods", default="t3,t3-finetune,t3-scratch,graddiff,npo,simnpo", help="comma-separated [%(default)s]")
    s.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per method [3]")
    s.add_argument("--baseline-seeds", type=int, default=None, metavar="N",
                   help="seeds of graddiff, npo, simnpo if fewer (a request of theirs costs several of T3's) [--seeds]")
    s.add_argument("--out", default="sequential", help="output directory (units are cached there) [sequential]")
    s.add_argument("--doc", default=None, help="also write the tables and plots into this markdown file")
    s.add_argument("--config", default=None, metavar="FILE",
                   help="a 't3unlearn compare' config (JSON): its t3 params set T3's head, training and guidance for "
                   "every T3 unit (e.g. benchmarks/sequential_tofu.json for offline TOFU's MLP head) [the packaged one]")
    s.add_argument("--eval-batch-size", type=int, default=32, help="batch size of the evaluation's scoring and generation [32]")
    s.add_argument("--max-new-tokens", type=int, default=200, help="generation budget of the evaluation [200]")
    s.add_argument("--threads", default="auto", help="torch CPU threads: a number, 0 (torch's default) or auto [auto]")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=run_sequential)


def run_features(args) -> int:
    import os

    from t3unlearn.io import torch_threads

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    with torch_threads(args.threads, log=None if args.quiet or distributed else print):
        return _features(args, distributed)


def _features(args, distributed: bool) -> int:
    import json
    import time

    import torch

    from t3unlearn.benchmarks import resolve_data, resolve_model
    from t3unlearn.data import QAFormatter
    from t3unlearn.errors import T3Error
    from t3unlearn.lm import load_model, load_tokenizer
    from t3unlearn.loading import loading_kwargs, tokenizer_kwargs
    from t3unlearn.t3.feature_cache import DEFAULT_SHARD_MB, MANIFEST, extract_part, feature_home, model_fingerprint, part_key
    from t3unlearn.t3.requests import DataSet

    start = time.perf_counter()
    state = None
    if distributed:
        from accelerate import PartialState

        state = PartialState(cpu=not torch.cuda.is_available())
        if args.device is not None:
            raise T3Error("--device is chosen by accelerate for each process; drop it under accelerate launch / torchrun.")
    main = state is None or state.is_main_process
    say = print if main else (lambda *a, **k: None)
    device = state.device if state is not None else args.device
    model_path = resolve_model(args.model, log=say)
    kw = loading_kwargs(args)
    tokenizer = load_tokenizer(model_path, **tokenizer_kwargs(kw))
    model = load_model(model_path, device=str(device) if device is not None else None, **kw)
    fmt = QAFormatter(tokenizer, max_length=args.max_length, template=args.template)
    fp = model_fingerprint(model)
    n = state.num_processes if state is not None else 1
    say(f"model {args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
        f"{next(model.parameters()).dtype}; {n} process(es); cache {feature_home(args.cache_dir)}", flush=True)
    for spec in args.data:
        ds = DataSet.load(resolve_data(spec), what="data set").encode(fmt)
        t0 = time.perf_counter()
        info: dict = {}
        # load=False: the finished part is never read back into memory (extraction memory stays one shard)
        extract_part(model, ds.examples, pad_id=fmt.pad_id, cache_dir=args.cache_dir, model_fp=fp,
                     batch_size=args.feature_batch_size, shard_mb=args.shard_mb or DEFAULT_SHARD_MB,
                     device=device, progress=not args.quiet and main, desc=spec, state=state, load=False, info=info)
        if state is not None and info["shards"] is not None:
            print(f"{spec}: process {state.process_index}/{state.num_processes} extracted {len(info['computed'])} of the "
                  f"part's {info['shards']} shards ({len(info['assigned'])} assigned to it)", flush=True)
        if main:
            key = part_key(fp, ds.examples)
            m = json.loads((feature_home(args.cache_dir) / key / MANIFEST).read_text(encoding="utf-8"))
            how = "already cached" if info["shards"] is None else f"extracted in {time.perf_counter() - t0:.2f}s"
            say(f"{spec}: {m['n_items']} items, {m['n_tokens']} answer tokens, {m['dim']}-wide, {len(m['shards'])} shard(s); "
                f"{how} ({feature_home(args.cache_dir) / key})")
    say(f"wall {time.perf_counter() - start:.2f}s")
    return 0


def run_sequential(args) -> int:
    from t3unlearn.io import torch_threads

    with torch_threads(args.threads, log=None if args.quiet else print):
        return _sequential(args)


def _sequential(args) -> int:
    import shlex
    import sys

    from pathlib import Path

    from t3unlearn.errors import T3Error
    from t3unlearn.experiments.sequential import sequential, write_doc
    from t3unlearn.t3.options import check_writable

    check_writable(args.out)  # before any run: a directory (runs are cached there)
    if args.doc and Path(args.doc).is_dir():
        raise T3Error(f"{args.doc} is a directory; give a markdown file.", option="doc")
    reports = []
    for bench in [b.strip() for b in args.benchmark.split(",") if b.strip()]:
        rep = sequential(bench, n_requests=args.requests, methods=args.methods.split(","), seeds=args.seeds, baseline_seeds=args.baseline_seeds, out=args.out,
                         eval_batch_size=args.eval_batch_size, max_new_tokens=args.max_new_tokens, config=args.config,
                         progress=not args.quiet)
        print(rep["markdown"])
        print(f"{rep['benchmark']}: wrote {rep['plot']} and sequential.md/json beside it; wall {rep['wall_seconds']:.0f}s")
        reports.append(rep)
    if args.doc:
        argv = sys.argv[1:] if sys.argv and sys.argv[0].endswith("t3unlearn") else ["sequential", *_argv(args)]
        write_doc(args.doc, reports, "t3unlearn " + " ".join(shlex.quote(a) for a in argv))
        print(f"wrote {args.doc}")
    return 0


def _argv(args) -> list[str]:
    out = ["--benchmark", args.benchmark, "--requests", str(args.requests), "--methods", args.methods, "--seeds", str(args.seeds),
           "--out", args.out, "--doc", args.doc]
    if args.baseline_seeds is not None:
        out += ["--baseline-seeds", str(args.baseline_seeds)]
    if args.config:
        out += ["--config", args.config]
    if args.threads != "auto":
        out += ["--threads", str(args.threads)]
    return out
