"""``t3unlearn unlearn`` and ``t3unlearn generate``. torch is imported inside the handlers only."""

from __future__ import annotations

import argparse

_UNLEARN_EPILOG = """\
examples:
  # the embedded offline world: forget 10% of its authors, keep the rest
  t3unlearn unlearn --model world:full --forget world:forget10 --retain world:retain90 --out head

  # your own data (TOFU schema: one {"question": ..., "answer": ...} per line)
  t3unlearn unlearn --model path/to/model --forget forget.jsonl --retain retain.jsonl --out head \\
      --hidden-size 20 --epochs 50

  # TOFU from the hub (cached after the first download)
  t3unlearn unlearn --model my-tofu-llama --forget tofu:forget10 --retain tofu:retain90 --out head

  # TOFU offline: its own data (a local copy in $T3UNLEARN_TOFU_DIR) and the tiny model trained on it
  t3unlearn unlearn --model tofu:full --forget tofu:forget10 --retain tofu:retain90 --out head

world:NAME (full, retain90, ...) names a model of the embedded world, world-tiny:NAME of the tiny
one, tofu:NAME the tiny model trained on TOFU's text (each trained once and cached).

what happens: one forward pass of the frozen model over forget and retain answers extracts
pooled hidden states (cached under $T3UNLEARN_HOME/features, so a second run with other head
settings never touches the model); a small head learns P(retain | prefix, next token) on them.
Each epoch is one pass over the forget set, each forget item paired with a random retain item.
Only the head is written (head.safetensors + t3_config.json, a few hundred KB); the model is
referenced by path. T and s are read at load time and can be changed without retraining.
"""

_GENERATE_EPILOG = """\
examples:
  t3unlearn generate --model world:full --head head "Where was Ilse Varga born?"
  t3unlearn generate --model head "Where was Ilse Varga born?"            # a head dir finds its base
  t3unlearn generate --model world:full --head head --temperature 1 "..."  # T = 1: plain guidance
  t3unlearn generate --model world:full "..."                              # the base alone
  t3unlearn generate --model world:full --head head --do-sample --top-p 0.9 --seed 1 --stream "..."

world:NAME (full, retain90, ...) names a model of the embedded world (trained once and cached);
world-tiny:NAME one of the tiny world, tofu:NAME one trained on TOFU's text.

--temperature and --scale are T3's T and s (they override the saved ones); they need a head.
Greedy decoding unless --do-sample; --num-beams > 1 for beam search.
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def register(sub) -> None:
    p = sub.add_parser(
        "unlearn",
        help="train a T3 guidance head that makes a frozen model forget a data set",
        description="Temper-Then-Tilt unlearning: the model stays frozen; a small classifier head over its "
        "pooled hidden states learns which continuations come from the forget set, and the served model "
        "samples from p^(1/T) * P(retain)^s.",
        epilog=_UNLEARN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="base causal LM: local directory, hub id or world:NAME (kept frozen)")
    p.add_argument("--forget", required=True, help="forget set: world:forget10, DIR:CONFIG, FILE.jsonl, tofu:forget10, ...")
    p.add_argument("--retain", required=True, help="retain set, same sources as --forget (must not share questions)")
    p.add_argument("--out", required=True, help="directory to write the head to (head.safetensors + t3_config.json)")
    g = p.add_argument_group("guidance (can be changed later at load time)")
    g.add_argument("--temperature", type=float, default=2.5, help="T, tempering of the base (> 0; 1 = plain guidance) [2.5]")
    g.add_argument("--scale", type=float, default=1.0, help="s, guidance scale [1.0]")
    h = p.add_argument_group("head and training")
    h.add_argument("--hidden-size", type=_positive_int, default=50, help="head width h [50]")
    h.add_argument("--activation", choices=("identity", "relu", "gelu", "tanh"), default="identity", help="[identity]")
    h.add_argument("--layers", type=_positive_int, default=1, help="hidden layers (> 1 needs a non-identity activation) [1]")
    h.add_argument("--epochs", type=_positive_int, default=100, help="passes over the forget set [100]")
    h.add_argument("--warmup-epochs", type=_nonneg_int, default=None, help="linear learning-rate warm-up [epochs/4, i.e. 25 of 100]")
    h.add_argument("--lr", type=float, default=1e-2, help="AdamW learning rate [1e-2]")
    h.add_argument("--weight-decay", type=float, default=1e-2, help="AdamW weight decay [1e-2]")
    h.add_argument("--batch-size", type=_positive_int, default=32, help="forget items per step (plus as many retain) [32]")
    h.add_argument("--seed", type=int, default=0, help="[0]")
    o = p.add_argument_group("other")
    o.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    o.add_argument("--feature-batch-size", type=_positive_int, default=32, help="items per forward pass of the model [32]")
    o.add_argument("--max-length", type=_positive_int, default=512, help="token budget per item [512]")
    o.add_argument("--template", choices=("auto", "chat", "plain"), default="auto", help="prompt format [auto]")
    o.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... [cuda if available]")
    o.add_argument("--quiet", action="store_true", help="no progress bars")
    o.add_argument("--threads", default="auto", help="torch CPU threads: a number, 0 (torch's default) or auto [auto]")
    p.set_defaults(func=run_unlearn)

    p = sub.add_parser(
        "generate",
        help="answer questions with a model, optionally guided by a T3 head",
        description="Generate answers to questions (formatted as in training: chat template if the model has one).",
        epilog=_GENERATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("questions", nargs="+", metavar="QUESTION", help="one or more questions")
    p.add_argument("--model", required=True, help="base model (directory, hub id, world:NAME), or a saved head directory")
    p.add_argument("--head", default=None, help="T3 head directory to guide --model with")
    p.add_argument("--temperature", type=float, default=None, help="T3's T (overrides the saved one; needs a head)")
    p.add_argument("--scale", type=float, default=None, help="T3's s (overrides the saved one; needs a head)")
    p.add_argument("--max-new-tokens", type=_positive_int, default=64, help="[64]")
    p.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--top-k", type=_nonneg_int, default=None, help="sampling: keep the k most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="sampling: nucleus mass")
    p.add_argument("--num-beams", type=_positive_int, default=1, help="beam search width [1]")
    p.add_argument("--seed", type=int, default=0, help="[0]")
    p.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    p.add_argument("--device", default=None, help="cpu, cuda ... [cuda if available]")
    p.add_argument("--threads", default="auto", help="torch CPU threads: a number, 0 (torch's default) or auto [auto]")
    p.set_defaults(func=run_generate)


def _check_out(path) -> None:
    from pathlib import Path

    from t3unlearn.errors import T3Error

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise T3Error(f"--out {out} is a file; give a directory.")
    if out.is_dir() and any(out.iterdir()) and not (out / "t3_config.json").is_file():
        raise T3Error(f"--out {out} is a non-empty directory that is not a T3 head; choose a new or empty directory.")


def run_unlearn(args) -> int:
    from t3unlearn.io import torch_threads

    with torch_threads(args.threads, log=None if args.quiet else print):
        return _unlearn(args)


def _unlearn(args) -> int:
    import time

    from t3unlearn.benchmarks import resolve_data, resolve_model
    from t3unlearn.data import check_disjoint, load_qa
    from t3unlearn.lm import load_model, load_tokenizer
    from t3unlearn.t3.model import check_scale, check_temperature
    from t3unlearn.t3.train import format_report, unlearn

    start = time.perf_counter()
    check_temperature(args.temperature)
    check_scale(args.scale)
    _check_out(args.out)
    forget = load_qa(resolve_data(args.forget), what="forget set")
    retain = load_qa(resolve_data(args.retain), what="retain set")
    check_disjoint(forget, retain)
    model_path = resolve_model(args.model, log=print)
    tokenizer = load_tokenizer(model_path)
    model = load_model(model_path, device=args.device)
    t_load = time.perf_counter()
    print(f"model {args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters (frozen); "
          f"forget {len(forget)} items, retain {len(retain)} items", flush=True)
    t3, report = unlearn(
        model, tokenizer, forget, retain,
        temperature=args.temperature, scale=args.scale, hidden_size=args.hidden_size, activation=args.activation,
        layers=args.layers, epochs=args.epochs, warmup_epochs=args.warmup_epochs, lr=args.lr,
        weight_decay=args.weight_decay, batch_size=args.batch_size, seed=args.seed, cache=not args.no_cache,
        feature_batch_size=args.feature_batch_size, max_length=args.max_length, template=args.template,
        progress=not args.quiet,
    )
    t3.save_pretrained(args.out)
    end = time.perf_counter()
    src = "cache" if report["features_cached"] else "one forward pass"
    print(format_report(report))
    print(
        f"features: {report['feature_tokens']} answer tokens from {src} in {report['features_s']:.2f}s; "
        f"head training: {args.epochs} epochs in {report['train_s']:.2f}s; "
        f"unlearning {report['features_s'] + report['train_s']:.2f}s; wall {end - start:.2f}s (loading {t_load - start:.2f}s)"
    )
    print(f"wrote {args.out} (T={args.temperature}, s={args.scale}; head {t3.head.hidden}x{t3.head.vocab_size}, "
          f"{sum(p.numel() for p in t3.head.parameters()) / 1e3:.1f}K parameters)")
    return 0


def run_generate(args) -> int:
    from t3unlearn.io import torch_threads

    with torch_threads(args.threads):
        return _generate(args)


def _generate(args) -> int:
    from pathlib import Path

    from t3unlearn.benchmarks import resolve_model
    from t3unlearn.errors import T3Error
    from t3unlearn.io import set_seed
    from t3unlearn.lm import load_lm

    args.model = resolve_model(args.model, log=print)
    is_head_dir = Path(args.model).is_dir() and (Path(args.model) / "t3_config.json").is_file()
    if args.head is None and not is_head_dir and (args.temperature is not None or args.scale is not None):
        raise T3Error("--temperature/--scale are T3's T and s; they need a head (--head DIR or --model HEAD_DIR).")
    if args.head is not None and is_head_dir:
        raise T3Error(f"--model {args.model} is already a T3 head; give the base model as --model, or drop --head.")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise T3Error(f"--top-p must be in (0, 1], not {args.top_p}.")
    if (args.top_k is not None or args.top_p is not None) and not args.do_sample:
        raise T3Error("--top-k/--top-p apply to sampling; add --do-sample.")
    kw = {}
    if args.temperature is not None:
        kw["temperature"] = args.temperature
    if args.scale is not None:
        kw["scale"] = args.scale
    lm = load_lm(args.model, head=args.head, device=args.device, **kw)
    if hasattr(lm.model, "check_tokenizer"):
        lm.model.check_tokenizer(lm.tokenizer)
    gen_kw = {"do_sample": args.do_sample, "num_beams": args.num_beams}
    if args.top_k is not None:
        gen_kw["top_k"] = args.top_k
    if args.top_p is not None:
        gen_kw["top_p"] = args.top_p
    label = lm.name
    if hasattr(lm.model, "temperature"):
        label += f" (T={lm.model.temperature:g}, s={lm.model.scale:g})"
    print(f"# {label}", flush=True)
    set_seed(args.seed)
    if args.stream:
        from transformers import TextStreamer

        streamer = TextStreamer(lm.tokenizer, skip_prompt=True, skip_special_tokens=True)
        if args.num_beams > 1:
            raise T3Error("--stream works with greedy or sampled decoding, not beam search.")
        for q in args.questions:
            print(f"Q: {q}\nA: ", end="", flush=True)
            lm.generate([q], max_new_tokens=args.max_new_tokens, streamer=streamer, **gen_kw)
        return 0
    answers = lm.generate(args.questions, max_new_tokens=args.max_new_tokens, **gen_kw)
    for q, a in zip(args.questions, answers):
        print(f"Q: {q}\nA: {a}")
    return 0
