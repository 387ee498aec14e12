"""One registry of unlearning methods, for language models and image generators alike.

A :class:`Method` is a name, the kind of model it unlearns (``"lm"`` or ``"image"``), a one-line summary,
its settings with their defaults, and (LM) one :attr:`~Method.run` that unlearns and returns a
:class:`t3unlearn.results.UnlearnResult`. Code that runs several methods (the command line, ``compare``,
``sequential``) asks the registry instead of branching on names::

    from t3unlearn.methods import get, names, register
    result = get("npo").run("MODEL_DIR", "WORLD:forget10", "WORLD:retain90", out="npo", config={"lr": 1e-4})
    names("lm")                        # ('t3', 'cg', 'uld', 'gradascent', ..., 'retrain')

A fine-tuning method also carries its training step (``compute``, ``setup`` ...) for its trainer
(:mod:`t3unlearn.baselines.trainer`, :mod:`t3unlearn.images.trainer`). ``register`` adds one of your own
(it then runs through ``compare`` and ``sequential`` like the packaged ones); ``unregister`` removes it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from t3unlearn.errors import T3Error

KINDS = ("lm", "image")
# how a method unlearns: fine-tunes the weights; guides a frozen model with a classifier (T3); an assistant
# model whose logits are subtracted (ULD); distils a new generator (SFD)
STYLES = ("finetune", "guidance", "assistant", "distill")


def _no_reference(params: dict) -> bool:
    return False


@dataclass(frozen=True)
class Method:
    """One unlearning method (see the module doc).

    ``run(model, forget, retain, out=None, *, tokenizer=None, params=None, config=None, seed=0, progress=True,
    loading=None) -> UnlearnResult`` (LM methods): ``params`` are the method's own settings (``defaults``),
    ``config`` the optimisation's. The fields after ``style`` are a fine-tuning method's training step, read by
    its trainer.
    """

    name: str
    kind: str  # "lm" | "image"
    summary: str  # one line
    defaults: dict = field(default_factory=dict)
    run: Callable[..., Any] | None = None
    title: str = ""  # for tables (default: the name)
    style: str = "finetune"  # one of STYLES
    # a fine-tuning method's step: the batch -> objective, and what runs once before the first step
    compute: Callable | None = None
    setup: Callable | None = None
    # LM fine-tuning: whether it needs a frozen reference copy, the data it trains on ("paired": forget items with
    # retain items; "retain": retain only), whether it trains on "I don't know" answers, which parameters it trains
    needs_ref: Callable[[dict], bool] = _no_reference
    data: str = "paired"
    uses_idk: bool = False
    trainable: Callable | None = None
    # images: the data pools a step draws from, the generator families it applies to
    pools: tuple = ("retain",)
    families: tuple = ("ddpm", "vae")

    def __post_init__(self):
        if self.kind not in KINDS:
            raise T3Error(f"method {self.name!r}: kind must be one of {', '.join(KINDS)}, not {self.kind!r}.")
        if self.style not in STYLES:
            raise T3Error(f"method {self.name!r}: style must be one of {', '.join(STYLES)}, not {self.style!r}.")
        if not self.title:
            object.__setattr__(self, "title", self.name)


_REGISTRY: dict[tuple[str, str], Method] = {}


def register(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` under its ``(kind, name)``; a name already taken is an error unless ``replace``."""
    key = (method.kind, method.name)
    if key in _REGISTRY and not replace and _REGISTRY[key] is not method:
        raise T3Error(f"an {method.kind} method named {method.name!r} is registered already; choose another name "
                      "(or register(..., replace=True)).")
    _REGISTRY[key] = method
    return method


def unregister(name: str, kind: str = "lm") -> None:
    """Remove a method (one you registered); an unknown name is ignored."""
    _REGISTRY.pop((kind, name), None)


def names(kind: str = "lm", *, style: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """The registered methods of ``kind`` (of ``style``, one or several, if given), in registration order."""
    styles = (style,) if isinstance(style, str) else style
    return tuple(m.name for (k, _), m in _REGISTRY.items() if k == kind and (styles is None or m.style in styles))


def _normal(name: str) -> str:
    return str(name).strip().lower().replace("-", "").replace("_", "")


def get(name: str | Method, kind: str = "lm", *, among: Sequence[str] | None = None, what: str | None = None) -> Method:
    """The method called ``name`` (case, ``-`` and ``_`` do not matter: ``grad-diff`` is ``graddiff``).

    ``among``: the names allowed here (default: every registered one of ``kind``). An unknown name is one
    :class:`T3Error` line naming the closest one and the choices; ``what`` names the thing asked for in it
    (default ``"<kind> method"``)."""
    if isinstance(name, Method):
        return name
    choices = tuple(among) if among is not None else names(kind)
    by_normal = {_normal(n): n for n in choices}
    found = by_normal.get(_normal(name))
    if found is not None and (kind, found) in _REGISTRY:
        return _REGISTRY[(kind, found)]
    close = difflib.get_close_matches(str(name).strip().lower(), list(choices), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise T3Error(f"unknown {what or f'{kind} method'} {name!r}{hint}; choose one of {', '.join(choices) or 'none'}.")


__all__ = ["KINDS", "STYLES", "Method", "get", "names", "register", "unregister"]
