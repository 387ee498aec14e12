"""`--help` teaches: every option of every command says what it does, not only its default."""

from __future__ import annotations

import argparse
import re

from t3unlearn.commands.main import build_parser


def _options(parser: argparse.ArgumentParser, name: str = "t3unlearn"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                yield from _options(child, f"{name} {sub}")
        elif action.option_strings and not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield name, action


def undescribed(parser: argparse.ArgumentParser) -> list[str]:
    """The options whose help is empty or only a default in brackets ('[64]')."""
    bad = []
    for name, action in _options(parser):
        if action.help == argparse.SUPPRESS:
            continue
        if not re.sub(r"\[[^\]]*\]\s*$", "", action.help or "").strip():
            bad.append(f"{name} {action.option_strings[-1]}: {action.help!r}")
    return bad


def test_every_option_says_what_it_does():
    bad = undescribed(build_parser())
    assert not bad, "options whose --help gives no description (say what it does, then its [default]):\n" + "\n".join(bad)


def test_the_check_catches_a_bare_default():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    s = sub.add_parser("gen")
    s.add_argument("--seed", default=0, help="[0]")
    s.add_argument("--port", default=1)
    s.add_argument("--ok", default=2, help="what it does [2]")
    assert undescribed(p) == ["t3unlearn gen --seed: '[0]'", "t3unlearn gen --port: None"]
