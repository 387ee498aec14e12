"""One trainer and one data pipeline for every fine-tuning baseline.

Data: questions and answers are tokenized with :class:`t3unlearn.data.QAFormatter` (chat
template or the plain ``Question: .. Answer:`` template; labels ``-100`` on the prompt, EOS
appended). An epoch is one pass over the forget set in a seeded random order; each forget
item is paired with a retain item drawn at random (and, for IdkDPO, with a random "I don't
know" answer to the same question). Retrain passes over the retain set instead.

Optimization: AdamW (weight decay), linear schedule with warm-up, gradient clipping,
effective batch = ``batch_size * grad_accum``. Everything random is drawn from the seed, so a
run is deterministic on CPU for a given seed.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

from t3unlearn.errors import T3Error

DEFAULT_IDK = [
    "I don't know.",
    "I'm not sure.",
    "I have no information about that.",
    "That is something I can't answer.",
    "I'm afraid I don't know the answer to that.",
]


@dataclass
class TrainConfig:
    """Optimization settings shared by every fine-tuning baseline (spec defaults are for 8B models)."""

    lr: float = 1e-5
    weight_decay: float = 0.01
    epochs: int = 10
    batch_size: int = 8  # items per forward pass
    grad_accum: int = 4  # effective batch = batch_size * grad_accum
    warmup_epochs: float = 1.0
    max_grad_norm: float | None = 1.0
    max_length: int = 256
    template: str = "auto"
    seed: int = 0
    max_steps: int | None = None  # stop after this many optimizer steps (tests, smoke runs)

    @classmethod
    def from_dict(cls, d: dict | None) -> "TrainConfig":
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise T3Error(f"unknown training setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.lr <= 0:
            raise T3Error(f"lr must be > 0, not {self.lr}.")
        if self.epochs < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise T3Error("epochs, batch_size and grad_accum must all be >= 1.")
        if self.warmup_epochs < 0:
            raise T3Error("warmup_epochs must be >= 0.")

    def to_dict(self) -> dict:
        return asdict(self)


def as_rows(data, what: str) -> list[tuple[str, str]]:
    """(question, answer) pairs from a ``datasets.Dataset``, a list of dicts, or a list of pairs."""
    if data is None:
        raise T3Error(f"the {what} set is missing.")
    if hasattr(data, "column_names"):
        rows = list(zip(data["question"], data["answer"]))
    else:
        rows = [(d["question"], d["answer"]) if isinstance(d, dict) else (d[0], d[1]) for d in data]
    if not rows:
        raise T3Error(f"the {what} set is empty; it needs at least one question/answer item.")
    return rows


def trainable_parameters(model, method, params: dict) -> list[tuple[str, Any]]:
    """Freeze what the method does not train; return the (name, parameter) pairs it trains."""
    names = set(method.trainable(model, params)) if method.trainable else None
    out = []
    for name, p in model.named_parameters():
        train = names is None or name in names
        p.requires_grad_(train)
        if train:
            out.append((name, p))
    return out


def linear_warmup(step: int, warmup: int, total: int) -> float:
    """LR multiplier: 0 -> 1 over ``warmup`` steps, then linearly down to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))


class PairedData:
    """Tokenized forget / retain (/ idk) items and the seeded per-epoch pairing."""

    def __init__(self, formatter, forget, retain, *, idk: Sequence[str] | None = None, mode: str = "paired"):
        self.formatter = formatter
        self.mode = mode
        self.forget_rows = as_rows(forget, "forget") if mode == "paired" else []
        self.retain_rows = as_rows(retain, "retain")
        self.forget = formatter.encode_many(*zip(*self.forget_rows)) if self.forget_rows else []
        self.retain = formatter.encode_many(*zip(*self.retain_rows))
        self.idk = list(idk) if idk else None

    def __len__(self) -> int:
        return len(self.forget) if self.mode == "paired" else len(self.retain)

    def epoch(self, rng: random.Random, batch_size: int):
        """Yield batches ``{"forget", "retain"[, "idk"]}`` of collated tensors for one epoch."""
        from t3unlearn.data import collate

        pad = self.formatter.pad_id
        order = list(range(len(self)))
        rng.shuffle(order)
        partners = [rng.randrange(len(self.retain)) for _ in order]
        idk_pick = [rng.randrange(len(self.idk)) for _ in order] if self.idk else None
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            if self.mode == "retain":
                yield {"retain": collate([self.retain[i] for i in idx], pad)}
                continue
            batch = {
                "forget": collate([self.forget[i] for i in idx], pad),
                "retain": collate([self.retain[partners[start + k]] for k in range(len(idx))], pad),
            }
            if idk_pick is not None:
                exs = [self.formatter.encode(self.forget_rows[i][0], self.idk[idk_pick[start + k]]) for k, i in enumerate(idx)]
                batch["idk"] = collate(exs, pad)
            yield batch


def make_reference(model):
    """A frozen in-memory copy of the starting model (only for methods that need one)."""
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


def _to(batch: dict, device) -> dict:
    return {k: {kk: vv.to(device) for kk, vv in v.items()} for k, v in batch.items()}


def train(
    method,
    model,
    tokenizer,
    forget,
    retain,
    *,
    params: dict | None = None,
    config: TrainConfig | dict | None = None,
    idk: Sequence[str] | None = None,
    progress: bool = True,
) -> dict:
    """Fine-tune ``model`` in place with a baseline's loss; return a record of the run.

    ``method``: a name or :class:`~t3unlearn.baselines.methods.Method`; ``params`` override
    the method's defaults; ``config`` the optimization settings (:class:`TrainConfig`).
    The record holds ``steps``, ``trainable_params``, ``reference_model`` (whether a frozen
    copy was made), ``history`` (per-step logs) and ``train_seconds``.
    """
    import torch

    from t3unlearn.baselines.methods import Context, get_method
    from t3unlearn.data import QAFormatter
    from t3unlearn.io import set_seed

    method = get_method(method) if isinstance(method, str) else method
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    params = {**method.defaults, **(params or {})}
    unknown = sorted(set(params) - set(method.defaults))
    if unknown:
        raise T3Error(f"{method.title} has no setting(s) {', '.join(unknown)}; it takes {', '.join(method.defaults) or 'none'}.")
    if method.uses_idk and not idk:
        idk = DEFAULT_IDK
    set_seed(cfg.seed)
    t0 = time.perf_counter()

    formatter = QAFormatter(tokenizer, max_length=cfg.max_length, template=cfg.template)
    data = PairedData(formatter, forget, retain, idk=idk if method.uses_idk else None, mode=method.data)

    ref = make_reference(model) if method.needs_ref(params) else None
    ctx = Context(model=model, ref=ref, params=params, extras={"seed": cfg.seed})
    if method.setup:
        method.setup(ctx)
    named = trainable_parameters(model, method, params)
    n_trainable = sum(p.numel() for _, p in named)
    decay = [p for n, p in named if p.ndim >= 2]
    no_decay = [p for n, p in named if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr)

    micro_per_epoch = math.ceil(len(data) / cfg.batch_size)
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.grad_accum)
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: linear_warmup(s, warmup, total))

    device = next(model.parameters()).device
    rng = random.Random(cfg.seed)
    history: list[dict] = []
    model.train()
    step = 0
    from t3unlearn.progress import progress as progress_bar

    bar = progress_bar(total=total, desc=f"{method.name}", unit="step", enabled=progress)
    try:
        for epoch in range(cfg.epochs):
            if step >= total:
                break
            batches = list(data.epoch(rng, cfg.batch_size))
            for start in range(0, len(batches), cfg.grad_accum):
                if step >= total:
                    break
                group = batches[start : start + cfg.grad_accum]
                acc: dict[str, float] = {}
                for batch in group:
                    loss, logs = method.compute(ctx, _to(batch, device))
                    if not torch.isfinite(loss):
                        raise T3Error(
                            f"{method.title}: the loss became {float(loss)} at step {step}; lower the learning rate (now {cfg.lr})."
                        )
                    (loss / len(group)).backward()
                    for k, v in logs.items():
                        acc[k] = acc.get(k, 0.0) + v / len(group)
                if cfg.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_([p for _, p in named], cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                acc.update(step=step, epoch=epoch, lr=scheduler.get_last_lr()[0])
                history.append(acc)
                bar.update(1)
                bar.set_postfix(loss=f"{acc.get('loss', 0.0):.3f}")
    finally:
        bar.close()
        model.eval()
        for _, p in model.named_parameters():
            p.requires_grad_(True)
    del ref, ctx
    return {
        "method": method.name,
        "params": params,
        "config": cfg.to_dict(),
        "steps": step,
        "trainable_params": n_trainable,
        "reference_model": method.needs_ref(params),
        "history": history,
        "train_seconds": time.perf_counter() - t0,
    }
