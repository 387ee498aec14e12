"""The base's states at the answer positions of a set of items, and the guided log-probabilities of the answer
tokens under one guidance setting or a whole grid of them (what :mod:`t3unlearn.t3.calibrate` scores).

One forward pass of the base's decoder per set (:func:`answer_states`) keeps its final hidden states and pooled
states at the answer positions. :func:`token_logprobs` then scores one setting as the guided model computes it
(:func:`~t3unlearn.t3.guidance.guided_logits`, up to rounding); :func:`grid_logprobs` scores a
grid chunk by chunk of positions: the base's output layer, the head, and what guidance derives from them alone
(the head's log-sigmoid, the forget mass, the support gate's weight) run once per chunk, and each setting costs
only its tempering, tilt and softmax -- bit for bit what :func:`token_logprobs` gives. Where the base spells
(``spelling="base"``) only the tokens that do not continue a word are tempered and tilted
(:func:`~t3unlearn.t3.guidance.guided_logprobs_at`).

Inside :func:`state_cache` (``calibrate`` opens one) the states are kept on disk between runs, one safetensors file
per (model, items, batch size), under ``cache_home()/answer-states/``: the forward passes of another calibration of
the same base on the same sets (another head, seed or grid; the reference's and the oracle's passes too) are read
back instead of run -- the same tensors, so the same table.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from t3unlearn.data import IGNORE_INDEX
from t3unlearn.errors import T3Error
from t3unlearn.t3.config import Guidance
from t3unlearn.t3.guidance import HeadReading, guided_logprobs_at

Setting = Guidance
CHUNK_ENTRIES = 1 << 21  # token_logprobs' step: positions x vocabulary entries


@dataclass
class AnswerStates:
    """The base's states at every answer position of a set of items (one forward pass)."""

    hidden: torch.Tensor  # (N, d) final hidden state (input of the base's output layer)
    pooled: torch.Tensor  # (N, d) prefix-mean pooled state (input of the head)
    targets: torch.Tensor  # (N,) the answer token at the next position
    seq: torch.Tensor  # (N,) item of each position
    n_items: int
    context: torch.Tensor | None = None  # (I, L) every item's token ids, -1 padded (the copy exemption reads them)
    pos: torch.Tensor | None = None  # (N,) position of each answer position in its item
    last: torch.Tensor = field(init=False)  # (N,) True at each item's last labelled token (the EOS)

    def __post_init__(self):
        nxt = torch.cat([self.seq[1:], self.seq.new_full((1,), -1)])
        self.last = nxt != self.seq

    def seen(self, sl: slice, vocab_size: int) -> torch.Tensor:
        """``(n, V)`` bool: the tokens of each position's context (its item's ids up to and including it), for the
        positions ``sl`` -- what the guided model's copy exemption reads there."""
        if self.context is None or self.pos is None:
            raise T3Error("these answer states were built without their items' token ids; the copy exemption needs "
                          "them (answer_states keeps them).")
        from t3unlearn.t3.guidance import seen_tokens

        ctx = self.context[self.seq[sl].to(self.context.device)]  # (n, L)
        inside = torch.arange(ctx.shape[1], device=ctx.device).unsqueeze(0) <= self.pos[sl].to(ctx.device).unsqueeze(1)
        return seen_tokens(ctx, vocab_size, mask=inside, keep=1)[1]  # every token up to the position (-1: padding)


class _StateCache:
    """A directory of saved answer states, and the fingerprints of the models seen (hashed once per cache)."""

    def __init__(self, directory: Path):
        self.directory, self._fps = directory, {}

    def path(self, model, examples, batch_size: int, device) -> Path:
        from t3unlearn.io import fingerprint
        from t3unlearn.t3.feature_cache import FEATURE_VERSION, examples_fingerprint, model_fingerprint

        if id(model) not in self._fps:
            self._fps[id(model)] = (model, model_fingerprint(model))  # the model is kept, so its id stays its own
        key = fingerprint("answer-states", FEATURE_VERSION, self._fps[id(model)][1], examples_fingerprint(examples),
                          batch_size, torch.device(device).type, model.training, length=24)  # dropout on: other states
        return self.directory / f"{key}.safetensors"


_CACHE: contextvars.ContextVar[_StateCache | None] = contextvars.ContextVar("t3unlearn_answer_states", default=None)


@contextlib.contextmanager
def state_cache(cache: bool = True, cache_dir: str | os.PathLike | None = None):
    """Within this block :func:`answer_states` reads and writes its results under ``cache_dir`` (default
    ``cache_home()/answer-states``); ``cache=False`` (or ``$T3UNLEARN_NO_FEATURE_CACHE=1``): no cache."""
    from t3unlearn.io import cache_home
    from t3unlearn.t3.feature_cache import cache_enabled

    on = cache_enabled(cache)
    token = _CACHE.set(_StateCache(Path(cache_dir) if cache_dir else cache_home() / "answer-states") if on else None)
    try:
        yield
    finally:
        _CACHE.reset(token)


def _load(path: Path, device):
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        t = load_file(str(path), device=str(device))
        return t["hidden"], t["pooled"], t["targets"], t["seq"]
    except (OSError, SafetensorError, KeyError):  # unreadable: computed again and rewritten
        return None


def _save(path: Path, tensors: dict) -> None:
    import tempfile

    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, tmp)
        os.replace(tmp, path)  # whole or absent: a reader never sees a half-written file
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@torch.inference_mode()
def answer_states(model, examples, pad_id: int, *, batch_size: int = 32, device=None) -> AnswerStates:
    """One forward pass of ``model``'s decoder over ``examples`` (length-sorted batches), or its saved result inside
    :func:`state_cache`."""
    from t3unlearn.t3.features import batch_features

    device = device or next(model.parameters()).device
    cache = _CACHE.get()
    path = cache.path(model, examples, batch_size, device) if cache is not None and len(examples) else None
    found = _load(path, device) if path is not None and path.is_file() else None
    if found is not None:
        hidden, pooled, targets, seq = found
    else:
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
        parts = []
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            f, t, r, h = batch_features(model, [examples[i] for i in idx], pad_id, device, with_hidden=True)
            parts.append((h, f, t, torch.as_tensor(idx, device=device)[r]))
        hidden, pooled, targets, seq = (torch.cat(x) for x in zip(*parts))
        perm = torch.sort(seq, stable=True).indices
        hidden, pooled, targets, seq = hidden[perm], pooled[perm], targets[perm], seq[perm]
        if path is not None:
            _save(path, {"hidden": hidden, "pooled": pooled, "targets": targets, "seq": seq})
    width = max((len(e.input_ids) for e in examples), default=0)
    context = torch.full((len(examples), width), -1, dtype=torch.long)
    pos = []
    for i, e in enumerate(examples):
        context[i, : len(e.input_ids)] = torch.as_tensor(e.input_ids, dtype=torch.long)
        # answer positions in order: t predicts the answer token t + 1 (what batch_features keeps, item by item)
        pos += [t for t in range(len(e.labels) - 1) if e.labels[t + 1] != IGNORE_INDEX]
    return AnswerStates(hidden, pooled, targets, seq, len(examples), context=context,
                        pos=torch.as_tensor(pos, dtype=torch.long))


def _out_layer(model):
    out_layer = model.get_output_embeddings()
    if out_layer is None:
        raise T3Error(f"{type(model).__name__} has no output embedding layer; calibration needs the base's LM head.")
    return out_layer


def _chunk_size(out_layer, chunk: int | None) -> int:
    return chunk or max(16, CHUNK_ENTRIES // out_layer.weight.shape[0])


@torch.inference_mode()
def token_logprobs(model, head, states: AnswerStates, setting: Setting, *, chunk: int | None = None) -> torch.Tensor:
    """``(N,)`` guided log-probability of each answer token under ``setting`` (``head=None``: the model's own),
    through :func:`~t3unlearn.t3.guidance.guided_logprobs_at`: the log-softmax of ``guided_logits`` as the guided
    model computes it, up to rounding (:func:`grid_logprobs` scores many settings at once, bit for bit the same).

    ``chunk``: positions per step [about 2M vocabulary entries: tensors of ~8 MB stay in the allocator's pools]."""
    out_layer = _out_layer(model)
    chunk = _chunk_size(out_layer, chunk)
    res = []
    for i in range(0, states.targets.numel(), chunk):
        sl = slice(i, i + chunk)
        # normalised as guided_logits does, so T = 1, s = 0 gives these bits exactly
        logp = torch.log_softmax(out_layer(states.hidden[sl].to(out_layer.weight.dtype)).float(), dim=-1)
        target = states.targets[sl].unsqueeze(-1)
        if head is None:
            at = torch.log_softmax(logp, -1).gather(-1, target)
        else:
            pooled = states.pooled[sl]
            seen = states.seen(sl, logp.shape[-1]) if setting.copy_floor is not None else None
            pieces = head.piece_mask() if setting.reads_pieces else None
            reading = HeadReading(head(pooled), setting.bias, setting.floor, seen, setting.copy_floor, pieces,
                                  setting.piece_floor)
            at = guided_logprobs_at(logp, reading, setting, target, weight=head.support_weight(pooled, setting.support))
        res.append(at.squeeze(-1).float().cpu())
    return torch.cat(res)


class _Chunk:
    """What guidance reads at one chunk of positions and no setting changes: the base's log-probs, the head's
    logits, and -- per (bias, floor) and per support quantile, computed on first use -- the head's reading
    (:class:`~t3unlearn.t3.guidance.HeadReading`: logits as read, their log-sigmoid, the forget mass) and the support
    gate's weight. :meth:`logprobs_at` is ``guided_logprobs_at`` with these pieces reused (the same operations on the
    same tensors: the same bits)."""

    def __init__(self, logp: torch.Tensor, head, pooled: torch.Tensor, seen=None):
        self.logp, self.head, self.pooled = logp, head, pooled
        self.head_logits = head(pooled)
        self._seen, self._seen_mask = seen, None  # a callable giving the copy exemption's mask, called on first use
        self.readings: dict = {}
        self.weights: dict = {}

    def logprobs_at(self, st: Setting, target: torch.Tensor) -> torch.Tensor:
        key = st.bias, st.floor, st.copy_floor, st.piece_floor, st.reads_pieces
        if key not in self.readings:
            seen = None
            if st.copy_floor is not None:
                if self._seen_mask is None:
                    self._seen_mask = self._seen()
                seen = self._seen_mask
            pieces = self.head.piece_mask() if st.reads_pieces else None
            self.readings[key] = HeadReading(self.head_logits, st.bias, st.floor, seen, st.copy_floor, pieces,
                                             st.piece_floor)
        if st.support not in self.weights:
            self.weights[st.support] = self.head.support_weight(self.pooled, st.support)
        return guided_logprobs_at(self.logp, self.readings[key], st, target, weight=self.weights[st.support])


@torch.inference_mode()
def grid_logprobs(model, head, states: AnswerStates, settings: Sequence[Setting], *, chunk: int | None = None,
                  bar=None) -> list[torch.Tensor]:
    """:func:`token_logprobs` of every setting, in order, from one pass over the positions: the base's output
    layer, the head and what guidance derives from them alone run once per chunk, not once per setting."""
    out_layer = _out_layer(model)
    chunk = _chunk_size(out_layer, chunk)
    # written in place: small results kept between the chunks' large temporaries would fragment the heap, and
    # resident memory would then grow with the number of settings (about 120 MB per setting on TOFU's sets)
    res = torch.empty(len(settings), states.targets.numel())
    for i in range(0, states.targets.numel(), chunk):
        sl = slice(i, i + chunk)
        logp = torch.log_softmax(out_layer(states.hidden[sl].to(out_layer.weight.dtype)).float(), dim=-1)
        pieces = None if head is None else _Chunk(logp, head, states.pooled[sl],
                                                  lambda sl=sl, v=logp.shape[-1]: states.seen(sl, v))
        target = states.targets[sl].unsqueeze(-1)
        for k, st in enumerate(settings):
            at = torch.log_softmax(logp, -1).gather(-1, target) if pieces is None else pieces.logprobs_at(st, target)
            res[k, sl] = at.squeeze(-1).cpu()
        if bar is not None:
            bar.update(int(target.shape[0]))
    return list(res)
