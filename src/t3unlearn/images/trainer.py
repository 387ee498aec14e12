"""One trainer for the image generators: training from scratch, and unlearning with any method.

**Training** (:func:`train_generator`): the family's plain loss on a data set (the full training
set for ``full``, the retain set for the ``retain`` oracle), AdamW, linear warm-up then cosine decay,
gradient clipping, label dropout (for the null label), optionally an EMA of the weights
(``diffusers.training_utils.EMAModel``) that becomes the saved model.

**Unlearning** (:func:`unlearn`): each step the method (:mod:`t3unlearn.images.methods`) turns a
batch into a ``descent`` and an ``ascent`` scalar. The trainer takes their gradients separately,
normalises the ascent (forget) gradient if the method asks (``forget_norm``: a fixed norm;
``forget_norm_ratio``: that fixed norm set to this fraction of the descent gradient's norm at the
first step; ``forget_norm_mode``: ``rescale`` sets the forget gradient to that norm every step, as the
SISS reference does, ``clip`` only shrinks it), and steps Adam along
``-(∇descent - ∇ascent)``. A method may also own auxiliary parameters (Adaptive-λ's inference
network) with their own objective and optimiser. Batches: ``retain`` (from ``X \\ A``), ``forget``
(from ``A``) and ``all`` (from ``X``) index draws, all from one seeded ``torch.Generator``.

Deterministic: same seed, same machine, same weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch

from t3unlearn.errors import T3Error
from t3unlearn.images import losses as L
from t3unlearn.images.models import ImageGenerator, new_generator
from t3unlearn.images.objectives import Family
from t3unlearn.settings import TrainingSettings


@dataclass
class TrainConfig(TrainingSettings):
    """How a generator is trained from scratch."""

    steps: int = 1500
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup: int = 100
    max_grad_norm: float | None = 1.0
    label_dropout: float = 0.1
    ema_decay: float | None = None
    seed: int = 0



@dataclass
class UnlearnConfig(TrainingSettings):
    """How a generator is unlearned (the method's own settings are its ``params``)."""

    steps: int = 200
    batch_size: int = 32
    lr: float = 1e-4
    max_grad_norm: float | None = None
    seed: int = 0



def _lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return f


def train_generator(family: str, images: torch.Tensor, labels: torch.Tensor, *, arch=None, config: TrainConfig | dict | None = None,
                    image_size: int = 16, progress: bool = True, desc: str | None = None) -> tuple[ImageGenerator, dict]:
    """Train a fresh ``family`` generator on ``images`` / ``labels``; returns it and a record of the run."""
    from t3unlearn.progress import progress as bar_for

    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    if len(images) == 0:
        raise T3Error("the training set is empty.")
    gen = new_generator(family, arch, image_size=image_size, seed=cfg.seed)
    fam = Family(gen, cfg.label_dropout)
    model = gen.model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.warmup, cfg.steps))
    ema = None
    if cfg.ema_decay:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=cfg.ema_decay, use_ema_warmup=True, power=2 / 3)
    g = torch.Generator().manual_seed(cfg.seed)
    t0 = time.perf_counter()
    losses = []
    bar = bar_for(total=cfg.steps, desc=desc or f"train {family}", unit="step", enabled=progress)
    for step in range(cfg.steps):
        idx = torch.randint(0, len(images), (cfg.batch_size,), generator=g)
        loss = fam.plain_loss(images[idx], labels[idx], g).mean()
        if not torch.isfinite(loss):
            raise T3Error(f"training {family}: the loss became {float(loss)} at step {step}; lower the learning rate (now {cfg.lr}).")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        if ema is not None:
            ema.step(params)
        losses.append(float(loss.detach()))
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}", refresh=False)
    bar.close()
    if ema is not None:
        ema.copy_to(params)
    model.eval()
    record = {
        "family": family,
        "n_images": int(len(images)),
        "config": asdict(cfg),
        "train_seconds": round(time.perf_counter() - t0, 2),
        "final_loss": round(sum(losses[-100:]) / len(losses[-100:]), 6),
        "loss_curve": [round(sum(losses[i : i + 50]) / len(losses[i : i + 50]), 6) for i in range(0, len(losses), 50)],
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    gen.meta.update({"label_dropout": cfg.label_dropout, "train": record})
    return gen, record


# ----------------------------------------------------------------------------- unlearning


def _pools(bench) -> dict:
    return {
        "retain": (bench.retain, bench.retain_labels),
        "forget": (bench.forget, bench.forget_labels),
        "all": (bench.train, bench.train_labels),
    }


def _scale_forget(terms, params: dict, mode: str, g_desc, g_asc, n_desc: float, n_asc_raw: float, fixed_norm):
    """The ascent (forget) gradient scaled for this step: by the method's own weight (``terms.forget_weight``,
    EraseDiff's) or by the forget-norm rule (``fixed_norm``, set at the first step from ``forget_norm_ratio``).
    Returns ``(scaled gradient, the factor applied, fixed_norm)``."""
    if g_asc is None:
        return None, 1.0, fixed_norm
    if terms.forget_weight is not None:
        scale = float(terms.forget_weight(g_desc, g_asc))
        return [None if ga is None else ga * scale for ga in g_asc], scale, fixed_norm
    if fixed_norm is None and params.get("forget_norm_ratio") and g_desc is not None:
        fixed_norm = float(params["forget_norm_ratio"]) * n_desc  # set once, at the first step
    g_asc, _ = L.normalise_grads(g_asc, fixed_norm, mode)
    return g_asc, (float(L.grad_norm(g_asc)) / n_asc_raw if n_asc_raw > 0 else 1.0), fixed_norm


def unlearn(gen: ImageGenerator, bench, method, *, params: dict | None = None, config: UnlearnConfig | dict | None = None,
            progress: bool = True, desc: str | None = None) -> tuple[ImageGenerator, dict]:
    """Unlearn ``bench``'s forget set from (a copy of) ``gen`` with ``method``; returns the new
    generator and a record (settings, per-step history incl. the λ trajectory, wall time)."""
    from t3unlearn.images.methods import Context, get_method, resolve_params
    from t3unlearn.progress import progress as bar_for

    method = get_method(method)
    params = resolve_params(method, params)
    cfg = config if isinstance(config, UnlearnConfig) else UnlearnConfig.from_dict(config)
    mode = params.get("forget_norm_mode", "clip")
    if mode not in ("clip", "rescale"):
        raise T3Error(f"forget_norm_mode must be clip or rescale, not {mode!r}.")
    t0 = time.perf_counter()
    out = gen.copy()
    model = out.model.train()
    family = Family(out, float(gen.meta.get("label_dropout", 0.1)))
    g = torch.Generator().manual_seed(cfg.seed)
    pools = _pools(bench)
    ctx = Context(family=family, params=params, n=bench.n, k=bench.k, generator=g, total_steps=cfg.steps,
                  forget_labels=tuple(sorted(int(y) for y in bench.forget_labels.unique())))
    if method.setup:
        method.setup(ctx)
    weights = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(weights, lr=cfg.lr)
    aux_params = ctx.state.get("aux_params")
    aux_opt = torch.optim.Adam(aux_params, lr=ctx.state.get("aux_lr", 1e-3)) if aux_params else None
    fixed_norm = params.get("forget_norm")
    history: list[dict] = []
    bar = bar_for(total=cfg.steps, desc=desc or f"unlearn {gen.family} {method.name}", unit="step", enabled=progress)
    for step in range(cfg.steps):
        ctx.step = step
        batch = {}
        for name in method.pools:
            xs, ys = pools[name]
            idx = torch.randint(0, len(xs), (cfg.batch_size,), generator=g)
            batch[name] = (xs[idx], ys[idx])
        terms = method.compute(ctx, batch)
        for part in (terms.descent, terms.ascent):
            if part is not None and not torch.isfinite(part):
                raise T3Error(f"{method.title}: the loss became {float(part.detach())} at step {step}; lower the learning rate (now {cfg.lr}).")
        keep = aux_params is not None
        g_desc = list(torch.autograd.grad(terms.descent, weights, retain_graph=keep or terms.ascent is not None, allow_unused=True)) \
            if terms.descent is not None else None
        g_asc = list(torch.autograd.grad(terms.ascent, weights, retain_graph=keep, allow_unused=True)) \
            if terms.ascent is not None else None
        n_desc = float(L.grad_norm(g_desc)) if g_desc is not None else 0.0
        n_asc_raw = float(L.grad_norm(g_asc)) if g_asc is not None else 0.0
        g_asc, forget_scale, fixed_norm = _scale_forget(terms, params, mode, g_desc, g_asc, n_desc, n_asc_raw, fixed_norm)
        for i, p in enumerate(weights):
            gd = g_desc[i] if g_desc is not None else None
            ga = g_asc[i] if g_asc is not None else None
            if gd is None and ga is None:
                p.grad = None
            else:
                p.grad = (gd if gd is not None else 0) - (ga if ga is not None else 0)
                if not isinstance(p.grad, torch.Tensor):  # pragma: no cover
                    p.grad = None
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(weights, cfg.max_grad_norm)
        if aux_opt is not None and terms.aux is not None:
            aux_opt.zero_grad(set_to_none=True)
            aux_obj = terms.aux({"forget_norm": fixed_norm, "forget_scale": forget_scale}) if callable(terms.aux) else terms.aux
            aux_grads = torch.autograd.grad(aux_obj, aux_params, allow_unused=True)
            for p, ag in zip(aux_params, aux_grads):
                p.grad = ag
            aux_opt.step()
        opt.step()
        opt.zero_grad(set_to_none=True)
        stats = {**terms.stats, "grad_retain": n_desc, "grad_forget": n_asc_raw}
        if "first_stats" not in ctx.state:
            ctx.state["first_stats"] = stats
        ctx.state["last_stats"] = stats
        rec = {"step": step, **{k: round(v, 6) if isinstance(v, float) else v for k, v in terms.logs.items()},
               "grad_descent": round(n_desc, 6), "grad_ascent": round(n_asc_raw, 6), "forget_scale": round(forget_scale, 6)}
        history.append(rec)
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix({k: f"{rec[k]:.3g}" for k in ("descent", "retain_loss", "forget_loss", "lambda") if k in rec}, refresh=False)
    bar.close()
    model.eval()
    wall = time.perf_counter() - t0
    record = {
        "method": method.name,
        "title": method.title,
        "params": params,
        "config": asdict(cfg),
        "forget_norm_used": fixed_norm,
        "unlearn_seconds": wall,
        "history": history,
    }
    if "net" in ctx.state:
        record["inference_net"] = {k: v.tolist() for k, v in ctx.state["net"].state_dict().items()}
    out.meta = {**gen.meta, "unlearned": {k: v for k, v in record.items() if k not in ("history", "inference_net")}}
    return out, record
