"""Features of the frozen base: the forward pass that T3's head reads.

The head of T3 reads, at position ``t``, the mean of the base's final-layer hidden states
(after its final norm) over positions ``1..t`` of the sequence, padding excluded and prompt
included. Training needs that pooled vector only at the positions that predict an answer
token (labels != -100), together with the realized next token. One forward pass of the base's
decoder (no LM head: the ``V``-wide logits are never computed) over the items, in
length-sorted right-padded batches, yields all of them.

This module computes them (:func:`batch_features`, :func:`compute_features`) and holds the training
set they make (:class:`FeatureSet`); :mod:`t3unlearn.t3.feature_cache` extracts them once per data set
and caches them on disk in shards.

A :class:`FeatureSet` holds, tokens of item 0 first, each item's tokens in position order:

- ``feats``  (N, d) float32: pooled features at answer-predicting positions;
- ``targets`` (N,) int64: the realized next token;
- ``seq``   (N,) int64: the item each token belongs to;
- ``item_label`` (I,) float32: 1 for retain items, 0 for forget items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from t3unlearn.data import IGNORE_INDEX, QAExample, collate
from t3unlearn.errors import ModelError


# --------------------------------------------------------------------------- the base's hidden states


def decoder_of(model):
    """The decoder stack of a causal LM: its output's ``last_hidden_state`` is after the final norm."""
    get = getattr(model, "get_decoder", None)
    decoder = get() if callable(get) else None
    if decoder is None or decoder is model:
        decoder = getattr(model, "model", None) or getattr(model, "transformer", None)
    if decoder is None:
        raise ModelError(f"cannot find the decoder of {type(model).__name__}; T3 needs a transformers causal LM.")
    return decoder


def hidden_size_of(model) -> int:
    """Width of the states the output layer reads (the decoder's output): the output embedding's input size,
    which differs from ``hidden_size`` where the decoder projects out (OPT-350m's ``word_embed_proj_dim``)."""
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(out, "weight", None)
    if weight is not None and weight.dim() == 2:
        return int(weight.shape[1])
    cfg = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    size = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", None) or getattr(cfg, "d_model", None)
    if size is None:
        raise ModelError(f"cannot read the hidden size of {type(model).__name__} from its config.")
    return int(size)


def vocab_size_of(model) -> int:
    """Number of logits the base produces (rows of its output embedding)."""
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is not None and getattr(out, "weight", None) is not None:
        return int(out.weight.shape[0])
    return int(model.config.get_text_config(decoder=True).vocab_size)


def final_hidden(model, input_ids, attention_mask):
    """``(B, S, d)`` final-layer hidden states (after the final norm) of ``model``'s decoder."""
    out = decoder_of(model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return out[0] if isinstance(out, tuple) else out.last_hidden_state


def pool_prefix(hidden, mask, *, prior_sum=None, prior_count=None):
    """Cumulative mean over non-padding positions: ``(B, S, d), (B, S) -> (B, S, d)`` float32.

    ``prior_sum`` ``(B, d)`` / ``prior_count`` ``(B,)`` continue a running mean (KV-cached decoding).
    Returns ``(pooled, running_sum, running_count)``; positions with no token yet pool to zero.
    """
    m = mask.to(torch.float32).unsqueeze(-1)
    sums = (hidden.to(torch.float32) * m).cumsum(1)
    counts = m.cumsum(1)
    if prior_sum is not None:
        sums = sums + prior_sum.unsqueeze(1)
        counts = counts + prior_count.view(-1, 1, 1)
    pooled = sums / counts.clamp_min(1.0)
    return pooled, sums[:, -1], counts[:, -1, 0]


def answer_positions(labels):
    """Mask ``(B, S-1)`` of positions ``t`` whose next token ``t+1`` is an answer token."""
    return labels[:, 1:] != IGNORE_INDEX


@torch.inference_mode()
def batch_features(model, examples: Sequence[QAExample], pad_id: int, device=None, *, with_hidden: bool = False):
    """Pooled features at answer positions for ``examples`` in the given order.

    Returns ``(feats (N, d) float32, targets (N,), rows (N,))``; ``rows`` indexes ``examples``,
    tokens row by row in position order. ``with_hidden`` adds a fourth tensor: the base's own final
    hidden state at those positions (what its LM head turns into next-token logits).
    """
    device = device or next(model.parameters()).device
    batch = collate(examples, pad_id, padding_side="right")
    ids = batch["input_ids"].to(device)
    mask = batch["attention_mask"].to(device)
    labels = batch["labels"].to(device)
    hidden = final_hidden(model, ids, mask)
    pooled, _, _ = pool_prefix(hidden, mask)
    valid = answer_positions(labels)
    feats = pooled[:, :-1][valid]
    targets = ids[:, 1:][valid]
    rows = torch.arange(len(examples), device=device).unsqueeze(1).expand_as(valid)[valid]
    if with_hidden:
        return feats, targets, rows, hidden[:, :-1][valid].float()
    return feats, targets, rows


# --------------------------------------------------------------------------- the feature set


@dataclass
class FeatureSet:
    """Pooled features at answer positions of forget items (first) and retain items."""

    feats: torch.Tensor  # (N, d) float32
    targets: torch.Tensor  # (N,) int64
    seq: torch.Tensor  # (N,) int64 item index
    item_label: torch.Tensor  # (I,) float32, 1 = retain
    n_forget: int
    n_retain: int
    key: str = ""
    from_cache: bool = False

    @property
    def n_items(self) -> int:
        return self.n_forget + self.n_retain

    @property
    def dim(self) -> int:
        return int(self.feats.shape[1])

    def to(self, device) -> "FeatureSet":
        return FeatureSet(
            self.feats.to(device), self.targets.to(device), self.seq.to(device), self.item_label.to(device),
            self.n_forget, self.n_retain, self.key, self.from_cache,
        )

    def token_index(self) -> torch.Tensor:
        """``(I, Lmax)`` token row of each item's tokens, ``-1`` padded."""
        counts = torch.bincount(self.seq, minlength=self.n_items)
        if (counts == 0).any():
            raise ModelError("an item has no answer tokens; every item needs a non-empty answer.")
        width = int(counts.max())
        starts = torch.cumsum(counts, 0) - counts
        ar = torch.arange(width, device=self.seq.device)
        idx = starts.unsqueeze(1) + ar.unsqueeze(0)
        return torch.where(ar.unsqueeze(0) < counts.unsqueeze(1), idx, torch.full_like(idx, -1))


def _batches(examples: Sequence[QAExample], items: Sequence[int], batch_size: int, max_tokens: int | None) -> list[list[int]]:
    """``items`` sorted by length, cut into batches of at most ``batch_size`` items and (if given) about
    ``max_tokens`` padded tokens."""
    order = sorted(items, key=lambda i: len(examples[i].input_ids))
    batches, cur = [], []
    for i in order:
        width = len(examples[i].input_ids)
        if cur and (len(cur) >= batch_size or (max_tokens and (len(cur) + 1) * width > max_tokens)):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def _rows_of(model, examples, items: Sequence[int], *, pad_id: int, batch_size: int, max_tokens: int | None,
             device, bar=None, to_cpu: bool = False):
    """Features of ``items`` (item ids into ``examples``) in item order: ``(feats, targets, seq)``, ``seq``
    holding the item ids. One forward pass in length-sorted batches; ``to_cpu`` moves each batch's rows
    off the device as soon as it is done (streaming extraction keeps only one shard in memory)."""
    local = {i: examples[i] for i in items}  # in order: a lazily tokenized set is read chunk by chunk
    feats, targets, seqs = [], [], []
    for idx in _batches(local, list(local), batch_size, max_tokens):
        f, t, r = batch_features(model, [local[i] for i in idx], pad_id, device)
        s = torch.as_tensor(idx, device=f.device)[r]
        if to_cpu:
            f, t, s = f.float().cpu(), t.cpu(), s.cpu()
        feats.append(f)
        targets.append(t)
        seqs.append(s)
        if bar is not None:
            bar.update(len(idx))
    feats, targets, seq = torch.cat(feats), torch.cat(targets), torch.cat(seqs)
    perm = torch.sort(seq, stable=True).indices  # item order, positions in order within an item
    return feats[perm].float().contiguous(), targets[perm].long().contiguous(), seq[perm].long().contiguous()


def compute_features(
    model,
    examples: Sequence[QAExample],
    item_label: Sequence[float],
    n_forget: int,
    *,
    pad_id: int,
    batch_size: int = 32,
    max_tokens: int | None = None,
    device=None,
    progress: bool = False,
) -> FeatureSet:
    """One forward pass of the decoder over all ``examples`` (length-sorted batches), in memory, no cache."""
    device = device or next(model.parameters()).device
    with _bar(len(examples), progress) as bar:
        feats, targets, seq = _rows_of(model, examples, range(len(examples)), pad_id=pad_id, batch_size=batch_size,
                                       max_tokens=max_tokens, device=device, bar=bar)
    return FeatureSet(
        feats, targets, seq,
        torch.as_tensor(list(item_label), dtype=torch.float32, device=device),
        int(n_forget),
        len(examples) - int(n_forget),
    )


def _bar(total: int, enabled: bool, desc: str = "features"):
    from t3unlearn.progress import progress as progress_bar

    return progress_bar(total=total, desc=desc, unit="item", enabled=enabled)
