"""Features of the frozen base, extracted once and cached on disk.

The head of T3 reads, at position ``t``, the mean of the base's final-layer hidden states
(after its final norm) over positions ``1..t`` of the sequence, padding excluded and prompt
included. Training needs that pooled vector only at the positions that predict an answer
token (labels != -100), together with the realized next token. One forward pass of the base's
decoder (no LM head: the ``V``-wide logits are never computed) over forget and retain items,
in length-sorted right-padded batches, yields all of them.

The result is cached as safetensors under ``cache_home()/features/<key>``; the key hashes the
base model (config and weights), the token ids of the data (so tokenizer, template and the
items themselves) and the extraction settings. Another run with other head settings reuses it
and never touches the base.

Stored (and all that training needs), tokens of item 0 first, each item's tokens in order:

- ``feats``  (N, d) float32: pooled features at answer-predicting positions;
- ``targets`` (N,) int64: the realized next token;
- ``seq``   (N,) int64: the item each token belongs to (forget items first, then retain);
- ``item_label`` (I,) float32: 1 for retain items, 0 for forget items.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from t3unlearn.data import IGNORE_INDEX, QAExample, collate
from t3unlearn.errors import ModelError
from t3unlearn.io import atomic_dir, cache_home, fingerprint

FEATURE_VERSION = 1
_STATE_HASH_LIMIT = 2 * 1024**3  # bytes of weights above which the fingerprint uses file stats


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
    """One forward pass of the decoder over all ``examples`` (length-sorted batches)."""
    device = device or next(model.parameters()).device
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    batches, cur = [], []
    for i in order:  # at most batch_size items and (if given) about max_tokens padded tokens per batch
        width = len(examples[i].input_ids)
        if cur and (len(cur) >= batch_size or (max_tokens and (len(cur) + 1) * width > max_tokens)):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    bar = None
    if progress:
        from t3unlearn.progress import progress as progress_bar

        bar = progress_bar(total=len(examples), desc="features", unit="item")
    feats, targets, seqs = [], [], []
    for idx in batches:
        f, t, r = batch_features(model, [examples[i] for i in idx], pad_id, device)
        feats.append(f)
        targets.append(t)
        seqs.append(torch.as_tensor(idx, device=device)[r])
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    feats, targets, seq = torch.cat(feats), torch.cat(targets), torch.cat(seqs)
    perm = torch.sort(seq, stable=True).indices  # item order, positions in order within an item
    return FeatureSet(
        feats[perm].float().contiguous(),
        targets[perm].long().contiguous(),
        seq[perm].long().contiguous(),
        torch.as_tensor(list(item_label), dtype=torch.float32, device=device),
        int(n_forget),
        len(examples) - int(n_forget),
    )


# --------------------------------------------------------------------------- fingerprints and the cache


_FILE_HASHES: dict[tuple, str] = {}


def _weights_state_hash(model) -> str:
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        t = p.detach()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.contiguous().view(-1).view(torch.uint8).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _weights_file_stats(model) -> str:
    name = str(getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", ""))
    path = Path(name)
    files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")) if path.is_dir() else []
    commit = getattr(model.config, "_commit_hash", None)
    if not files and name and commit:  # loaded from the hub: the id and the revision name the weights
        return fingerprint(name, commit)
    if not files:
        raise ModelError(
            f"cannot fingerprint this {type(model).__name__} (its weights are over 2 GB and it was not loaded "
            "from a local directory); pass cache=False (--no-cache) to skip the feature cache."
        )
    return fingerprint(str(path.resolve()), [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files])


def model_fingerprint(model) -> str:
    """Hash of a model's config and weights: the bytes of every parameter; above 2 GB of weights,
    the weight files' names, sizes and modification times (or the hub id and revision)."""
    cfg = model.config.to_dict() if hasattr(model.config, "to_dict") else {}
    for volatile in ("_name_or_path", "transformers_version", "name_or_path"):
        cfg.pop(volatile, None)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    weights = _weights_state_hash(model) if size <= _STATE_HASH_LIMIT else _weights_file_stats(model)
    return fingerprint(type(model).__name__, cfg, weights)


def data_fingerprint(examples: Sequence[QAExample], n_forget: int) -> str:
    h = hashlib.sha256(f"{n_forget}:{len(examples)}".encode())
    for e in examples:
        h.update(json.dumps([e.prompt_len, e.input_ids, e.labels], separators=(",", ":")).encode())
    return h.hexdigest()[:16]


def feature_key(model, examples: Sequence[QAExample], n_forget: int) -> str:
    from t3unlearn.t3.config import LAYER, POOLING

    settings = {"version": FEATURE_VERSION, "pooling": POOLING, "layer": LAYER, "dtype": "float32"}
    return fingerprint(model_fingerprint(model), data_fingerprint(examples, n_forget), settings)


def feature_dir(key: str) -> Path:
    return cache_home() / "features" / key


def _readable(path: Path) -> None:
    """Give a file written by safetensors (mode 0600) the usual permissions (0666 minus umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def save_features(fs: FeatureSet, key: str) -> Path:
    from safetensors.torch import save_file

    target = feature_dir(key)
    with atomic_dir(target) as tmp:
        tensors = {
            "feats": fs.feats.detach().cpu().contiguous(),
            "targets": fs.targets.detach().cpu().contiguous(),
            "seq": fs.seq.detach().cpu().contiguous(),
            "item_label": fs.item_label.detach().cpu().contiguous(),
        }
        meta = {"n_forget": str(fs.n_forget), "n_retain": str(fs.n_retain), "key": key, "version": str(FEATURE_VERSION)}
        save_file(tensors, str(Path(tmp) / "features.safetensors"), metadata=meta)
        _readable(Path(tmp) / "features.safetensors")
    return target


def load_features(key: str, device=None) -> FeatureSet | None:
    """The cached feature set for ``key``, or ``None`` when absent or unreadable (then recomputed)."""
    from safetensors import safe_open

    path = feature_dir(key) / "features.safetensors"
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            tensors = {name: fh.get_tensor(name) for name in ("feats", "targets", "seq", "item_label")}
        fs = FeatureSet(
            tensors["feats"], tensors["targets"], tensors["seq"], tensors["item_label"],
            int(meta["n_forget"]), int(meta["n_retain"]), key, True,
        )
    except Exception:  # noqa: BLE001 - a corrupt cache entry is recomputed, never trusted
        return None
    if fs.item_label.numel() != fs.n_items or fs.feats.shape[0] != fs.targets.shape[0]:
        return None
    return fs.to(device) if device is not None else fs


def extract_features(
    model,
    examples: Sequence[QAExample],
    n_forget: int,
    *,
    pad_id: int,
    cache: bool = True,
    batch_size: int = 32,
    max_tokens: int | None = None,
    device=None,
    progress: bool = False,
) -> FeatureSet:
    """Features of forget (``examples[:n_forget]``) and retain items: from the cache, or computed once."""
    device = device or next(model.parameters()).device
    labels = [0.0] * n_forget + [1.0] * (len(examples) - n_forget)
    key = feature_key(model, examples, n_forget) if cache and os.environ.get("T3UNLEARN_NO_FEATURE_CACHE") != "1" else ""
    if key:
        fs = load_features(key, device)
        if fs is not None:
            return fs
    fs = compute_features(
        model, examples, labels, n_forget, pad_id=pad_id, batch_size=batch_size, max_tokens=max_tokens,
        device=device, progress=progress,
    )
    if key:
        save_features(fs, key)
        fs.key = key
    return fs
