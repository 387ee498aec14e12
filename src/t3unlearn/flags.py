"""Old spellings of command-line options, kept as hidden aliases.

One name per meaning across commands (``--quiet``, ``--oracle``, ``--pretrained``, ...): where a command used
another spelling, the old one still works -- it is left out of ``--help`` and prints one line naming the new
option -- so that users' scripts do not break.
"""

from __future__ import annotations

import argparse
import sys


def deprecated_alias(parser, old: str, new: str, *, dest: str, value=None, type=None, choices=None) -> None:
    """Accept ``old`` as a hidden spelling of the option ``new`` (stored in ``dest``): ``old`` takes an argument
    (read with ``type``, checked against ``choices``) unless ``value`` is given, which it then stores as a flag.
    Using it prints ``warning: OLD is deprecated; use NEW`` on stderr."""
    flag = value is not None

    class Alias(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            hint = f"{new} {value}" if flag and not isinstance(value, bool) else new
            print(f"warning: {option_string} is deprecated; use {hint} (the old spelling will be removed).", file=sys.stderr)
            setattr(namespace, self.dest, value if flag else values)

    kwargs = {"nargs": 0} if flag else {"type": type, "choices": choices}
    parser.add_argument(old, dest=dest, action=Alias, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)


def add_quiet(parser, *, old: str | None = None) -> None:
    """``--quiet`` (no progress bars), with ``old`` (e.g. ``--no-progress``) as a hidden alias."""
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    if old:
        deprecated_alias(parser, old, "--quiet", dest="quiet", value=True)
