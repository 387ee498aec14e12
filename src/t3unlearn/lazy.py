"""Lazy exports for a package's ``__init__``: names imported from their submodule on first use, so that
``import t3unlearn`` (and ``t3unlearn --help``) never imports torch::

    _LAZY = {"unlearn": "t3unlearn.t3.train", ...}
    __all__ = list(_LAZY)
    __getattr__ = lazy_exports(__name__, _LAZY)
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` (PEP 562) that imports ``exports[name]`` and returns its ``name``."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


__all__ = ["lazy_exports"]
