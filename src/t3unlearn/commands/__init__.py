"""The command line, the top floor: ``t3unlearn`` (:mod:`.main`) and one module per area of commands.

Each area module has a ``register(subparsers)`` and its handlers; they import torch and transformers inside
the handlers only, so ``t3unlearn --help`` is instant. Nothing below this package imports it.
"""
