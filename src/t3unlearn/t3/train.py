"""Training the guidance head, and :func:`unlearn`: the whole T3 step in one call.

Training reads cached features (see :mod:`t3unlearn.t3.feature_cache`), never the base:

- balance: an epoch is one pass over the forget set in random order; each forget item is
  paired with one retain item drawn at random (without replacement within the epoch when the
  retain set is at least as large, else with replacement). A batch holds ``batch_size``
  forget items and their ``batch_size`` retain partners;
- loss: binary cross-entropy on the logit of the realized next token at every answer position
  (retain = 1, forget = 0), summed over the batch's tokens and divided by their number; only
  the rows of the head's last weight for those tokens are used, never all ``V`` logits;
- AdamW (``torch.optim.AdamW``, fused), linear warm-up of the learning rate over ``warmup_epochs`` epochs (default: a quarter
  of the epochs, 25 of 100 as in the paper), then constant;
- deterministic on CPU for a seed (head initialisation and pairing use their own generators).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Sequence

import torch

from t3unlearn.data import QAExample
from t3unlearn.errors import T3Error
from t3unlearn.t3.config import Guidance, TrainConfig, split_settings
from t3unlearn.t3.features import FeatureSet, batch_features
from t3unlearn.t3.head import GuidanceHead, word_pieces
from t3unlearn.results import UnlearnResult


# --------------------------------------------------------------------------- feature providers


class CachedProvider:
    """Batches of features read from a :class:`FeatureSet` (the fast path)."""

    def __init__(self, fs: FeatureSet):
        self.fs = fs
        self.counts = torch.bincount(fs.seq, minlength=fs.n_items)
        if (self.counts == 0).any():
            raise T3Error("an item has no answer tokens; every item needs a non-empty answer.")
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.span = torch.stack([self.counts, self.starts], 1)  # one gather per step for both
        self.token_label = fs.item_label.index_select(0, fs.seq)

    def batch(self, items: torch.Tensor):
        """Tokens of ``items`` in order (each item's tokens in position order)."""
        counts, starts = self.span.index_select(0, items.to(self.span.device)).unbind(1)
        offsets = torch.cumsum(counts, 0) - counts
        idx = torch.arange(int(counts.sum()), device=counts.device) + torch.repeat_interleave(starts - offsets, counts)
        fs = self.fs
        return fs.feats.index_select(0, idx), fs.targets.index_select(0, idx), self.token_label.index_select(0, idx)


class RecomputeProvider:
    """The naive way: run the frozen base over the batch's items at every step (same outputs)."""

    def __init__(self, model, examples: Sequence[QAExample], n_forget: int, pad_id: int, device=None):
        self.model, self.examples, self.n_forget, self.pad_id = model, examples, n_forget, pad_id
        self.device = device or next(model.parameters()).device

    def batch(self, items: torch.Tensor):
        items = items.tolist()
        feats, targets, rows = batch_features(self.model, [self.examples[i] for i in items], self.pad_id, self.device)
        labels = torch.tensor([0.0 if i < self.n_forget else 1.0 for i in items], device=self.device)[rows]
        return feats.clone(), targets.clone(), labels


# --------------------------------------------------------------------------- training


def head_on_fused_device(device) -> bool:
    """Whether torch has a fused AdamW for ``device`` (CPU, CUDA, MPS, XPU in torch 2.13)."""
    return torch.device(device).type in ("cpu", "cuda", "mps", "xpu")


class _threads_for:
    """On CPU, run small per-step work on one thread: thread start-up and contention cost
    more than they save on products this size (restored afterwards)."""

    def __init__(self, device, flops_per_step: float):
        self.one = torch.device(device).type == "cpu" and flops_per_step < 2e8
        self.saved = None

    def __enter__(self):
        if self.one and torch.get_num_threads() > 1:
            self.saved = torch.get_num_threads()
            torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            torch.set_num_threads(self.saved)
        return False


def head_loss_and_grads(head: GuidanceHead, feats, targets, labels, state: dict | None = None) -> torch.Tensor:
    """BCE (mean over tokens) on the realized tokens' logits; sets the head's ``.grad``.

    The identity one-layer head gets its gradients in closed form (a third fewer operations
    than autograd); other heads go through autograd. ``state`` (a dict kept across the steps
    of one training run) lets the output layer's gradient buffer be reused.
    """
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    if head.activation != "identity" or head.layers != 1:
        for p in head.parameters():
            p.grad = None
        with torch.enable_grad():
            loss = bce(head.gather(feats, targets), labels)
            loss.backward()
        return loss.detach()
    w1, w2 = head.inp.weight, head.out.weight
    with torch.no_grad():
        # the output layer's gradient lives only on the rows of the realized tokens: keep one
        # buffer and clear just the rows the previous step wrote
        grad2 = w2.grad
        if grad2 is None or grad2.shape != w2.shape or state is None or "rows" not in state:
            grad2 = torch.zeros_like(w2)
        else:
            grad2.index_fill_(0, state["rows"], 0.0)
        if state is not None:
            state["rows"] = targets
        z = feats @ w1.T  # (N, h)
        w = w2.index_select(0, targets)  # (N, h) rows of the output layer for the realized tokens
        c = (z * w).sum(1)
        loss = bce(c, labels)
        g = torch.sigmoid(c).sub_(labels).div_(c.numel()).unsqueeze(1)  # dL/dc
        w1.grad = (w.mul_(g)).T @ feats
        w2.grad = grad2.index_add_(0, targets, z.mul_(g))
    return loss


def pairing(n_forget: int, n_retain: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch: forget items in random order, each with a random retain partner (item ids)."""
    forget = torch.randperm(n_forget, generator=gen)
    if n_retain >= n_forget:
        retain = torch.randperm(n_retain, generator=gen)[:n_forget]
    else:
        retain = torch.randint(n_retain, (n_forget,), generator=gen)
    return forget, retain + n_forget


def train_head(
    provider,
    n_forget: int,
    n_retain: int,
    in_features: int,
    vocab_size: int,
    cfg: TrainConfig | None = None,
    *,
    device=None,
    progress: bool = False,
) -> tuple[GuidanceHead, list[float]]:
    """Train a :class:`GuidanceHead`; returns it and the mean loss of each epoch.

    With ``cfg.ensemble = K > 1``, K heads are trained with seeds ``seed*K`` .. ``seed*K + K - 1`` and returned
    as one (:meth:`GuidanceHead.ensemble`: the mean of their logits); the losses are the members' mean."""
    cfg = (cfg or TrainConfig()).validate()
    if n_forget < 1 or n_retain < 1:
        raise T3Error("T3 needs at least one forget item and one retain item.")
    device = torch.device(device or "cpu")
    k = cfg.ensemble
    seeds = [cfg.seed] if k == 1 else [cfg.seed * k + i for i in range(k)]
    bar = None
    if progress:
        from t3unlearn.progress import progress as progress_bar

        bar = progress_bar(total=cfg.epochs * k, desc="head" if k == 1 else f"heads (ensemble of {k})", unit="epoch")
    members, histories = [], []
    try:
        for seed in seeds:
            head, history = _train_one(provider, n_forget, n_retain, in_features, vocab_size, cfg, seed, device, bar)
            members.append(head)
            histories.append(history)
    finally:
        if bar is not None:
            bar.close()
    return GuidanceHead.ensemble(members).eval(), [sum(h) / k for h in zip(*histories)]


def _train_one(provider, n_forget, n_retain, in_features, vocab_size, cfg: TrainConfig, seed: int, device, bar):
    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's RNG
        torch.manual_seed(seed)
        head = GuidanceHead(in_features, cfg.hidden_size, vocab_size, activation=cfg.activation, layers=cfg.layers)
    head = head.to(device)
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(n_forget / cfg.batch_size)
    warmup = cfg.warmup_epochs * steps_per_epoch
    # torch's fused AdamW kernel where the device has one (CPU and CUDA do); the warm-up sets the lr per step
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=head_on_fused_device(device))
    history: list[float] = []
    step = 0
    grad_state: dict = {}
    with _threads_for(device, 2 * cfg.batch_size * 64 * in_features * cfg.hidden_size):
        for _ in range(cfg.epochs):
            forget, retain = pairing(n_forget, n_retain, gen)
            total = torch.zeros((), device=device)
            for start in range(0, n_forget, cfg.batch_size):
                items = torch.cat([forget[start : start + cfg.batch_size], retain[start : start + cfg.batch_size]])
                feats, targets, labels = provider.batch(items)
                loss = head_loss_and_grads(head, feats, targets, labels, grad_state)  # mean over the batch's tokens
                step += 1
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * min(1.0, step / warmup) if warmup else cfg.lr
                opt.step()  # the gradients stay: the closed-form path reuses their buffer
                total += loss.detach()
            history.append(float(total) / steps_per_epoch)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{history[-1]:.4f}")
    return head.eval(), history


@torch.no_grad()
def evaluate_head(head: GuidanceHead, fs: FeatureSet, *, chunk: int = 65536) -> dict:
    """Loss and accuracy of the classifier on forget and retain, per token and per sequence.

    A sequence counts as "retain" when the sum over its answer tokens of logsigmoid(c) exceeds
    the sum of logsigmoid(-c).
    """
    logits = torch.cat([head.gather(fs.feats[i : i + chunk], fs.targets[i : i + chunk]) for i in range(0, len(fs.targets), chunk)])
    y = fs.item_label[fs.seq]
    tok_loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    tok_ok = ((logits > 0).float() == y).float()
    ls_pos = torch.nn.functional.logsigmoid(logits)
    ls_neg = torch.nn.functional.logsigmoid(-logits)
    n = fs.n_items
    seq_pos = torch.zeros(n, device=logits.device).index_add_(0, fs.seq, ls_pos)
    seq_neg = torch.zeros(n, device=logits.device).index_add_(0, fs.seq, ls_neg)
    seq_ok = ((seq_pos > seq_neg).float() == fs.item_label).float()
    seq_loss = torch.where(fs.item_label > 0.5, -seq_pos, -seq_neg)  # summed over the sequence's tokens
    report = {}
    for name, value in (("forget", 0.0), ("retain", 1.0)):
        tm = y == value
        sm = fs.item_label == value
        report[name] = {
            "token_loss": float(tok_loss[tm].mean()),
            "token_acc": float(tok_ok[tm].mean()),
            "seq_loss": float(seq_loss[sm].mean()),
            "seq_acc": float(seq_ok[sm].mean()),
            "items": int(sm.sum()),
            "tokens": int(tm.sum()),
        }
    return report


def format_report(report: dict) -> str:
    """A small table of the classifier's fit."""
    lines = ["classifier      token loss  token acc   seq loss   seq acc   items  tokens"]
    for name in ("forget", "retain"):
        r = report[name]
        lines.append(
            f"  {name:<12}{r['token_loss']:>11.4f}{r['token_acc']:>11.3f}{r['seq_loss']:>11.3f}{r['seq_acc']:>10.3f}{r['items']:>8}{r['tokens']:>8}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- the whole step


T3Result = UnlearnResult  # T3's unlearn() and update() return the result type every method returns


def t3_result(t3, tokenizer, report: dict, seconds: float, head) -> UnlearnResult:
    """What T3's unlearning returns: the guided model, the tokenizer, the classifier's report and the cost (wall
    time of feature extraction + head training, peak memory, the head's parameters)."""
    from t3unlearn.results import Cost, peak_rss_mb

    cost = Cost(wall_seconds=seconds, peak_rss_mb=peak_rss_mb(), trainable_params=sum(p.numel() for p in head.parameters()))
    return UnlearnResult(model=t3, tokenizer=tokenizer, report=report, cost=cost, method="t3")


def unlearn(
    model,
    tokenizer=None,
    forget=None,
    retain=None,
    *,
    config: TrainConfig | None = None,
    guidance: Guidance | None = None,
    cache: bool = True,
    cache_dir=None,
    feature_batch_size: int = 32,
    shard_mb: float | None = None,
    max_length: int = 512,
    template: str = "auto",
    request_id: str = "r1",
    device=None,
    progress: bool = False,
    **settings,
) -> T3Result:
    """Unlearn ``forget`` from ``model`` (kept frozen) while keeping ``retain``: returns
    ``T3Result(model=T3ForCausalLM, report=dict)``.

    ``model``: a ``transformers`` causal LM or a name/path (``tokenizer`` then defaults to its
    tokenizer); ``forget`` / ``retain``: datasets with ``question`` and ``answer`` or data sources
    as in :func:`t3unlearn.data.load_qa` (``DIR:forget10``, ``file.jsonl``, ``tofu:forget10`` ...).
    The head and its training follow ``config`` (:class:`TrainConfig`), the guidance saved with it
    ``guidance`` (:class:`Guidance`); ``settings`` override single fields of either by name
    (``epochs=50``, ``temperature=1.5``, ...) and any other keyword is an error.

    The forget set is the head's first deletion request (``request_id``); the head records it and the
    retain set, so :func:`t3unlearn.t3.requests.update` can add requests and withdraw them later. Features
    are cached per data set under ``cache_dir`` (default ``$T3UNLEARN_HOME/features``; ``cache=False``
    neither reads nor writes), streamed to disk in shards of ``shard_mb`` MB.
    """
    from dataclasses import replace as _replace

    from t3unlearn.data import QAFormatter
    from t3unlearn.t3.feature_cache import assemble, cache_enabled, model_fingerprint
    from t3unlearn.t3.features import hidden_size_of, vocab_size_of
    from t3unlearn.t3.model import T3ForCausalLM
    from t3unlearn.t3.request_sets import gather_parts

    g_over, t_over = split_settings(settings)
    guidance = (guidance or Guidance()).replace(**g_over)
    cfg = _replace(config or TrainConfig(), **t_over).validate()
    model, tokenizer, forget, retain = _inputs(model, tokenizer, forget, retain, request_id, device)
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    fmt = QAFormatter(tokenizer, max_length=max_length, template=template)
    forget.encode(fmt)
    retain.encode(fmt)
    _check_disjoint_text(forget, retain)

    t0 = time.perf_counter()
    model_fp = model_fingerprint(model) if cache_enabled(cache) else None
    parts = gather_parts(model, [forget, retain], pad_id=fmt.pad_id, model_fp=model_fp, cache=cache, cache_dir=cache_dir,
                         batch_size=feature_batch_size, shard_mb=shard_mb, device=device, progress=progress)
    fs = assemble(parts[:1], parts[1], device)
    t1 = time.perf_counter()
    head, history = train_head(
        CachedProvider(fs), fs.n_forget, fs.n_retain, fs.dim, vocab_size_of(model), cfg, device=device, progress=progress
    )
    head.fit_support(fs.feats).set_pieces(word_pieces(tokenizer, vocab_size_of(model)))
    t2 = time.perf_counter()
    report = evaluate_head(head, fs)
    report.update(
        {
            "final_epoch_loss": history[-1],
            "features_s": round(t1 - t0, 4),
            "train_s": round(t2 - t1, 4),
            "features_cached": fs.from_cache,
            "feature_key": fs.key,
            "feature_tokens": int(fs.targets.numel()),
        }
    )
    config = _head_config(model, tokenizer, cfg, fs, fmt, max_length, model_fp, report, forget, retain, parts)
    config.set_guidance(guidance)
    t3 = T3ForCausalLM(config, model, head).eval()
    assert hidden_size_of(model) == fs.dim
    return t3_result(t3, tokenizer, report, time.perf_counter() - t0, head)


def _inputs(model, tokenizer, forget, retain, request_id: str, device):
    """``(model, tokenizer, forget, retain)``: the model loaded when given by name, the sets as :class:`DataSet`
    (the forget set the head's first request, ``request_id``)."""
    from t3unlearn.t3.request_sets import DataSet, check_id

    request_id = check_id(request_id)
    if isinstance(model, str):
        from t3unlearn.lm import load_tokenizer
        from t3unlearn.t3.model import load_base

        tokenizer = tokenizer or load_tokenizer(model)
        model = load_base(model, device=device)
    if tokenizer is None:
        raise T3Error("unlearn needs the model's tokenizer (or give the model as a path).")
    if forget is None or retain is None:
        raise T3Error("unlearn needs a forget set and a retain set.")
    return model, tokenizer, DataSet.load(forget, what="forget set", rid=request_id), DataSet.load(retain, what="retain set")


def _base_name(model) -> str | None:
    """The base's name or path (a local path made absolute), as the head records it."""
    name = getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None) or None
    if name:
        from pathlib import Path

        p = Path(str(name)).expanduser()
        name = str(p.resolve()) if p.exists() else str(name)
    return name


def _head_config(model, tokenizer, cfg: TrainConfig, fs, fmt, max_length: int, model_fp, report: dict, forget, retain,
                 parts):
    """The new head's :class:`~t3unlearn.t3.model.T3Config`: its shape, its base, how it was trained, its first
    request and its retain set."""
    from t3unlearn.t3.identity import base_identity
    from t3unlearn.t3.model import T3Config, tokenizer_hash

    stamp = _now()
    return T3Config(
        head_hidden=cfg.width,
        head_activation=cfg.activation,
        head_layers=cfg.layers,
        base_model_name_or_path=_base_name(model),
        tokenizer_hash=tokenizer_hash(tokenizer),
        training={**asdict(cfg), "n_forget": fs.n_forget, "n_retain": fs.n_retain, "template": "chat" if fmt.use_chat else "plain",
                  "max_length": max_length, "base_fingerprint": model_fp,
                  "base_identity": base_identity(model)},
        metrics={k: report[k] for k in ("forget", "retain", "final_epoch_loss")},
        requests=[forget.make_record(parts[0].key, added=stamp, update="new")],
        retain_set=retain.make_record(parts[1].key, added=stamp),
    )


def _now() -> str:
    from t3unlearn.t3.request_sets import now

    return now()


def _check_disjoint_text(forget, retain) -> None:
    """Forget and retain sets must not share a question (as :func:`t3unlearn.data.check_disjoint` says it)."""
    from t3unlearn.data import check_disjoint

    check_disjoint({"question": forget.questions}, {"question": retain.questions})
