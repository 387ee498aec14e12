"""The ``t3unlearn`` command. Thin: each area registers its own subcommands.

Every area module listed in ``_AREAS`` exposes ``register(subparsers)``, which adds one or
more subcommands and sets ``func`` (called with the parsed args, returns an exit code).
Area CLI modules import torch/transformers only inside their ``func`` so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from t3unlearn import __version__
from t3unlearn.errors import user_error_message

_AREAS = [
    "t3unlearn.commands.world",  # world build / train / check
    "t3unlearn.commands.tofu",  # tofu train / check
    "t3unlearn.commands.t3",  # unlearn, generate, calibrate, features, sequential
    "t3unlearn.commands.eval",  # eval, report
    "t3unlearn.commands.baselines",  # compare
    "t3unlearn.commands.toy",  # toy
    "t3unlearn.commands.images",  # images build / train / unlearn / eval / compare
    "t3unlearn.commands.demo",  # demo
    "t3unlearn.commands.serve",  # serve
]

_EPILOG = """\
quick start (offline, CPU):
  t3unlearn demo                                  build the embedded world, unlearn, evaluate
  t3unlearn world build --preset tiny --out w     a small TOFU-shaped benchmark
  t3unlearn unlearn --model M --forget world:forget10 --retain world:retain90 --out head
  t3unlearn generate --model M --head head "Where was Ilse Varga born?"
  t3unlearn serve --model M --head forget10=head  OpenAI-compatible server + playground

Run 't3unlearn COMMAND --help' for each command's options.
"""


class _Parser(argparse.ArgumentParser):
    """Usage mistakes print one line (what is wrong, where to read more) and exit 2, like every user error.

    Every command's parser is one of these (subparsers take their parent's class): abbreviations are refused
    (``--epoc`` is not ``--epochs``) and an unknown option gets the close one suggested ("did you mean --epochs?").
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D401 - argparse's name
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

    def parse_known_args(self, args=None, namespace=None):
        ns, extras = super().parse_known_args(args, namespace)
        if extras and not hasattr(ns, "_t3_parser"):  # the innermost (sub)command's parser saw them first
            setattr(ns, "_t3_parser", self)
        return ns, extras

    def parse_args(self, args=None, namespace=None):
        ns, extras = self.parse_known_args(args, namespace)
        owner = vars(ns).pop("_t3_parser", self)
        if extras:
            owner.error(unknown_arguments_message(owner, extras))
        return ns


def unknown_arguments_message(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """"unrecognized arguments: --epoc 3; did you mean --epochs?" (the closest option of that command)."""
    import difflib

    options = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    message = f"unrecognized arguments: {' '.join(extras)}"
    for word in extras:
        if word.startswith("-"):
            close = difflib.get_close_matches(word.split("=", 1)[0], options, n=1, cutoff=0.6)
            if close:
                return f"{message}; did you mean {close[0]}?"
    return message


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="t3unlearn",
        description="Make a generative model forget data without touching its weights "
        "(Temper-Then-Tilt), measure it on TOFU, and serve the result.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"t3unlearn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _AREAS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from t3unlearn.errors import T3Error

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    if getattr(args, "quiet", False):
        _quiet_libraries()
    try:
        return int(args.func(args) or 0)
    except (T3Error, OSError) as exc:
        message = user_error_message(exc)
        if message is None:
            raise
        sub = getattr(args, f"{args.command}_command", None)  # world build, images unlearn, ...: as argparse names it
        print(f"t3unlearn {args.command}{f' {sub}' if sub else ''}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no partial output was kept", file=sys.stderr)
        return 130


def _quiet_libraries() -> None:
    """``--quiet`` (``--quiet``) also silences the libraries' own bars (transformers' "Loading weights", the hub's), here
    and in the worker processes a command starts (they inherit the environment)."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
