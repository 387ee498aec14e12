"""``t3unlearn tofu train | check``: tiny models on TOFU's own text, offline with a local copy."""

from __future__ import annotations

import argparse

_EPILOG = """\
examples:
  export T3UNLEARN_TOFU_DIR=/path/to/tofu          a local copy of TOFU's configs (else: the hub)
  t3unlearn tofu train                              tokenizer, pretrained base, full, retain90
  t3unlearn tofu train --models full,retain90,retain95,retain99
  t3unlearn tofu check                              evaluate them on forget10 (memorisation, utility)

What the models are: a byte-level BPE tokenizer trained on the training text; a small Llama
pretrained on TOFU's real_authors and world_facts answers (what a base model knows before
TOFU), then fine-tuned on full and, from the same base, on retain90/95/99, as TOFU's models are.
On a CPU they train on the authors every evaluation reads (--subset eval-authors, the default:
the 20 forget10 authors and the 20 retain_perturbed authors, 800 of the 4000 items); --subset
all trains on every author (about 5x longer). They are cached under $T3UNLEARN_HOME/models and
named tofu:full, tofu:retain90, ... wherever a model is asked for, e.g.
  t3unlearn unlearn --model tofu:full --forget tofu:forget10 --retain tofu:retain90 --out head
"""


def register(sub) -> None:
    from t3unlearn.commands.world import add_check_options, add_model_options

    p = sub.add_parser(
        "tofu",
        help="train and check tiny models on TOFU's own data (offline with a local copy)",
        description="Tiny models trained on TOFU's text the way TOFU's models are made: a base pretrained on "
        "the real authors and world facts, fine-tuned on full and on retain90/95/99.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tsub = p.add_subparsers(dest="tofu_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda a: p.print_help() or 2)
    for name, helptext, func in (("train", "train the tokenizer, pretrained base, full and retain models", _train),
                                 ("check", "evaluate the trained models: memorisation of the forget authors, utility", _check)):
        c = tsub.add_parser(name, help=helptext, epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
        c.add_argument("--subset", default="eval-authors", choices=("eval-authors", "all"),
                       help="which authors the models train on (see below) [eval-authors]")
        add_model_options(c)
        if name == "train":
            c.add_argument("--out", default=None, metavar="DIR", help="also copy the trained models to DIR/<name>")
        else:
            add_check_options(c)
        c.set_defaults(func=func)


def _train(args) -> int:
    from t3unlearn.benchmarks import get_benchmark
    from t3unlearn.commands.world import train_models

    return train_models(get_benchmark("tofu", subset=args.subset), args)


def _check(args) -> int:
    from t3unlearn.benchmarks import get_benchmark
    from t3unlearn.commands.world import check_models

    return check_models(get_benchmark("tofu", subset=args.subset), args)
