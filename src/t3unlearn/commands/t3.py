"""``t3unlearn unlearn`` and ``t3unlearn generate``. torch is imported inside the handlers only."""

from __future__ import annotations

import argparse

from t3unlearn.commands.calibration import (_calibrate_and_report, _check_calibration_args, _check_holdout,
                                            _check_not_the_base, _check_perturbed_use, _check_truth_items, _common_source,
                                            _head_sets, _holdout)
from t3unlearn.loading import add_loading_options, loading_kwargs
from t3unlearn.t3.config import ACTIVATIONS, Guidance, TrainConfig
from t3unlearn.t3.options import (  # noqa: F401 - re-exported: other commands import them from here
    _check_long_items, _check_out, _is_head_dir, add_calibration_options, add_force_option,
    add_guidance_options, guidance_overrides, nonneg_int, positive_float, positive_int,
)

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

  # deletion requests over time: a head records the requests it covers (ids, sizes, dates,
  # fingerprints); a new one costs one forward pass over its own items, the rest is cached
  t3unlearn unlearn --model world:full --forget req1.jsonl --retain world:retain90 --request-id req-1 --out head
  t3unlearn unlearn --head head --add-forget req-2=req2.jsonl                 # retrain on both, seconds
  t3unlearn unlearn --head head --add-forget req3.jsonl --update finetune     # no ID=: id r1 (first free rN)
  t3unlearn unlearn --head head --remove-forget req-2       # exactly the head trained without req-2
  t3unlearn unlearn --head head --list-requests
  t3unlearn unlearn --head head --add-forget req4.jsonl --calibrate --holdout unseen.jsonl   # T, s chosen again

world:NAME (full, retain90, ...) names a model of the embedded world, world-tiny:NAME of the tiny
one, tofu:NAME the tiny model trained on TOFU's text (each trained once and cached).

what happens: one forward pass of the frozen model over forget and retain answers extracts
pooled hidden states, cached per data set under $T3UNLEARN_HOME/features (streamed to disk in
shards; an interrupted extraction resumes), so a second run with other head settings, or an
update with one more request, never runs the model over what it has seen; a small head learns P(retain | prefix, next token) on them.
Each epoch is one pass over the forget set, each forget item paired with a random retain item.
Only the head is written (head.safetensors + t3_config.json, a few hundred KB); the model is
referenced by path. T and s are read at load time and can be changed without retraining.
"""

_CALIBRATE_EPILOG = """\
examples:
  t3unlearn calibrate --head head --forget world:forget10 --retain world:retain90
  t3unlearn calibrate --head head --forget forget.jsonl --retain retain.jsonl --holdout unseen.jsonl --out head-cal
  t3unlearn unlearn --model world:full --forget world:forget10 --retain world:retain90 --calibrate --out head
  t3unlearn calibrate --head head --forget tofu:forget10 --retain tofu:retain90 --pretrained tofu:pretrained
  t3unlearn calibrate --head head --forget world:forget10 --retain world:retain90 --oracle world:retain90
  t3unlearn calibrate --head head      # after an update: every request the head covers, its retain set

what it prints: for the best settings, the KS distance the rule minimises (truth ratios or losses, see
below), the min-k membership AUC of forget vs holdout (0.5: indistinguishable), mean answer
probabilities, and the retain probability relative to the base's (must stay >= 1 - tolerance).
When the holdout items carry paraphrased and perturbed answers (the world's calibration set does;
TOFU's does not), the objective is the KS distance between the forget truth ratios under guidance and
the base's own truth ratios on those never-seen items; otherwise, with --pretrained, the pretrained
model's truth ratios on the forget items stand in. With --oracle (a benchmark's retain model) two more columns: forget quality and privleak
against it, as the evaluation computes them, and a last line comparing the chosen setting with the one
an oracle would pick -- a research check; the oracle never takes part in the choice.
The chosen setting and the table are saved in the head (t3_config.json, 'calibration'), with the
requests it was chosen for: after 'unlearn --head DIR --add-forget/--remove-forget' the head keeps
its guidance and says it was calibrated for other requests ('--list-requests' too) until it is
calibrated again. Without --forget/--retain the head's requests are read again from their recorded
sources (checked against their fingerprints) and its retain set is the recorded one; the holdout
and perturbed sets default as for the benchmark the requests came from (else give --holdout).
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


def register(sub) -> None:
    _register_unlearn(sub)
    _register_generate(sub)
    _register_calibrate(sub)
    from t3unlearn.commands import requests as requests_cli

    requests_cli.register(sub)  # features, sequential


def _register_unlearn(sub) -> None:
    p = sub.add_parser(
        "unlearn",
        help="train a T3 guidance head that makes a frozen model forget a data set",
        description="Temper-Then-Tilt unlearning: the model stays frozen; a small classifier head over its "
        "pooled hidden states learns which continuations come from the forget set, and the served model "
        "samples from p^(1/T) * P(retain)^s.",
        epilog=_UNLEARN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", help="base causal LM: local directory, hub id or world:NAME (kept frozen) [with --head: the recorded base]")
    p.add_argument("--forget", help="forget set: world:forget10, DIR:CONFIG, FILE.jsonl, tofu:forget10, ...")
    p.add_argument("--retain", help="retain set, same sources as --forget (must not share questions) [with --head: the recorded one]")
    p.add_argument("--out", help="directory to write the head to (head.safetensors + t3_config.json) [with --head: --head itself]")
    r = p.add_argument_group("deletion requests over time (update a head instead of making one; see the examples)")
    r.add_argument("--head", metavar="DIR", default=None, help="an existing head to update (written back in place unless --out)")
    r.add_argument("--add-forget", metavar="[ID=]SOURCE", action="append", default=[],
                   help="a new deletion request: a data source as for --forget, optionally named ID= (default r1, r2, ...); "
                        "repeatable")
    r.add_argument("--remove-forget", metavar="ID", action="append", default=[],
                   help="withdraw a recorded request: the head becomes the one trained without it; repeatable")
    r.add_argument("--update", choices=("retrain", "finetune"), default="retrain",
                   help="retrain: train the head from scratch on all requests from cached features (exact: the same "
                        "head however the requests arrived); finetune: train the current head further on the new "
                        "requests only (time grows with the new items, not with all of them) [retrain]")
    r.add_argument("--request-id", metavar="ID", default="r1", help="the id of --forget as the new head's first request [r1]")
    r.add_argument("--list-requests", action="store_true", help="print the requests --head covers and exit")
    add_guidance_options(p.add_argument_group("guidance (saved in the head; can be changed at load time)"))
    t = TrainConfig()
    h = p.add_argument_group("head and training")
    h.add_argument("--hidden-size", type=positive_int, default=t.hidden_size, help=f"head width h [{t.hidden_size}]")
    h.add_argument("--activation", choices=ACTIVATIONS, default=t.activation,
                   help=f"activation of the head's hidden layer(s) [{t.activation}]")
    h.add_argument("--layers", type=positive_int, default=t.layers, help=f"hidden layers (> 1 needs a non-identity activation) [{t.layers}]")
    h.add_argument("--epochs", type=positive_int, default=t.epochs, help=f"passes over the forget set [{t.epochs}]")
    h.add_argument("--warmup-epochs", type=nonneg_int, default=t.warmup_epochs, help="linear learning-rate warm-up [a quarter of the epochs]")
    h.add_argument("--lr", type=float, default=t.lr, help=f"AdamW learning rate [{t.lr:g}]")
    h.add_argument("--weight-decay", type=float, default=t.weight_decay, help=f"AdamW weight decay [{t.weight_decay:g}]")
    h.add_argument("--batch-size", type=positive_int, default=t.batch_size, help=f"forget items per step (plus as many retain) [{t.batch_size}]")
    h.add_argument("--seed", type=int, default=t.seed, help=f"seed of the head's initialization and the retain pairing [{t.seed}]")
    h.add_argument("--ensemble", type=positive_int, default=t.ensemble, metavar="K",
                   help="train K heads (seeds seed*K .. seed*K+K-1) and guide with the mean of their logits: one head of "
                        "width K*h, less dependent on the seed; K times the training time [1]")
    c = p.add_argument_group("oracle-free calibration (see 't3unlearn calibrate --help')")
    c.add_argument("--calibrate", action="store_true", help="after training, choose T, s and tempering from forget vs holdout answers")
    add_calibration_options(c)
    o = p.add_argument_group("other")
    o.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache (nor, with --calibrate, "
                   "the calibration's cache of answer states)")
    o.add_argument("--feature-batch-size", type=positive_int, default=32, help="items per forward pass of the model [32]")
    o.add_argument("--shard-mb", type=positive_float, default=None,
                   help="features are streamed to the cache in shards of this many MB (extraction memory) [256]")
    o.add_argument("--max-length", type=positive_int, default=512, help="token budget per item [512]")
    o.add_argument("--template", choices=("auto", "chat", "plain"), default="auto",
                   help="prompt format: chat (the tokenizer's chat template), plain ('Question: Q\\nAnswer: A'), "
                        "auto (chat when the tokenizer has a template) [auto]")
    o.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... [cuda if available]")
    o.add_argument("--overwrite", action="store_true", help="replace a head already at --out (and its request history) [refuse]")
    o.add_argument("--quiet", action="store_true", help="no progress bars")
    o.add_argument("--threads", default="auto", help="torch CPU threads: a number, 0 (torch's default) or auto [auto]")
    add_loading_options(p)
    p.set_defaults(func=run_unlearn)


def _register_generate(sub) -> None:
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
    add_guidance_options(p.add_argument_group("guidance (override the head's saved settings; need a head)"), saved=True)
    p.add_argument("--max-new-tokens", type=positive_int, default=64, help="longest answer, in tokens [64]")
    p.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--top-k", type=nonneg_int, default=None,
                   help="sampling: keep the k most likely tokens, 0 for all [the model's generation config; "
                        "transformers': 50]")
    p.add_argument("--top-p", type=float, default=None,
                   help="sampling: keep the most likely tokens up to this probability mass, in (0, 1] [the model's "
                        "generation config; transformers': 1, off]")
    p.add_argument("--num-beams", type=positive_int, default=1, help="beam search width [1]")
    p.add_argument("--seed", type=int, default=0, help="random seed of sampling [0]")
    p.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    p.add_argument("--device", default=None, help="cpu, cuda ... [cuda if available]")
    p.add_argument("--threads", default="auto", help="torch CPU threads: a number, 0 (torch's default) or auto [auto]")
    add_force_option(p)
    add_loading_options(p)
    p.set_defaults(func=run_generate)


def _register_calibrate(sub) -> None:
    c = sub.add_parser(
        "calibrate",
        help="choose a head's T, s and tempering without the oracle, from forget vs holdout answers",
        description="Oracle-free calibration: an unlearned model should treat the forget items as it treats items "
        "it never saw. Scores a grid of guidance settings (the head is not retrained; one forward pass of the "
        "base per set) and keeps the one whose forget answers look most like never-seen ones (Kolmogorov-Smirnov "
        "distance): their truth ratios like the base's own on holdout items that carry perturbed answers, else "
        "like a --pretrained checkpoint's on the forget items, else their losses like the holdout's -- while the "
        "retain answers keep their probability and a membership attack cannot tell forget from holdout answers; "
        "saves it in the head.",
        epilog=_CALIBRATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("--head", required=True, help="a T3 head directory (t3unlearn unlearn --out)")
    c.add_argument("--forget", default=None, help="the forget set the head was trained on [the requests the head records, "
                   "read again from their sources]")
    c.add_argument("--retain", default=None, help="the retain set (a seeded sample of 400 items is scored) [the one the head records]")
    c.add_argument("--model", default=None, help="the base model [the one recorded in the head]")
    c.add_argument("--out", default=None, help="write the calibrated head here [update --head in place]")
    add_calibration_options(c)
    c.add_argument("--seed", type=int, default=0, help="retain sample seed [0]")
    c.add_argument("--device", default=None, help="cpu, cuda ... [cuda if available]")
    c.add_argument("--threads", default="auto", help="torch CPU threads: a number, 0 (torch's default) or auto [auto]")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.add_argument("--no-cache", action="store_true", help="run every forward pass: do not read or write the answer "
                   "states kept (under T3UNLEARN_HOME/answer-states) for the next calibration of this base on these sets")
    add_force_option(c)
    add_loading_options(c)
    c.set_defaults(func=run_calibrate)


def _without_never_seen(args, retain):
    """The retain set less the benchmark's never-seen calibration items for this forget split (offline TOFU's
    ``retain90`` holds ``tofu:calibration``'s 20 authors, which no tiny TOFU model trained on): a head taught that
    they are retain content would then be calibrated on its own training items. ``compare`` leaves them out the
    same way. Unchanged when there are none."""
    import sys

    from t3unlearn.benchmarks import calibration_set

    found = calibration_set(args.forget, args.model)
    held = set() if found is None else {q.strip() for q in found[0]["question"]}
    keep = [i for i, q in enumerate(retain["question"]) if q.strip() not in held]
    if len(keep) == len(retain):
        return retain
    print(f"note: --retain {args.retain} holds {len(retain) - len(keep)} items of {found[1]}, the never-seen items "
          f"calibration compares the forget set with; the head trains without them ({len(keep)} retain items, "
          "recorded as given in memory: give --retain again to calibrate it later).", file=sys.stderr)
    return retain.select(keep)


def run_unlearn(args) -> int:
    from t3unlearn.io import torch_threads

    with torch_threads(args.threads, log=None if args.quiet else print):
        return _unlearn(args)


def _unlearn(args) -> int:
    import time
    from pathlib import Path

    from t3unlearn.errors import T3Error

    if args.head is not None:
        return _update(args)
    if args.add_forget or args.remove_forget or args.list_requests:
        raise T3Error("--add-forget, --remove-forget and --list-requests update a head: give it with --head DIR.")
    if args.update != "retrain":
        raise T3Error(f"--update {args.update} applies to updating a head (--head DIR --add-forget SOURCE); a new head is "
                      "trained from scratch: drop --update.")
    missing = [f"--{n}" for n in ("model", "forget", "retain", "out") if getattr(args, n) is None]
    if missing:
        raise T3Error(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required to make a head "
                      "(or give --head DIR --add-forget SOURCE to update one).")
    rid, named, src = args.forget.partition("=")
    if named and not Path(args.forget).expanduser().exists():
        raise T3Error(f"--forget {args.forget} is not a data source: request ids go with --request-id ID for a new head "
                      f"(--forget {src} --request-id {rid}), or with --add-forget ID=SOURCE on an existing head (--head DIR).")

    from t3unlearn.benchmarks import resolve_data, resolve_model
    from t3unlearn.data import check_disjoint, load_qa
    from t3unlearn.lm import load_model, load_tokenizer
    from t3unlearn.loading import tokenizer_kwargs
    from t3unlearn.t3.train import format_report, unlearn

    start = time.perf_counter()
    guidance = Guidance().replace(**guidance_overrides(args))  # a bad T or s fails before any loading
    TrainConfig(**{k: getattr(args, k) for k in ("hidden_size", "activation", "layers", "epochs", "warmup_epochs", "lr",
                                                  "weight_decay", "batch_size", "seed", "ensemble")}).validate()  # so do these
    _check_out(args.out, overwrite=args.overwrite)
    forget_src, retain_src = resolve_data(args.forget), resolve_data(args.retain)
    forget = load_qa(forget_src, what="forget set")
    retain = load_qa(retain_src, what="retain set")
    check_disjoint(forget, retain)
    if not args.holdout and (kept := _without_never_seen(args, retain)) is not retain:  # a given --holdout: refused below
        retain_src = retain = kept
    if not args.calibrate and (args.pretrained or args.perturbed or args.oracle):
        raise T3Error("--pretrained, --oracle and --perturbed belong to calibration: add --calibrate.")
    _check_calibration_args(args)  # before the head is trained, not after
    holdout = _holdout(args, args.forget) if args.calibrate else None
    if holdout is not None:
        from t3unlearn.t3.calibrate import has_perturbed

        never_seen = has_perturbed(holdout[0])
        _check_perturbed_use(args, never_seen)
        _check_truth_items(args, forget, args.forget, never_seen)  # before the head is trained, not after
        _check_holdout(args, holdout, forget, retain)
    _check_not_the_base(args, args.model)
    model_path = resolve_model(args.model, log=print)
    _check_not_a_head(args.model, model_path)
    loading = loading_kwargs(args)
    tokenizer = load_tokenizer(model_path, **tokenizer_kwargs(loading))
    _check_long_items(tokenizer, forget, retain, args.max_length)
    model = load_model(model_path, device=args.device, **loading)
    t_load = time.perf_counter()
    print(f"model {args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters (frozen); "
          f"forget {len(forget)} items, retain {len(retain)} items", flush=True)
    t3, report = unlearn(
        model, tokenizer, forget_src, retain_src, guidance=guidance, request_id=args.request_id, shard_mb=args.shard_mb,
        hidden_size=args.hidden_size, activation=args.activation,
        layers=args.layers, epochs=args.epochs, warmup_epochs=args.warmup_epochs, lr=args.lr,
        weight_decay=args.weight_decay, batch_size=args.batch_size, seed=args.seed, ensemble=args.ensemble,
        cache=not args.no_cache,
        feature_batch_size=args.feature_batch_size, max_length=args.max_length, template=args.template,
        progress=not args.quiet,
    )
    print(format_report(report))
    src = "cache" if report["features_cached"] else "one forward pass"
    print(
        f"features: {report['feature_tokens']} answer tokens from {src} in {report['features_s']:.2f}s; "
        f"head training: {args.epochs} epochs{f' x {args.ensemble} heads' if args.ensemble > 1 else ''} in {report['train_s']:.2f}s; "
        f"unlearning {report['features_s'] + report['train_s']:.2f}s (loading {t_load - start:.2f}s)"
    )
    if holdout is not None:
        t0 = time.perf_counter()
        _calibrate_and_report(t3, tokenizer, forget, holdout[0], holdout[1], retain, args, args.forget)
        print(f"calibration: {time.perf_counter() - t0:.2f}s")
    t3.save_pretrained(args.out)
    print(f"wrote {args.out} ({t3.guidance.label()}; head {t3.head.hidden}x{t3.head.vocab_size}, "
          f"{sum(p.numel() for p in t3.head.parameters()) / 1e3:.1f}K parameters); wall {time.perf_counter() - start:.2f}s")
    return 0


def _check_not_a_head(spec: str, path: str) -> None:
    """A new head is trained over a base model, not over another head (whose features are not the base's)."""
    from pathlib import Path

    from t3unlearn.errors import T3Error
    from t3unlearn.t3.model import CONFIG_NAME, T3ForCausalLM

    if (Path(path).expanduser() / CONFIG_NAME).is_file():
        raise T3Error(f"--model {spec} is a T3 head, not a base model: train a new head over its base "
                      f"(--model {T3ForCausalLM.base_model_path(path)}), or update this one with --head {spec} "
                      "--add-forget SOURCE.")


def _update(args) -> int:
    """``unlearn --head DIR``: list, add or withdraw deletion requests of a saved head (and calibrate it again)."""
    import time
    from pathlib import Path

    from t3unlearn.benchmarks import resolve_data, resolve_model
    from t3unlearn.errors import T3Error
    from t3unlearn.t3.model import T3Config, T3ForCausalLM
    from t3unlearn.t3.requests import calibration_outdated, format_requests, update
    from t3unlearn.t3.train import format_report

    start = time.perf_counter()
    cfg = T3Config.load(args.head)
    if args.list_requests:
        if args.add_forget or args.remove_forget:
            raise T3Error("--list-requests only prints; drop --add-forget/--remove-forget, or drop --list-requests.")
        print(f"{args.head}: {len(cfg.requests or [])} request(s) over {cfg.base_model_name_or_path}")
        print(format_requests(cfg.requests or [], cfg.retain_set))
        stale = calibration_outdated(cfg)
        if cfg.calibration:
            print(f"guidance: {cfg.guidance.label()}, calibrated" + (f" -- outdated: {stale}" if stale else ""))
        return 0
    if args.forget is not None:
        raise T3Error("--forget makes a new head; to add a request to --head give it as --add-forget SOURCE.")
    if not args.calibrate and (args.pretrained or args.perturbed or args.oracle):
        raise T3Error("--pretrained, --oracle and --perturbed belong to calibration: add --calibrate.")
    t = TrainConfig()
    changed = [f"--{name.replace('_', '-')}" for name in ("hidden_size", "activation", "layers", "epochs", "warmup_epochs", "lr",
                                                         "weight_decay", "batch_size", "seed", "ensemble")
               if getattr(args, name) != getattr(t, name)]
    if args.max_length != 512 or args.template != "auto":
        changed += ["--max-length/--template"]
    if args.request_id != "r1":
        changed += ["--request-id (name an added request as --add-forget ID=SOURCE)"]
    if changed:
        raise T3Error(f"{', '.join(changed)} apply to a new head; an update trains with the settings recorded in {args.head}.")
    out = args.out or args.head
    _check_out(out)
    adds, sources = [], [r.get("source") for r in cfg.requests or [] if r.get("id") not in args.remove_forget]
    for spec in args.add_forget:
        rid, sep, src = spec.partition("=")
        named = sep and not Path(spec).exists()
        sources.append(resolve_data(src if named else spec))
        adds.append(f"{rid}={sources[-1]}" if named else sources[-1])
    forget_spec = None
    if args.calibrate:  # what calibration needs is checked before the update runs, not after
        _check_calibration_args(args)
        _check_not_the_base(args, args.model or T3ForCausalLM.base_model_path(args.head))
        forget_spec = _common_source(sources)
        holdout = _holdout(args, forget_spec or "")
        from t3unlearn.data import load_qa

        for src in filter(None, sources):  # the requests' items against the holdout, before the update trains
            _check_holdout(args, holdout, load_qa(src, what="forget set"))
    model, tokenizer = resolve_model(args.model, log=print) if args.model else None, None
    if loading_kwargs(args):  # the base loaded here, as the options say (else update loads the recorded one)
        model, tokenizer = _load_base_and_tokenizer(model or T3ForCausalLM.base_model_path(args.head, must_exist=True), args)
    result = update(args.head, adds, args.remove_forget, model=model, tokenizer=tokenizer, retain=resolve_data(args.retain) if args.retain else None,
                    mode=args.update, cache=not args.no_cache, feature_batch_size=args.feature_batch_size, shard_mb=args.shard_mb,
                    device=args.device, progress=not args.quiet, **guidance_overrides(args))
    t3, report = result
    print(format_report(report))
    what = ", ".join([f"added {', '.join(report['added'])}" if report["added"] else "",
                      f"withdrew {', '.join(report['removed'])}" if report["removed"] else ""]).strip(", ")
    print(f"{what}: features of {report['new_items']} new item(s) in {report['new_features_s']:.2f}s "
          f"(all {len(report['requests'])} request(s) + retain assembled in {report['features_s']:.2f}s; extracted: "
          f"{', '.join(report['extracted']) or 'none, all cached'}); head {report['mode']} in {report['train_s']:.2f}s")
    if args.calibrate:
        t0 = time.perf_counter()
        forget, _, retain = _head_sets(args, t3.config)
        args.max_length = (t3.config.training or {}).get("max_length", 512)
        args.template = (t3.config.training or {}).get("template", "auto")
        _check_holdout(args, holdout, forget, retain)
        print(f"calibrating on the head's {len(t3.config.requests)} request(s), {len(forget)} forget items:")
        _calibrate_and_report(t3, result.tokenizer, forget, holdout[0], holdout[1], retain, args, forget_spec or "")
        print(f"calibration: {time.perf_counter() - t0:.2f}s")
    t3.save_pretrained(out)
    print(format_requests(t3.config.requests, t3.config.retain_set))
    stale = calibration_outdated(t3.config)
    if stale:
        print(f"note: {stale}. Choose T and s again for what it covers now: 't3unlearn calibrate --head {out}' "
              "(or add --calibrate to the update).")
    print(f"wrote {out} ({t3.guidance.label()}); wall {time.perf_counter() - start:.2f}s")
    return 0


def _load_base_and_tokenizer(path: str, args):
    from t3unlearn.lm import load_base, load_tokenizer
    from t3unlearn.loading import tokenizer_kwargs

    loading = loading_kwargs(args)
    return load_base(path, device=args.device, **loading), load_tokenizer(path, **tokenizer_kwargs(loading))


def run_calibrate(args) -> int:
    from t3unlearn.io import torch_threads

    with torch_threads(args.threads, log=None if args.quiet else print):
        return _calibrate(args)


def _calibrate(args) -> int:
    import time

    from t3unlearn.benchmarks import resolve_model
    from t3unlearn.lm import load_tokenizer
    from t3unlearn.loading import tokenizer_kwargs
    from t3unlearn.t3.model import T3Config, T3ForCausalLM
    from t3unlearn.t3.requests import request_ids

    start = time.perf_counter()
    out = args.out or args.head
    _check_out(out)
    _check_calibration_args(args)
    cfg = T3Config.load(args.head)
    forget, forget_spec, retain = _head_sets(args, cfg)
    if not args.forget:
        print(f"forget set: the head's {len(cfg.requests)} request(s) ({', '.join(request_ids(cfg))}), {len(forget)} items")
    holdout, holdout_name = _holdout(args, forget_spec)
    _check_holdout(args, (holdout, holdout_name), forget, retain)
    base = resolve_model(args.model, log=print) if args.model else T3ForCausalLM.base_model_path(args.head, must_exist=True)
    _check_not_the_base(args, base)
    loading = loading_kwargs(args)
    tokenizer = load_tokenizer(base, **tokenizer_kwargs(loading))
    t3 = T3ForCausalLM.from_pretrained(args.head, base_model=base, device=args.device, force=args.force, **loading)
    t3.check_tokenizer(tokenizer)
    training = t3.config.training or {}
    args.max_length = training.get("max_length", 512)
    args.template = training.get("template", "auto")
    _calibrate_and_report(t3, tokenizer, forget, holdout, holdout_name, retain, args, forget_spec)
    t3.save_pretrained(out)
    print(f"wrote {out} ({t3.guidance.label()}) in {time.perf_counter() - start:.2f}s")
    return 0


def run_generate(args) -> int:
    from t3unlearn.io import torch_threads

    with torch_threads(args.threads):
        return _generate(args)


def _generate(args) -> int:
    from t3unlearn.benchmarks import resolve_model
    from t3unlearn.errors import T3Error
    from t3unlearn.io import set_seed
    from t3unlearn.lm import load_lm

    if empty := [i + 1 for i, q in enumerate(args.questions) if not q.strip()]:
        raise T3Error(f"question {empty[0]} is empty; give each question as text (quoted if it has spaces).")
    args.model = resolve_model(args.model, log=print)
    kw = guidance_overrides(args, args.model)
    if args.head is not None and _is_head_dir(args.model):
        raise T3Error(f"--model {args.model} is already a T3 head; give the base model as --model, or drop --head.")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise T3Error(f"--top-p must be in (0, 1], not {args.top_p}.")
    if (args.top_k is not None or args.top_p is not None) and not args.do_sample:
        raise T3Error("--top-k/--top-p apply to sampling; add --do-sample.")
    lm = load_lm(args.model, head=args.head, device=args.device, force=args.force, **kw, **loading_kwargs(args))
    if hasattr(lm.model, "check_tokenizer"):
        lm.model.check_tokenizer(lm.tokenizer)
    gen_kw = {"do_sample": args.do_sample, "num_beams": args.num_beams}
    if args.top_k is not None:
        gen_kw["top_k"] = args.top_k
    if args.top_p is not None:
        gen_kw["top_p"] = args.top_p
    label = lm.name
    if hasattr(lm.model, "guidance"):
        label += f" ({lm.model.guidance.label()})"
    print(f"# {label}", flush=True)
    set_seed(args.seed)
    if args.stream:
        from transformers import TextStreamer

        class AnswerStreamer(TextStreamer):
            """Prints the answer as it comes, without the space the model starts it with (as the plain output)."""

            started = False

            def on_finalized_text(self, text: str, stream_end: bool = False):
                if not self.started:
                    text = text.lstrip()
                    self.started = bool(text)
                super().on_finalized_text(text, stream_end=stream_end)

        if args.num_beams > 1:
            raise T3Error("--stream works with greedy or sampled decoding, not beam search.")
        for q in args.questions:
            print(f"Q: {q}\nA: ", end="", flush=True)
            streamer = AnswerStreamer(lm.tokenizer, skip_prompt=True, skip_special_tokens=True)
            lm.generate([q], max_new_tokens=args.max_new_tokens, streamer=streamer, **gen_kw)
        return 0
    answers = lm.generate(args.questions, max_new_tokens=args.max_new_tokens, **gen_kw)
    for q, a in zip(args.questions, answers):
        print(f"Q: {q}\nA: {a}")
    return 0
