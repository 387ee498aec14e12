"""Deletion requests over time: a head records the requests it covers, and takes new ones or withdrawals.

A T3 head is trained on a union of *requests* (forget sets) against one retain set. Its ``t3_config.json``
records, in order, every request it covers (:data:`T3Config.requests`) and the retain set
(:data:`T3Config.retain_set`)::

    {"id": "r2", "items": 40, "tokens": 612, "added": "2026-03-02T10:14:07Z",
     "fingerprint": "<sha256 of the items' questions and answers>", "feature_key": "<feature cache key>",
     "source": "<where the items were read from, or null>", "update": "retrain"}

:func:`update` adds requests and withdraws others. The base never runs over a request twice: each data set's
features are cached on their own (:mod:`t3unlearn.t3.feature_cache`, keyed by the base and that set's token ids),
so a new request extracts only its own items, and the union is assembled from the cached parts. The head is
then

- ``retrain`` (the default): trained from scratch on the union, with the head's recorded settings and seed.
  The result does not depend on the path that led to it: a head after adding r1, r2, r3 and withdrawing r2
  is the head trained on r1, r3 -- the same bytes. Training time grows with the union (one epoch is one pass
  over every forget item).
- ``finetune``: the current head trained further on the new requests only (each new forget item paired with
  a replayed earlier forget item and retain items); time grows with the new items only, but the head now
  depends on the order of updates (recorded in ``training["finetuned"]``). A withdrawal always retrains.

A request whose features are no longer cached is read again from its recorded ``source`` and checked against
its ``feature_key`` (same base, same token ids) before use.

A calibrated head (:func:`t3unlearn.t3.calibrate.calibrate`) records which requests its guidance was chosen
for (``calibration["requests"]``). An update keeps that guidance and that record, so
:func:`calibration_outdated` can say when the head now covers other requests; :func:`request_items` reads the
requests' items again (from their recorded sources) to calibrate on the union.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from t3unlearn.errors import DataError, ModelError, T3Error
from t3unlearn.t3.request_sets import (DataSet, stored_part, check_id, check_new_items, check_retain_items, gather_parts,
                                      now, read_again)

UPDATES = ("retrain", "finetune")


# --------------------------------------------------------------------------- fine-tuning a head


def finetune_head(head, fs, new_items: torch.Tensor, cfg, *, seed: int, device=None, progress: bool = False):
    """Train ``head`` further on the forget items ``new_items`` of ``fs`` (ids < ``fs.n_forget``).

    The recipe of :func:`~t3unlearn.t3.train.train_head`, started from ``head`` and over the new items only:
    an epoch is one pass over the new forget items in random order; each is paired with a replayed earlier
    forget item (when there are any), and each forget item with a random retain item; AdamW with a fresh
    state, ``cfg.warmup_epochs`` of linear warm-up, ``cfg.epochs`` epochs. Returns ``(head, epoch losses)``.
    """
    from t3unlearn.t3.train import CachedProvider, _threads_for, head_loss_and_grads, head_on_fused_device

    device = torch.device(device or fs.feats.device)
    provider = CachedProvider(fs)
    new_items = new_items.to("cpu").long()
    is_new = torch.zeros(fs.n_forget, dtype=torch.bool)
    is_new[new_items] = True
    old = torch.nonzero(~is_new).flatten()
    n_new, n_old, n_retain = new_items.numel(), old.numel(), fs.n_retain
    if n_new < 1:
        raise T3Error("fine-tuning needs at least one new forget item.")
    gen = torch.Generator().manual_seed(int(seed))
    b = cfg.batch_size
    steps_per_epoch = math.ceil(n_new / b)
    warmup = (cfg.warmup_epochs or 0) * steps_per_epoch
    head = head.to(device).train()
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=head_on_fused_device(device))
    history: list[float] = []
    step = 0
    grad_state: dict = {}
    from t3unlearn.progress import progress as progress_bar

    with progress_bar(total=cfg.epochs, desc="head fine-tune", unit="epoch", enabled=progress) as bar, \
            _threads_for(device, 2 * 2 * b * 64 * head.in_features * head.hidden):
        for _ in range(cfg.epochs):
            forget = new_items[torch.randperm(n_new, generator=gen)]
            if n_old:
                replay = old[torch.randperm(n_old, generator=gen)[:n_new]] if n_old >= n_new else old[torch.randint(n_old, (n_new,), generator=gen)]
            n_partners = n_new * (2 if n_old else 1)
            if n_retain >= n_partners:
                retain = torch.randperm(n_retain, generator=gen)[:n_partners] + fs.n_forget
            else:
                retain = torch.randint(n_retain, (n_partners,), generator=gen) + fs.n_forget
            total = torch.zeros((), device=device)
            for start in range(0, n_new, b):
                sl = slice(start, start + b)
                parts = [forget[sl]] + ([replay[sl]] if n_old else [])
                k = sum(p.numel() for p in parts)
                r0 = start * (2 if n_old else 1)
                items = torch.cat(parts + [retain[r0 : r0 + k]])
                feats, targets, labels = provider.batch(items)
                loss = head_loss_and_grads(head, feats, targets, labels, grad_state)
                step += 1
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * min(1.0, step / warmup) if warmup else cfg.lr
                opt.step()
                total += loss.detach()
            history.append(float(total) / steps_per_epoch)
            bar.update(1)
    return head.eval(), history


# --------------------------------------------------------------------------- the head's requests


def requests_of(head) -> list[dict]:
    """The request records of a head (a directory or a loaded :class:`T3ForCausalLM`), in order."""
    from t3unlearn.t3.model import T3Config

    cfg = head.config if hasattr(head, "config") and hasattr(head, "head") else T3Config.load(head)
    return list(cfg.requests or [])


def format_requests(records: Sequence[dict], retain: dict | None = None) -> str:
    """A small table of a head's requests."""
    lines = [f"{'request':<14}{'items':>7}{'tokens':>8}  {'added':<21}{'fingerprint':<18}update    source"]
    for r in records:
        lines.append(f"{r.get('id', '?'):<14}{r.get('items', 0):>7}{r.get('tokens', 0):>8}  {r.get('added', ''):<21}"
                     f"{(r.get('fingerprint') or '')[:16]:<18}{r.get('update', ''):<10}{r.get('source') or '(in memory)'}")
    if retain:
        lines.append(f"{'(retain set)':<14}{retain.get('items', 0):>7}{retain.get('tokens', 0):>8}  {retain.get('added', ''):<21}"
                     f"{(retain.get('fingerprint') or '')[:16]:<18}{'':<10}{retain.get('source') or '(in memory)'}")
    return "\n".join(lines)


def _parse_add(add) -> list[tuple[str | None, Any]]:
    """``add`` items as ``(id or None, data)``: a data source, a dataset, a ``(id, data)`` pair, or ``"ID=SOURCE"``."""
    out = []
    for item in add:
        if isinstance(item, tuple) and len(item) == 2:
            out.append((check_id(item[0]), item[1]))
        elif isinstance(item, str) and "=" in item and not Path(item).exists():
            rid, _, src = item.partition("=")
            out.append((check_id(rid), src))
        else:
            out.append((None, item))
    return out


def _next_id(taken: set[str]) -> str:
    n = 1
    while f"r{n}" in taken:
        n += 1
    return f"r{n}"


def _train_config(cfg_training: dict):
    from dataclasses import fields

    from t3unlearn.t3.config import TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in (cfg_training or {}).items() if k in names}).validate()


@dataclass
class _Union:
    """The data sets of an updated head and their features: the requests it keeps, the new ones, the retain set."""

    sets: list  # every request the head now covers, kept ones first
    new: list  # the new requests
    new_parts: list
    parts: list  # one feature part per set, the retain set's last
    retain_set: DataSet
    fs: Any  # the assembled FeatureSet
    seconds: float


def _current_head(head):
    """``(config, head module or None, base model or None, name for messages)`` of a head directory or a loaded
    :class:`~t3unlearn.t3.model.T3ForCausalLM`."""
    from t3unlearn.t3.model import T3Config

    if hasattr(head, "config") and hasattr(head, "head"):
        return head.config, head.head, head.base, "the model's head"
    return T3Config.load(head), None, None, str(head)


def _check_changes(records: list[dict], remove: Sequence[str], adds: list, retain, head_name: str) -> list[str]:
    """The ids to withdraw, checked: the head records requests, the ids are its own, something changes and
    something is left to forget."""
    if not records:
        raise T3Error(f"{head_name} records no deletion requests (it was made before heads recorded them); "
                      "re-create it with 't3unlearn unlearn' from its forget set, then update it.")
    remove = [check_id(r) for r in remove]
    ids = [r["id"] for r in records]
    unknown = [r for r in remove if r not in ids]
    if unknown:
        raise T3Error(f"{head_name} has no request {unknown[0]}; its requests are {', '.join(ids)}.")
    if not adds and not remove and retain is None:
        raise T3Error("nothing to do: give requests to add (--add-forget) or to withdraw (--remove-forget).")
    if len(set(remove)) == len(ids) and not adds:
        raise T3Error(f"withdrawing every request ({', '.join(ids)}) leaves nothing to forget; delete the head instead.")
    return remove


def _base_of(head, old_cfg, model, tokenizer, base_in_head, device):
    """``(model, tokenizer, device)``: the base the head was trained on (default: the one it records), in eval mode."""
    from t3unlearn.t3.model import T3ForCausalLM, tokenizer_hash

    if model is None:
        model = base_in_head if base_in_head is not None else T3ForCausalLM.base_model_path(head, must_exist=True)
    if isinstance(model, (str, Path)):
        from t3unlearn.lm import load_base, load_tokenizer

        tokenizer = tokenizer or load_tokenizer(str(model))
        model = load_base(str(model), device=device)
    if tokenizer is None:
        raise T3Error("update needs the base's tokenizer (or give the base as a path).")
    if old_cfg.tokenizer_hash and tokenizer_hash(tokenizer) != old_cfg.tokenizer_hash:
        raise ModelError("this tokenizer's vocabulary differs from the one the head was trained with; use the base's tokenizer.")
    model.eval()
    return model, tokenizer, torch.device(device) if device is not None else next(model.parameters()).device


def _new_requests(adds: list, records: list[dict], remove: list[str], fmt) -> list[DataSet]:
    """The requests to add, loaded and encoded, each with a fresh id and items no kept request already holds."""
    taken = {r["id"] for r in records}
    new: list[DataSet] = []
    for rid, data in adds:
        rid = rid or _next_id(taken)
        if rid in taken:
            raise T3Error(f"request id {rid} is already used by this head (ids must be unique, even after a withdrawal).")
        taken.add(rid)
        s = DataSet.load(data, what=f"request {rid}", rid=rid).encode(fmt)
        same = [r["id"] for r in records if r.get("fingerprint") == s.fingerprint and r["id"] not in remove]
        if same:
            raise T3Error(f"request {rid} holds exactly the items of request {same[0]}, which the head already covers.")
        new.append(s)
    return new


def _gather(model, old_cfg, records, remove, adds, retain, fmt, head_name: str, device, **kw) -> _Union:
    """Features: cached parts for everything already seen, one forward pass over the new items only."""
    from t3unlearn.t3.feature_cache import assemble, prompt_hashes

    t0 = time.perf_counter()
    kept = [stored_part(model, r, rid=r["id"], fmt=fmt, device=device, **kw) for r in records if r["id"] not in remove]
    kept_hashes = [(s.id, p.prompts) for s, p in kept]
    if retain is not None:
        retain_set = DataSet.load(retain, what="retain set").encode(fmt)
        check_retain_items(retain_set, prompt_hashes(retain_set.examples), kept_hashes)
        retain_part = None
    elif old_cfg.retain_set:
        retain_set, retain_part = stored_part(model, old_cfg.retain_set, rid=None, fmt=fmt, device=device, **kw)
    else:
        raise T3Error(f"{head_name} records no retain set; give one (--retain).")
    new = _new_requests(adds, records, remove, fmt)
    check_new_items([(s, prompt_hashes(s.examples)) for s in new], kept_hashes,
                    prompt_hashes(retain_set.examples) if retain_part is None else retain_part.prompts)
    if retain_part is None:
        retain_part = gather_parts(model, [retain_set], pad_id=fmt.pad_id, device=device, **kw)[0]
    new_parts = gather_parts(model, new, pad_id=fmt.pad_id, device=device, **kw)
    parts = [p for _, p in kept] + new_parts + [retain_part]
    fs = assemble(parts[:-1], parts[-1], device)
    return _Union([s for s, _ in kept] + new, new, new_parts, parts, retain_set, fs, time.perf_counter() - t0)


def _train(u: _Union, head, old_cfg, old_head, tcfg, training: dict, n_records: int, retrain: bool, V: int, device,
           progress: bool):
    """``(head, epoch losses, the requests it was fine-tuned on)``: retrained on the union, or the current head
    fine-tuned on the new items."""
    from t3unlearn.t3.model import T3ForCausalLM
    from t3unlearn.t3.train import CachedProvider, train_head

    fs = u.fs
    if retrain:
        new_head, history = train_head(CachedProvider(fs), fs.n_forget, fs.n_retain, fs.dim, V, tcfg, device=device, progress=progress)
        return new_head, history, []
    from copy import deepcopy

    start_head = deepcopy(old_head) if old_head is not None else T3ForCausalLM._load_head(head, old_cfg)
    n_old = sum(p.n_items for p in u.parts[: len(u.sets) - len(u.new)])
    new_items = torch.arange(n_old, fs.n_forget)
    seed = int(tcfg.seed) * 1_000_003 + n_records + len(u.new)  # deterministic, different for each update
    new_head, history = finetune_head(start_head.float(), fs, new_items, tcfg, seed=seed, device=device, progress=progress)
    return new_head, history, list(training.get("finetuned") or []) + [s.id for s in u.new]


def _report(u: _Union, history, seconds_train: float, retrain: bool, remove: list[str], wall: float, head) -> dict:
    from t3unlearn.t3.train import evaluate_head

    fs = u.fs
    report = evaluate_head(head, fs)
    report.update({
        "final_epoch_loss": history[-1], "features_s": round(u.seconds, 4), "train_s": round(seconds_train, 4),
        "features_cached": fs.from_cache, "feature_key": fs.key, "feature_tokens": int(fs.targets.numel()),
        "mode": "retrain" if retrain else "finetune", "added": [s.id for s in u.new], "removed": list(remove),
        "requests": [s.id for s in u.sets], "new_items": sum(len(s.examples) for s in u.new),
        "new_tokens": sum(p.n_tokens for p in u.new_parts),
        "extracted": [s.id or "retain" for s, p in zip([*u.sets, u.retain_set], u.parts) if not p.from_cache],
        "new_features_s": round(sum(p.seconds for p in u.new_parts), 4),
        "wall_s": round(wall, 4),
    })
    return report


def update(
    head,
    add: Sequence = (),
    remove: Sequence[str] = (),
    *,
    model=None,
    tokenizer=None,
    retain=None,
    mode: str = "retrain",
    cache: bool = True,
    cache_dir=None,
    feature_batch_size: int = 32,
    shard_mb: float | None = None,
    device=None,
    progress: bool = False,
    **guidance,
):
    """Add deletion requests to a T3 head and/or withdraw some; returns an :class:`~t3unlearn.results.UnlearnResult` (``model, report = update(...)`` unpacks it).

    ``head``: a head directory (or a loaded :class:`~t3unlearn.t3.model.T3ForCausalLM`). ``add``: data sources
    or datasets, each a new request (``"ID=SOURCE"`` or ``(id, data)`` to name it; default ids r1, r2, ...).
    ``remove``: ids of recorded requests to withdraw. ``model``: the base (a model, or a name/path; default:
    the base the head records; it must be the base it was trained on); ``tokenizer`` defaults to the base's.
    ``retain``: a new retain set (default: the recorded one). ``mode``: ``retrain`` or ``finetune`` (see the
    module doc; a withdrawal or a new retain set always retrains). ``guidance``: T3 guidance knobs
    (``temperature=...``) for the updated head (default: the head's). Save the result with ``save_pretrained``.
    """
    from t3unlearn.data import QAFormatter
    from t3unlearn.t3.config import Guidance
    from t3unlearn.t3.feature_cache import cache_enabled, model_fingerprint
    from t3unlearn.t3.features import vocab_size_of
    from t3unlearn.t3.head import word_pieces
    from t3unlearn.t3.model import T3Config, T3ForCausalLM
    from t3unlearn.t3.train import t3_result

    if mode not in UPDATES:
        raise T3Error(f"update mode must be one of {', '.join(UPDATES)}, not {mode!r}.")
    t_start = time.perf_counter()
    old_cfg, old_head, base_in_head, head_name = _current_head(head)
    records = list(old_cfg.requests or [])
    adds = _parse_add(add)
    remove = _check_changes(records, remove, adds, retain, head_name)
    g = Guidance().replace(**{**asdict(old_cfg.guidance), **{k: v for k, v in guidance.items() if v is not None}})

    # the base, its tokenizer and the formatting the head was trained with
    model, tokenizer, device = _base_of(head, old_cfg, model, tokenizer, base_in_head, device)
    training = dict(old_cfg.training or {})
    fmt = QAFormatter(tokenizer, max_length=int(training.get("max_length", 512)), template=training.get("template", "auto"))
    tcfg = _train_config(training)
    model_fp = model_fingerprint(model) if cache_enabled(cache) or training.get("base_fingerprint") else None
    if model_fp and training.get("base_fingerprint") and model_fp != training["base_fingerprint"]:
        raise ModelError(f"{head_name} was trained on another base (fingerprint {training['base_fingerprint']}, this one "
                         f"{model_fp}); give the base it was trained on ({old_cfg.base_model_name_or_path}).")

    u = _gather(model, old_cfg, records, remove, adds, retain, fmt, head_name, device, model_fp=model_fp, cache=cache,
                cache_dir=cache_dir, batch_size=feature_batch_size, shard_mb=shard_mb, progress=progress)
    stamp = now()
    for s, p in zip(u.new, u.new_parts):
        s.make_record(p.key, added=stamp, update=mode)
    if retain is not None:
        u.retain_set.make_record(u.parts[-1].key, added=stamp)

    retrain = mode == "retrain" or bool(remove) or retain is not None
    t1 = time.perf_counter()
    new_head, history, finetuned = _train(u, head, old_cfg, old_head, tcfg, training, len(records), retrain,
                                          vocab_size_of(model), device, progress)
    new_head.fit_support(u.fs.feats).set_pieces(word_pieces(fmt.tokenizer, vocab_size_of(model)))
    report = _report(u, history, time.perf_counter() - t1, retrain, remove, time.perf_counter() - t_start, new_head)
    training.update({"n_forget": u.fs.n_forget, "n_retain": u.fs.n_retain, "finetuned": finetuned or None,
                     "base_fingerprint": model_fp or training.get("base_fingerprint")})
    cfg = T3Config(**{k: getattr(old_cfg, k) for k in T3Config.FILE_FIELDS})
    cfg.training = training
    cfg.metrics = {k: report[k] for k in ("forget", "retain", "final_epoch_loss")}
    cfg.requests = [s.record for s in u.sets]
    cfg.retain_set = u.retain_set.record
    if old_cfg.calibration:  # the guidance stays; the record says which requests it was chosen for
        cfg.calibration = {**old_cfg.calibration, "requests": list(old_cfg.calibration.get("requests", [r["id"] for r in records]))}
    cfg.set_guidance(g)
    t3 = T3ForCausalLM(cfg, model, new_head).eval()
    return t3_result(t3, tokenizer, report, time.perf_counter() - t_start, new_head)


def request_ids(cfg) -> list[str]:
    """The ids of the requests a head's config records, in order."""
    return [r.get("id", "?") for r in (cfg.requests or [])]


def calibration_outdated(cfg) -> str | None:
    """Why the head's calibrated guidance no longer fits it, or None: calibrated for requests other than the
    ones it now covers (after an update), say. A head calibrated before calibrations recorded their requests,
    and never updated since, is taken as current."""
    cal = cfg.calibration
    if not cal:
        return None
    chosen = (cal.get("chosen") or {}).get("label")
    if chosen and chosen != cfg.guidance.label():
        return f"its guidance ({cfg.guidance.label()}) is not the calibrated one ({chosen})"
    if cal.get("requests") is None or cfg.requests is None:
        return None
    then, current = list(cal["requests"]), request_ids(cfg)
    if then == current:
        return None
    return (f"its guidance was calibrated for request(s) {', '.join(then) or 'none'}; "
            f"it now covers {', '.join(current) or 'none'}")


def request_items(records: Sequence[dict]):
    """The items of the recorded requests (``T3Config.requests``), read again from their recorded sources and
    checked against the records' fingerprints, as one ``datasets.Dataset`` (question, answer): the forget set
    of the head as it is now, to calibrate on after an update. TOFU's ``paraphrased_answer`` and
    ``perturbed_answer`` are kept where every request's source has them (the truth ratios are scored on them)."""
    from datasets import Dataset

    from t3unlearn.data import load_qa

    if not records:
        raise T3Error("the head records no deletion requests; give the forget set it was trained on (--forget).")
    columns: dict[str, list | None] = {"question": [], "answer": [], "paraphrased_answer": [], "perturbed_answer": []}
    for rec in records:
        rid = rec.get("id", "?")
        ds = read_again(rec, rid=rid, name=f"request {rid}", why=f"to calibrate on request {rid},",
                        remedy="give the head's forget set yourself (--forget)")
        columns["question"] += ds.questions
        columns["answer"] += ds.answers
        if columns["perturbed_answer"] is not None or columns["paraphrased_answer"] is not None:
            full = load_qa(rec["source"], what=f"request {rid}")  # read_again checked it holds the recorded items
            for c in ("paraphrased_answer", "perturbed_answer"):
                columns[c] = columns[c] + list(full[c]) if columns[c] is not None and c in full.column_names else None
    return Dataset.from_dict({c: v for c, v in columns.items() if v is not None})


def split_requests(ds, n: int, *, by: str = "author") -> list:
    """Cut a forget set into ``n`` requests of whole authors, in order: by its ``by`` column when it has one
    (authors in order of appearance, ``len(authors) / n`` per request), else into ``n`` equal contiguous runs
    (TOFU's configs list each author's items together). Returns ``datasets.Dataset`` selections."""
    if n < 1:
        raise T3Error(f"the number of requests must be >= 1, not {n}.")
    if by in ds.column_names:
        authors = list(dict.fromkeys(ds[by]))
        if len(authors) % n:
            raise DataError(f"{len(authors)} authors cannot be split into {n} equal requests; choose a divisor of {len(authors)}.")
        per = len(authors) // n
        col = ds[by]
        groups = [set(authors[i * per : (i + 1) * per]) for i in range(n)]
        return [ds.select([j for j, a in enumerate(col) if a in g]) for g in groups]
    if len(ds) % n:
        raise DataError(f"{len(ds)} items cannot be split into {n} equal requests; choose a divisor of {len(ds)}.")
    per = len(ds) // n
    return [ds.select(range(i * per, (i + 1) * per)) for i in range(n)]
