"""The head registry: many T3 heads over one base model, added and removed while serving.

A :class:`Head` holds only the head's weights (a few hundred KB) and its saved T and s; the base
is loaded once by the server. A request names a head (or the base) by its ``model`` field.
Removing a head never disturbs sequences already decoding with it: they hold a reference to
the :class:`Head` and finish; new requests for the name get 404.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from t3unlearn.errors import ModelError, T3Error

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/+-]{0,127}$")


class HeadError(T3Error):
    """A head that cannot be served (bad directory, another base, a name in use); ``param`` names the
    request field at fault and ``status`` the HTTP status the server answers with."""

    def __init__(self, message: str, *, param: str | None = "path", status: int = 400):
        super().__init__(message)
        self.param, self.status = param, status


@dataclass(eq=False)
class Head:
    """One guidance head: its weights and the guidance saved with it (T, s, ...: the request defaults)."""

    name: str
    path: str
    weights: tuple  # Linear weights in order: inp (h, d), mid (h, h)..., out (V, h); float32
    activation: str
    guidance: object  # t3unlearn.t3.config.Guidance
    nbytes: int
    base: str | None = None  # the base recorded in t3_config.json
    training: dict = field(default_factory=dict)
    created: int = field(default_factory=lambda: int(time.time()))
    act: object = None  # the activation module (None for identity)
    support: object = None  # the head's SupportGate (t3unlearn.t3.head), None for heads saved without one
    pieces: torch.Tensor | None = None  # (V,) bool: the tokens that continue a word (None: saved without the table)

    def support_weight(self, pooled: torch.Tensor, q: float | None) -> torch.Tensor | None:
        """The support gate's weight ``(k, 1)`` at quantile ``q`` (None when ``q`` is None)."""
        if q is None:
            return None
        if self.support is None:
            from t3unlearn.t3.head import NO_SUPPORT

            raise HeadError(NO_SUPPORT, param="support")
        return self.support.weight(pooled, q)

    @property
    def temperature(self) -> float:
        return self.guidance.temperature

    @property
    def scale(self) -> float:
        return self.guidance.scale

    def logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """Head logits ``(k, V)`` for pooled features ``(k, d)``: the same products, in the same
        order, as :class:`t3unlearn.T3ForCausalLM` (so served greedy text equals ``generate``)."""
        linear = torch.nn.functional.linear
        inp, *mid, out = self.weights
        z = linear(pooled, inp)
        if self.act is not None:
            z = self.act(z)
        for w in mid:
            z = self.act(linear(z, w))
        return linear(z, out)

    def card(self, base_id: str) -> dict:
        """The ``/v1/models`` entry of this head (no path: responses never show where the server keeps files)."""
        return {
            "id": self.name,
            "object": "model",
            "created": self.created,
            "owned_by": "t3unlearn",
            "root": self.name,  # not the directory: a response never shows a server path
            "parent": base_id,
            "t3": {**guidance_dict(self.guidance), "bytes": self.nbytes},
        }


def _shown(name: str, most: int = 80) -> str:
    """``name`` as an error message quotes it: repr'd, and cut to ``most`` characters (a client's 100 KB model
    name is not echoed back whole)."""
    return repr(name) if len(name) <= most else f"{name[:most]!r}... ({len(name):,} characters)"


def guidance_dict(g) -> dict:
    """A :class:`~t3unlearn.t3.config.Guidance` as JSON: every knob by field name."""
    from dataclasses import asdict

    return asdict(g)


_TEMPLATES = {"chat": "the tokenizer's chat template", "plain": "Question: ... Answer:"}


def _same_base(recorded: str | None, served: str | None) -> bool:
    if not recorded or not served:
        return True  # nothing to compare (a base built in memory, a head saved without a name)
    a, b = Path(recorded).expanduser(), Path(served).expanduser()
    if a.exists() and b.exists():
        return a.resolve() == b.resolve()
    return recorded == served


def load_head(name: str, path, *, hidden_size: int, vocab_size: int, tokenizer_hash: str | None, base_path: str | None,
              force: bool = False, template: str | None = None, **guidance) -> Head:
    """Load and check the head saved in ``path`` for a base of ``hidden_size`` / ``vocab_size``.

    Raises :class:`HeadError` with one clear line for anything that would make it unservable:
    not a head directory, corrupt files, another base's shape or tokenizer, or (unless
    ``force``) another base recorded in its ``t3_config.json``, a prompt template (``template``: ``"chat"`` or
    ``"plain"``, how this server formats prompts) other than the one it was trained with. ``guidance`` (knobs by
    :class:`~t3unlearn.t3.config.Guidance` field name; None keeps the saved value) overrides the saved guidance.
    """
    from t3unlearn.t3.model import load_head as _load

    if not isinstance(name, str) or not NAME_RE.match(name):
        raise HeadError(f"head name {name!r} is not valid: use 1-128 letters, digits and . _ : / + - (starting with a letter or digit).",
                        param="name")
    if not isinstance(path, str) or not path.strip():
        raise HeadError("give the head's directory as 'path' (where 't3unlearn unlearn --out' wrote it).")
    try:
        head, cfg = _load(Path(path).expanduser())
    except ModelError as exc:
        raise HeadError(str(exc), param="path") from None
    try:
        g = cfg.guidance.replace(**guidance)
    except ModelError as exc:
        raise HeadError(str(exc), param=next((k for k in guidance if k in str(exc)), None)) from None
    if g.support is not None and head.support is None:
        from t3unlearn.t3.head import NO_SUPPORT

        raise HeadError(f"{path}: {NO_SUPPORT}", param="support")
    if g.reads_pieces and head.pieces is None:
        from t3unlearn.t3.head import NO_PIECES

        raise HeadError(f"{path}: {NO_PIECES}", param="piece_floor" if g.piece_floor is not None else "spelling")
    if (head.in_features, head.vocab_size) != (hidden_size, vocab_size):
        raise HeadError(
            f"the head in {path} was trained on a base with hidden size {head.in_features} and vocabulary {head.vocab_size} "
            f"({cfg.base_model_name_or_path}), but this server's base has hidden size {hidden_size} and vocabulary "
            f"{vocab_size}; serve it with the base it was trained on."
        )
    want = cfg.tokenizer_hash
    if want and tokenizer_hash and want != tokenizer_hash:
        raise HeadError(f"the head in {path} was trained with another tokenizer than this server's base; serve it with its own base.")
    trained = (cfg.training or {}).get("template") if isinstance(cfg.training, dict) else None
    if template and trained in ("chat", "plain") and trained != template:
        raise HeadError(
            f"the head in {path} was trained on {trained} prompts ({_TEMPLATES[trained]}), but this server formats "
            f"prompts as {template} (its base's tokenizer {'has a' if template == 'chat' else 'has no'} chat template); "
            "serve it with the base and tokenizer it was trained with."
        )
    recorded = cfg.base_model_name_or_path
    if not force and not _same_base(recorded, base_path):
        raise HeadError(
            f"the head in {path} was trained on {recorded}, but this server serves {base_path}; "
            "serve it with that base (or force it if the two are the same model)."
        )
    weights = [head.inp.weight] + [m.weight for m in head.mid] + [head.out.weight]
    weights = tuple(w.detach().float().contiguous() for w in weights)
    nbytes = sum(w.numel() * w.element_size() for w in weights)
    if head.support is not None:  # its statistics are in the file too
        nbytes += sum(b.numel() * 4 for b in head.support.buffers())
    if head.pieces is not None:  # so is the word-piece table (float32 0/1)
        nbytes += head.pieces.numel() * 4
    act = None if head.activation == "identity" else head.act
    pieces = None if head.pieces is None else head.piece_mask()
    return Head(name, str(Path(path).expanduser()), weights, head.activation, g, nbytes, recorded, cfg.training or {}, act=act,
                support=head.support, pieces=pieces)


class HeadRegistry:
    """Name -> :class:`Head`, thread-safe; the base model is ``base_id`` (no head)."""

    def __init__(self, base_id: str, *, hidden_size: int, vocab_size: int, tokenizer_hash: str | None = None,
                 base_path: str | None = None, device=None, template: str | None = None):
        self.base_id = base_id
        self.created = int(time.time())
        self._check = dict(hidden_size=hidden_size, vocab_size=vocab_size, tokenizer_hash=tokenizer_hash, base_path=base_path,
                           template=template)
        self._device = device
        self._heads: dict[str, Head] = {}
        self._lock = threading.Lock()

    def add(self, name: str, path, *, force: bool = False, **guidance) -> Head:
        """Load the head in ``path`` and serve it as ``name`` (``guidance`` overrides its saved knobs);
        refuses a name in use (409)."""
        if name == self.base_id or name in self._heads:
            raise HeadError(f"a model named {name!r} is already served; delete it first or choose another name.", param="name", status=409)
        head = load_head(name, path, force=force, **guidance, **self._check)
        if self._device is not None:
            head.weights = tuple(w.to(self._device) for w in head.weights)
            head.pieces = None if head.pieces is None else head.pieces.to(self._device)
            head.support = None if head.support is None else head.support.to(self._device)
        with self._lock:  # checked again: another request may have taken the name while this one loaded
            if name == self.base_id or name in self._heads:
                raise HeadError(f"a model named {name!r} is already served; delete it first or choose another name.", param="name", status=409)
            self._heads[name] = head
        return head

    def remove(self, name: str) -> Head:
        with self._lock:
            if name == self.base_id:
                raise HeadError(f"{name!r} is the base model, not a head; it cannot be removed.", param="name")
            head = self._heads.pop(name, None)
        if head is None:
            raise HeadError(f"no head named {_shown(name)} is served (GET /v1/models lists them).", param="name", status=404)
        return head

    def resolve(self, model: str) -> Head | None:
        """The head a request's ``model`` names (``None`` for the base); :class:`HeadError` 404 if unknown."""
        if model == self.base_id:
            return None
        head = self._heads.get(model)
        if head is None:
            raise HeadError(f"the model {_shown(model)} does not exist; this server serves {self.base_id!r} and its heads "
                            f"({', '.join(self.names()) or 'none yet'}).", param="model", status=404)
        return head

    def heads_by_name(self) -> dict[str, Head]:
        return dict(self._heads)

    def names(self) -> list[str]:
        return list(self._heads)

    def heads(self) -> list[Head]:
        return list(self._heads.values())

    def __len__(self) -> int:
        return len(self._heads)
