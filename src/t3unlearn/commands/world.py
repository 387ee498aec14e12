"""``t3unlearn world build | train | check``: the offline benchmark and its tiny models."""

from __future__ import annotations

import argparse

from t3unlearn.t3.options import nonneg_int, positive_int

_EPILOG = """\
examples:
  t3unlearn world build --out world                 the default world (200 authors x 20 QA, as TOFU)
  t3unlearn world build --preset tiny --out w       a 20-author world for quick tests
  t3unlearn world build --out w2 --seed 1 --authors 100 --qa-per-author 20
  t3unlearn world train --world world               pretrained base + full + retain90 models
  t3unlearn world train --world world --models full,retain90,retain95,retain99 --out models
  t3unlearn world check --world world               evaluate the trained models (memorisation, utility)
  t3unlearn world check --world tiny --limit 20      a quick look at the tiny world's models

The files are TOFU's configs (full, retain90, forget10, forget10_perturbed, ...) as
DIR/CONFIG.jsonl, so any command takes them as DIR:CONFIG, e.g. --forget world:forget10.
Trained models are cached under $T3UNLEARN_HOME (default ~/.cache/t3unlearn)/models. The default world's
seed-0 pretrained, full, retain90, retain95 and retain99 models ship with the package; every command but 'train' copies them
into the cache instead of training them; 'train' always trains here.
"""


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--world", required=True, metavar="DIR",
                   help="a built world directory, or 'default' / 'tiny' for the cached preset world")
    add_model_options(p)


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default="full,retain90", metavar="LIST",
                   help="comma-separated models: pretrained, full, retain90, retain95, retain99 (default: full,retain90)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="fine-tuning epochs of full / retainXX [the preset's: 15 for the default world, 20 for tiny "
                        "and TOFU]")
    p.add_argument("--threads", type=nonneg_int, default=None,
                   help="torch threads while training (default: the preset's, 1; 0 = torch's default). "
                        "On a machine shared with other jobs, 1 can be many times faster than 2")
    p.add_argument("--jobs", default="auto",
                   help="fine-tunes trained side by side, each in its own process on the recipe's threads (the same "
                        "weights as one after the other): a number (1 = one after the other) or auto: one per core [auto]")


def add_check_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", default="forget10", choices=("forget01", "forget05", "forget10"),
                   help="forget split to evaluate on; its retain model is the forget-quality reference [forget10]")
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate at most N items per set (default: all)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the table as JSON")


def register(sub) -> None:
    p = sub.add_parser(
        "world",
        help="build the offline TOFU-shaped benchmark and train its tiny models",
        description="The offline world: a synthetic benchmark of fictitious authors in TOFU's exact "
        "configs and fields, and small Llama models pretrained on its 'real' authors and world facts "
        "then fine-tuned on full / retainXX, as TOFU's models are made.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    wsub = p.add_subparsers(dest="world_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda a: p.print_help() or 2)

    b = wsub.add_parser("build", help="write a world's configs as DIR/CONFIG.jsonl", epilog=_EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--preset", default="default", help="default (TOFU-sized: 200 authors x 20 QA) or tiny (20 x 10) (default: default)")
    b.add_argument("--out", required=True, metavar="DIR", help="output directory: new, empty, or a world built before "
                   "(replaced atomically); any other directory is refused")
    b.add_argument("--seed", type=int, default=None, help="generator seed (default 0)")
    b.add_argument("--authors", type=int, default=None, help="number of fictitious authors in 'full' (default: the preset's, 200 / 20)")
    b.add_argument("--qa-per-author", type=int, default=None, help="questions per author, at most 20 (default: the preset's, 20 / 10)")
    b.set_defaults(func=_build)

    t = wsub.add_parser("train", help="train the tokenizer, pretrained base, full and retain models",
                        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_train_options(t)
    t.add_argument("--out", default=None, metavar="DIR",
                   help="also copy the trained models to DIR/<name> (they are always cached; a DIR/<name> "
                        "that is not a model directory is refused)")
    t.set_defaults(func=_train)

    c = wsub.add_parser("check", help="evaluate the trained models: memorisation of the forget authors, utility",
                        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_train_options(c)
    add_check_options(c)
    c.set_defaults(func=_check)


def _build(args) -> int:
    import json
    import time

    from t3unlearn.world import build_world

    start = time.perf_counter()
    out = build_world(args.out, args.preset, seed=args.seed, n_authors=args.authors, qa_per_author=args.qa_per_author)
    meta = json.loads((out / "world.json").read_text())
    sizes = ", ".join(f"{k}={v}" for k, v in meta["sizes"].items())
    print(f"world {meta['preset']} (seed {meta['seed']}, fingerprint {meta['fingerprint']}) -> {out} "
          f"in {time.perf_counter() - start:.1f}s")
    print(f"  authors: {meta['authors']}")
    print(f"  items: {sizes}")
    return 0


def model_names(spec: str) -> list[str]:
    from t3unlearn.errors import T3Error
    from t3unlearn.world.train import MODEL_NAMES

    names = [n.strip() for n in spec.split(",") if n.strip()]
    bad = [n for n in names if n not in MODEL_NAMES]
    if bad or not names:
        raise T3Error(f"unknown model name(s) {', '.join(bad) or '(none)'}; choose from {', '.join(MODEL_NAMES)}.")
    return names


def train_models(bench, args) -> int:
    """``train`` for a benchmark: train what is missing, print where each model is (and copy to --out)."""
    import shutil
    import time
    from pathlib import Path

    from t3unlearn.io import atomic_dir, check_replaceable
    from t3unlearn.workers import choose_jobs

    for name in model_names(args.models) if args.out else ():  # DIR/<name> is replaced whole: never a user's own
        check_replaceable(Path(args.out) / name, "config.json", "a model directory", option="out")
    choose_jobs(args.jobs)  # before anything is built
    start = time.perf_counter()
    paths = bench.models(model_names(args.models), log=print, seed=args.seed, epochs=args.epochs, threads=args.threads,
                         jobs=args.jobs, shipped=False)  # trained here, never the copies shipped with the package
    print(f"done in {time.perf_counter() - start:.1f}s")
    for name, path in paths.items():
        print(f"  {name:<11} {path}")
        if args.out:
            with atomic_dir(Path(args.out) / name, marker="config.json", what="a model directory") as tmp:
                shutil.copytree(path, tmp, dirs_exist_ok=True)
    if args.out:
        print(f"copied to {args.out}/<name>")
    return 0


def check_models(bench, args) -> int:
    """``check`` for a benchmark: evaluate pretrained + the asked models (+ the split's retain model)."""
    from t3unlearn.benchmarks import check_models as check, format_check
    from t3unlearn.io import save_json

    from t3unlearn.workers import choose_jobs

    choose_jobs(args.jobs)  # before anything is built
    names = model_names(args.models)
    if "pretrained" not in names:
        names = ["pretrained"] + names
    result = check(bench, names, split=args.split, limit=args.limit, seed=args.seed, epochs=args.epochs,
                   threads=args.threads, jobs=args.jobs)
    if args.json:
        save_json(args.json, result)
    print(format_check(result))
    return 0


def _train(args) -> int:
    from t3unlearn.benchmarks import get_benchmark

    return train_models(get_benchmark(args.world), args)


def _check(args) -> int:
    from t3unlearn.benchmarks import get_benchmark

    return check_models(get_benchmark(args.world), args)
