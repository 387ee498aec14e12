"""The on-disk cache of the base's features: extracted once per data set, stored in shards.

**The cache is per data set** (a *part*: one deletion request, or the retain set), under
``cache_home()/features/<key>/`` (or any ``cache_dir``); the key hashes the base model (class,
config, dtype and weights), the token ids of that set's items (so tokenizer, template and the items
themselves) and the extraction settings. A new deletion request extracts only its own items; the
training set of a head is assembled from cached parts (:func:`assemble`): forget parts in request
order, then the retain part -- the same tensors in the same order as extracting them one after the
other. Another run with other head settings reuses every part and never touches the base.

**Parts stream to disk in shards.** A part's items are cut into contiguous ranges whose features
fill at most ``shard_mb`` MB each; the base runs over one range at a time (length-sorted batches
inside it) and the range's features are written as one safetensors file before the next begins, so
extraction memory is one shard, whatever the set's size. Shards are written atomically into
``.<key>.partial/``; an interrupted extraction resumes at the first missing shard; when all are
there, ``manifest.json`` is written and the directory is renamed to ``<key>`` in one step.
Processes started by ``accelerate launch`` (or ``torchrun``) split the shards between them
(:func:`extract_part` with ``state=accelerate.PartialState()``): data-parallel extraction.

A part stores, tokens of item 0 first, each item's tokens in position order:

- ``feats``  (N, d) float32: pooled features at answer-predicting positions;
- ``targets`` (N,) int64: the realized next token;
- ``seq``   (N,) int64: the item (within the part) each token belongs to.

The features themselves (one forward pass of the base) are computed by :mod:`t3unlearn.t3.features`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from t3unlearn.data import IGNORE_INDEX, QAExample
from t3unlearn.errors import ModelError
from t3unlearn.io import atomic_write, cache_home, fingerprint
from t3unlearn.t3.features import FeatureSet, _bar, _rows_of, hidden_size_of

FEATURE_VERSION = 2  # 2: one cache entry per data set (part), written in shards
DEFAULT_SHARD_MB = 256  # feature bytes per shard (the memory extraction holds at once)
_STATE_HASH_LIMIT = 2 * 1024**3  # bytes of weights above which the fingerprint uses file stats
MANIFEST = "manifest.json"
PLAN = "plan.json"


# --------------------------------------------------------------------------- fingerprints


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
    """Hash of a model's class, config, parameter dtypes and weights: the bytes of every parameter; above
    2 GB of weights, the weight files' names, sizes and modification times (or the hub id and revision)
    together with the dtypes they were loaded in (a bf16 and an fp32 load of the same files differ)."""
    cfg = model.config.to_dict() if hasattr(model.config, "to_dict") else {}
    for volatile in ("_name_or_path", "transformers_version", "name_or_path"):
        cfg.pop(volatile, None)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    dtypes = sorted({str(p.dtype) for p in model.parameters()})
    weights = _weights_state_hash(model) if size <= _STATE_HASH_LIMIT else _weights_file_stats(model)
    return fingerprint(type(model).__name__, cfg, dtypes, weights)


def _example_bytes(e: QAExample) -> bytes:
    return json.dumps([e.prompt_len, e.input_ids, e.labels], separators=(",", ":")).encode()


def _prompt_hash(e: QAExample) -> str:
    return hashlib.sha1(json.dumps(e.input_ids[: e.prompt_len], separators=(",", ":")).encode()).hexdigest()[:16]


def _answer_tokens(e: QAExample) -> int:
    return sum(1 for x in e.labels[1:] if x != IGNORE_INDEX)


def examples_fingerprint(examples: Sequence[QAExample]) -> str:
    """Hash of a data set's token ids (prompt length, ids and labels of every item, in order)."""
    if isinstance(examples, LazyExamples):
        return examples.fingerprint
    h = hashlib.sha256(f"{len(examples)}".encode())
    for e in examples:
        h.update(_example_bytes(e))
    return h.hexdigest()[:16]


def prompt_hashes(examples: Sequence[QAExample]) -> list[str]:
    """Per item, a short hash of its prompt's token ids: two items ask the same question (in the same format)
    exactly when these agree. Kept in each part's manifest, so a new request can be checked against the
    requests and the retain set a head already covers without reading their data again."""
    if isinstance(examples, LazyExamples):
        return list(examples.prompts)
    return [_prompt_hash(e) for e in examples]


def answer_token_counts(examples: Sequence[QAExample]) -> list[int]:
    """Per item, the number of answer-predicting positions (feature rows) it contributes."""
    if isinstance(examples, LazyExamples):
        return list(examples.answer_tokens)
    return [_answer_tokens(e) for e in examples]


class LazyExamples(Sequence):
    """A data set's items tokenized on demand, ``chunk`` items at a time, so that memory does not grow with the
    set: one pass at construction keeps only what the cache needs of every item (the fingerprint of the token
    ids, each item's number of answer tokens and its prompt hash); items are tokenized again, a chunk at a time,
    when the base runs over them. ``formatter``: a :class:`t3unlearn.data.QAFormatter`."""

    def __init__(self, formatter, questions: Sequence[str], answers: Sequence[str], *, chunk: int = 2048):
        from array import array

        self.formatter, self.questions, self.answers, self.chunk = formatter, questions, answers, max(1, int(chunk))
        n = len(questions)
        h = hashlib.sha256(f"{n}".encode())
        self.answer_tokens, self.prompts = array("q"), []
        self._cached: tuple[int, list] = (-1, [])
        for start in range(0, n, self.chunk):
            examples = self._encode(start)
            for e in examples:
                h.update(_example_bytes(e))
                self.answer_tokens.append(_answer_tokens(e))
                self.prompts.append(_prompt_hash(e))
            self._cached = (start, examples)  # the last chunk stays: a set of one chunk is tokenized once
        self.fingerprint = h.hexdigest()[:16]

    def _encode(self, start: int) -> list:
        end = min(start + self.chunk, len(self.questions))
        return self.formatter.encode_batch(list(self.questions[start:end]), list(self.answers[start:end]))

    def __len__(self) -> int:
        return len(self.questions)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        start = i - i % self.chunk
        if self._cached[0] != start:
            self._cached = (start, self._encode(start))
        return self._cached[1][i - start]


def data_fingerprint(examples: Sequence[QAExample], n_forget: int) -> str:
    """Hash of a forget + retain layout (kept for callers of the first cache format)."""
    return fingerprint(n_forget, examples_fingerprint(examples))


def part_key(model_fp: str, examples: Sequence[QAExample]) -> str:
    """The cache key of one data set's features: the base's fingerprint, the set's token ids, the settings."""
    from t3unlearn.t3.config import LAYER, POOLING

    settings = {"version": FEATURE_VERSION, "pooling": POOLING, "layer": LAYER, "dtype": "float32"}
    return fingerprint(model_fp, examples_fingerprint(examples), settings)


def feature_key(model, examples: Sequence[QAExample], n_forget: int) -> str:
    """One key for a forget + retain layout: the keys of its two parts (see :func:`extract_features`)."""
    fp = model_fingerprint(model)
    return fingerprint(part_key(fp, examples[:n_forget]), part_key(fp, examples[n_forget:]))


def feature_home(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where parts are cached: ``cache_dir``, else ``cache_home()/features``."""
    return Path(cache_dir) if cache_dir is not None else cache_home() / "features"


def feature_dir(key: str, cache_dir: str | os.PathLike | None = None) -> Path:
    return feature_home(cache_dir) / key


def _partial_dir(key: str, cache_dir=None) -> Path:
    return feature_home(cache_dir) / f".{key}.partial"


def _readable(path: Path) -> None:
    """Give a file written by safetensors (mode 0600) the usual permissions (0666 minus umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def cache_enabled(cache: bool) -> bool:
    """``cache``, unless ``$T3UNLEARN_NO_FEATURE_CACHE=1`` turns the feature cache off."""
    return bool(cache) and os.environ.get("T3UNLEARN_NO_FEATURE_CACHE") != "1"


# --------------------------------------------------------------------------- one data set: a part


@dataclass
class Part:
    """Features of one data set (a deletion request, or the retain set), items in order."""

    feats: torch.Tensor  # (N, d) float32
    targets: torch.Tensor  # (N,) int64
    seq: torch.Tensor  # (N,) int64, item within the part
    n_items: int
    key: str = ""
    from_cache: bool = False
    seconds: float = 0.0  # extraction (or loading) time
    prompts: list | None = None  # per item, a short hash of its prompt's token ids (see prompt_hashes)

    @property
    def n_tokens(self) -> int:
        return int(self.targets.numel())


def shard_plan(examples: Sequence[QAExample], dim: int, shard_mb: float = DEFAULT_SHARD_MB) -> list[tuple[int, int]]:
    """Contiguous item ranges ``[start, end)`` whose features take at most ``shard_mb`` MB each (one item at
    least): answer tokens x ``dim`` x 4 bytes."""
    if not shard_mb > 0:
        raise ModelError(f"shard size must be > 0 MB, not {shard_mb}.")
    budget = max(1, int(shard_mb * 1024 * 1024 // (4 * dim)))  # feature rows per shard
    plan, start, rows = [], 0, 0
    for i, n in enumerate(answer_token_counts(examples)):
        if i > start and rows + n > budget:
            plan.append((start, i))
            start, rows = i, 0
        rows += n
    if len(examples) > start:
        plan.append((start, len(examples)))
    return plan


def _shard_name(start: int, end: int) -> str:
    return f"shard-{start:08d}-{end:08d}.safetensors"


def _write_shard(path: Path, feats, targets, seq, start: int, key: str) -> None:
    from safetensors.torch import save

    blob = save({"feats": feats.contiguous(), "targets": targets.contiguous(), "seq": (seq - start).contiguous()},
                metadata={"key": key, "version": str(FEATURE_VERSION), "start": str(start)})
    with atomic_write(path, "wb") as fh:  # a killed run leaves whole shards only
        fh.write(blob)


def _read_shards(directory: Path, shards: Sequence[tuple[int, int]], dim: int, n_tokens: int, device=None):
    """Concatenate the shards' tensors into preallocated ``(feats, targets, seq)`` (part-local item ids)."""
    from safetensors import safe_open

    feats = torch.empty((n_tokens, dim), dtype=torch.float32)
    targets = torch.empty(n_tokens, dtype=torch.long)
    seq = torch.empty(n_tokens, dtype=torch.long)
    row = 0
    for start, end in shards:
        with safe_open(str(directory / _shard_name(start, end)), framework="pt", device="cpu") as fh:
            f, t, s = fh.get_tensor("feats"), fh.get_tensor("targets"), fh.get_tensor("seq")
        n = t.numel()
        if row + n > n_tokens or f.shape != (n, dim) or s.numel() != n:
            raise ValueError("shard sizes do not match the manifest")
        feats[row : row + n], targets[row : row + n], seq[row : row + n] = f, t, s + start
        row += n
    if row != n_tokens:
        raise ValueError("shards hold fewer tokens than the manifest says")
    if device is not None:
        feats, targets, seq = feats.to(device), targets.to(device), seq.to(device)
    return feats, targets, seq


def load_part(key: str, cache_dir=None, device=None) -> Part | None:
    """The cached part ``key``, or ``None`` when absent or unreadable (then it is extracted again)."""
    directory = feature_dir(key, cache_dir)
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return None
    t0 = time.perf_counter()
    try:
        info = json.loads(manifest.read_text(encoding="utf-8"))
        if info.get("key") != key or info.get("version") != FEATURE_VERSION:
            return None
        shards = [tuple(x) for x in info["shards"]]
        feats, targets, seq = _read_shards(directory, shards, int(info["dim"]), int(info["n_tokens"]), device)
        n_items = int(info["n_items"])
        prompts = info.get("prompts")
    except Exception:  # noqa: BLE001 - a corrupt cache entry is recomputed, never trusted
        return None
    if seq.numel() and (int(seq.max()) >= n_items or bool((seq[1:] < seq[:-1]).any())):
        return None
    return Part(feats, targets, seq, n_items, key, True, time.perf_counter() - t0, prompts)


def is_cached(key: str, cache_dir=None) -> bool:
    """Whether a finished part ``key`` is on disk (without reading it)."""
    return (feature_dir(key, cache_dir) / MANIFEST).is_file()


def _single_process():
    class _One:
        num_processes, process_index, is_main_process = 1, 0, True

        def wait_for_everyone(self):
            return None

    return _One()


def extract_part(
    model,
    examples: Sequence[QAExample],
    *,
    pad_id: int,
    cache: bool = True,
    cache_dir=None,
    model_fp: str | None = None,
    key: str | None = None,
    batch_size: int = 32,
    max_tokens: int | None = None,
    shard_mb: float = DEFAULT_SHARD_MB,
    device=None,
    progress: bool = False,
    desc: str = "features",
    state=None,
    load: bool = True,
    info: dict | None = None,
) -> Part | None:
    """Features of one data set: from the cache, or one streamed forward pass of the base (see the module doc).

    ``cache=False`` computes in memory and writes nothing. ``model_fp`` (default: :func:`model_fingerprint`)
    or ``key`` name the cache entry. ``state``: an ``accelerate.PartialState`` -- each process extracts
    its share of the shards, the main process finishes the part, every process waits for it.
    ``load=False`` returns None instead of reading the finished part back (the data-parallel command).
    ``info`` (a dict) receives ``shards`` (the part's shard count), ``assigned`` and ``computed`` (this
    process's shards, and those it actually ran: the others were on disk already).
    """
    device = device or next(model.parameters()).device
    t0 = time.perf_counter()
    if not examples:
        raise ModelError("a data set to extract features from is empty.")
    if not cache_enabled(cache):  # in memory, shard by shard as the cache would (the same batches, the same bits)
        rows = []
        with _bar(len(examples), progress, desc) as bar:
            for start, end in shard_plan(examples, hidden_size_of(model), shard_mb):
                rows.append(_rows_of(model, examples, range(start, end), pad_id=pad_id, batch_size=batch_size,
                                     max_tokens=max_tokens, device=device, bar=bar))
        feats, targets, seq = (torch.cat(x) for x in zip(*rows))
        return Part(feats, targets, seq, len(examples), "", False, time.perf_counter() - t0, prompt_hashes(examples))
    key = key or part_key(model_fp or model_fingerprint(model), examples)
    state = state or _single_process()
    computed = 0
    if info is None:
        info = {}
    info.update(shards=None, assigned=[], computed=[])
    if not is_cached(key, cache_dir):
        with _extraction_lock(key, cache_dir, state):
            if not is_cached(key, cache_dir):  # another run may have written it while this one waited
                computed = _extract_shards(info, model, examples, key, state, pad_id=pad_id, cache_dir=cache_dir,
                                           batch_size=batch_size, max_tokens=max_tokens, shard_mb=shard_mb, device=device,
                                           progress=progress, desc=desc)
    if not load:
        return None
    part = load_part(key, cache_dir, device)
    if part is None:
        raise ModelError(f"the cached features {feature_dir(key, cache_dir)} are unreadable although just written; "
                         "delete that directory and run again.")
    part.from_cache = not computed
    part.seconds = time.perf_counter() - t0
    return part


def _extraction_lock(key: str, cache_dir, state):
    """Two runs extracting the same set (two commands started at once) take turns: the second waits and reads what
    the first wrote, instead of writing shards into a directory the first is about to move. The processes of one
    data-parallel run share the work instead (no lock: they wait for each other)."""
    if state.num_processes > 1:
        return contextlib.nullcontext()
    from filelock import FileLock

    home = feature_home(cache_dir)
    home.mkdir(parents=True, exist_ok=True)
    return FileLock(str(home / f".{key}.lock"))


def _extract_shards(info, model, examples, key, state, *, pad_id, cache_dir, batch_size, max_tokens, shard_mb, device,
                    progress, desc) -> bool:
    """Write the shards of this process (and, on the main process, finish the part); how many it computed."""
    from t3unlearn.io import save_json

    final, partial = feature_dir(key, cache_dir), _partial_dir(key, cache_dir)
    dim = hidden_size_of(model)
    plan = shard_plan(examples, dim, shard_mb)
    plan_file = partial / PLAN
    if plan_file.is_file():  # resuming: keep the plan the interrupted run started with
        try:
            saved = json.loads(plan_file.read_text(encoding="utf-8"))
            if saved.get("key") == key and saved.get("n_items") == len(examples) and saved.get("dim") == dim:
                plan = [tuple(x) for x in saved["shards"]]
        except (ValueError, KeyError, TypeError):
            pass
    if state.is_main_process and not plan_file.is_file():
        save_json(plan_file, {"key": key, "n_items": len(examples), "dim": dim, "shard_mb": shard_mb, "shards": plan})
    # every process takes a contiguous block of shards; shards already on disk are skipped (resume)
    if state.num_processes > 1:
        with state.split_between_processes(list(range(len(plan)))) as mine:
            mine = list(mine)
    else:
        mine = list(range(len(plan)))
    todo = [j for j in mine if not (partial / _shard_name(*plan[j])).is_file()]
    info.update(shards=len(plan), assigned=mine, computed=list(todo))
    n_todo = sum(plan[j][1] - plan[j][0] for j in todo)
    with _bar(n_todo, progress and bool(todo), desc) as bar:
        for j in todo:
            start, end = plan[j]
            feats, targets, seq = _rows_of(model, examples, range(start, end), pad_id=pad_id, batch_size=batch_size,
                                           max_tokens=max_tokens, device=device, bar=bar, to_cpu=True)
            _write_shard(partial / _shard_name(start, end), feats, targets, seq, start, key)
            del feats, targets, seq
    state.wait_for_everyone()
    if state.is_main_process and not (final / MANIFEST).is_file():
        missing = [s for s in plan if not (partial / _shard_name(*s)).is_file()]
        for start, end in missing:  # a process that died without saying so: finish its shards here
            feats, targets, seq = _rows_of(model, examples, range(start, end), pad_id=pad_id, batch_size=batch_size,
                                           max_tokens=max_tokens, device=device, to_cpu=True)
            _write_shard(partial / _shard_name(start, end), feats, targets, seq, start, key)
            info["computed"].append(plan.index((start, end)))
        n_tokens = sum(answer_token_counts(examples))
        save_json(partial / MANIFEST, {"key": key, "version": FEATURE_VERSION, "n_items": len(examples), "n_tokens": n_tokens,
                                       "dim": dim, "shards": plan, "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                       "prompts": prompt_hashes(examples)})
        try:
            for f in partial.iterdir():
                if f.suffix == ".safetensors":
                    _readable(f)
        except FileNotFoundError:  # another process extracting the same set finished and moved it meanwhile
            if not (final / MANIFEST).is_file():
                raise
        if (final / MANIFEST).is_file():  # another run finished it meanwhile
            shutil.rmtree(partial, ignore_errors=True)
        else:
            if final.exists():  # an unreadable leftover
                shutil.rmtree(final, ignore_errors=True)
            os.replace(partial, final)
    state.wait_for_everyone()
    return len(info["computed"])


# --------------------------------------------------------------------------- the training set: parts assembled


def assemble(forget: Sequence[Part], retain: Part, device=None) -> FeatureSet:
    """Forget parts (in order), then the retain part, as one :class:`FeatureSet` (item ids renumbered)."""
    parts = [*forget, retain]
    n_tokens = sum(p.n_tokens for p in parts)
    dim = int(parts[0].feats.shape[1])
    dev = device if device is not None else parts[0].feats.device
    feats = torch.empty((n_tokens, dim), dtype=torch.float32, device=dev)
    targets = torch.empty(n_tokens, dtype=torch.long, device=dev)
    seq = torch.empty(n_tokens, dtype=torch.long, device=dev)
    row = offset = 0
    for p in parts:
        if p.feats.shape[1] != dim:
            raise ModelError("the cached feature sets have different widths; they come from different base models.")
        n = p.n_tokens
        feats[row : row + n] = p.feats
        targets[row : row + n] = p.targets
        seq[row : row + n] = p.seq.to(dev) + offset
        row += n
        offset += p.n_items
    n_forget = sum(p.n_items for p in forget)
    label = torch.cat([torch.zeros(n_forget), torch.ones(retain.n_items)]).to(dev)
    key = fingerprint(*[p.key for p in parts]) if all(p.key for p in parts) else ""
    return FeatureSet(feats, targets, seq, label, n_forget, retain.n_items, key, all(p.from_cache for p in parts))


def extract_features(
    model,
    examples: Sequence[QAExample],
    n_forget: int,
    *,
    pad_id: int,
    cache: bool = True,
    cache_dir=None,
    batch_size: int = 32,
    max_tokens: int | None = None,
    shard_mb: float = DEFAULT_SHARD_MB,
    device=None,
    progress: bool = False,
) -> FeatureSet:
    """Features of forget (``examples[:n_forget]``, one part) and retain items (another part): each from the
    cache, or extracted once (see :func:`extract_part`)."""
    device = device or next(model.parameters()).device
    fp = model_fingerprint(model) if cache_enabled(cache) else None
    kw = dict(pad_id=pad_id, cache=cache, cache_dir=cache_dir, model_fp=fp, batch_size=batch_size, max_tokens=max_tokens,
              shard_mb=shard_mb, device=device, progress=progress)
    forget = extract_part(model, examples[:n_forget], desc="forget features", **kw)
    retain = extract_part(model, examples[n_forget:], desc="retain features", **kw)
    return assemble([forget], retain, device)
