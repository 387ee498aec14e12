"""The fine-tuning baselines: each one a loss over a paired (forget, retain) batch.

Each is a :class:`~t3unlearn.methods.Method` (the one method type) that says which data it trains on,
whether it needs a frozen reference copy of the starting model, which parameters it trains, and how to
turn a batch into a loss (using the pure functions of :mod:`t3unlearn.baselines.losses`). The one
trainer (:mod:`t3unlearn.baselines.trainer`) does everything else; :mod:`t3unlearn.methods` registers
them with a ``run``.

Batches are dicts with ``forget``, ``retain`` (and ``idk`` for IdkDPO) sub-batches, each
``input_ids`` / ``attention_mask`` / ``labels`` (``-100`` off the answer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from t3unlearn.errors import T3Error
from t3unlearn.methods.registry import Method


@dataclass
class Context:
    """What a loss needs besides the batch: the model, the frozen reference, the method's params."""

    model: Any
    ref: Any | None
    params: dict
    extras: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- helpers


def _forward(model, sub: dict, **kw):
    return model(input_ids=sub["input_ids"], attention_mask=sub["attention_mask"], **kw)


def _ref_forward(ctx: Context, sub: dict, **kw):
    import torch

    with torch.no_grad():
        return _forward(ctx.ref, sub, **kw)


def _retain_term(ctx: Context, batch: dict):
    """NLL on the retain item (default) or KL to the reference (``retain_loss: "kl"``)."""
    from t3unlearn.baselines import losses as L

    r = batch["retain"]
    out = _forward(ctx.model, r)
    if ctx.params.get("retain_loss", "nll") == "kl":
        ref = _ref_forward(ctx, r)
        return L.kl_to_ref(out.logits, ref.logits, r["labels"])
    return L.nll(out.logits, r["labels"])


def _combine(ctx: Context, forget_loss, retain_loss=None) -> tuple[Any, dict]:
    gamma = float(ctx.params.get("gamma", 1.0))
    alpha = float(ctx.params.get("alpha", 1.0))
    loss = gamma * forget_loss
    logs = {"forget_loss": float(forget_loss.detach())}
    if retain_loss is not None and alpha != 0:
        loss = loss + alpha * retain_loss
        logs["retain_loss"] = float(retain_loss.detach())
    logs["loss"] = float(loss.detach())
    return loss, logs


# ----------------------------------------------------------------------------- methods


def _gradascent(ctx, batch):
    from t3unlearn.baselines import losses as L

    f = batch["forget"]
    nll_f = L.nll(_forward(ctx.model, f).logits, f["labels"])
    loss, logs = _combine(ctx, L.grad_ascent_loss(nll_f))
    logs["forget_nll"] = float(nll_f.detach())
    return loss, logs


def _graddiff(ctx, batch):
    from t3unlearn.baselines import losses as L

    f = batch["forget"]
    nll_f = L.nll(_forward(ctx.model, f).logits, f["labels"])
    loss, logs = _combine(ctx, L.grad_ascent_loss(nll_f), _retain_term(ctx, batch))
    logs["forget_nll"] = float(nll_f.detach())
    return loss, logs


def _npo(ctx, batch):
    from t3unlearn.baselines import losses as L

    f = batch["forget"]
    logits = _forward(ctx.model, f).logits
    logp, n = L.sequence_logprob(logits, f["labels"])
    logp_ref, _ = L.sequence_logprob(_ref_forward(ctx, f).logits, f["labels"])
    forget = L.npo_loss(logp, logp_ref, float(ctx.params.get("beta", 0.1)))
    loss, logs = _combine(ctx, forget, _retain_term(ctx, batch))
    logs["forget_nll"] = float((-logp.sum() / n.sum().clamp_min(1)).detach())
    return loss, logs


def _simnpo(ctx, batch):
    from t3unlearn.baselines import losses as L

    f = batch["forget"]
    logp, n = L.sequence_logprob(_forward(ctx.model, f).logits, f["labels"])
    avg = -logp / n.clamp_min(1)
    forget = L.simnpo_loss(avg, float(ctx.params.get("beta", 4.5)), float(ctx.params.get("delta", 0.0)))
    loss, logs = _combine(ctx, forget, _retain_term(ctx, batch))
    logs["forget_nll"] = float((-logp.sum() / n.sum().clamp_min(1)).detach())
    return loss, logs


def _idkdpo(ctx, batch):
    from t3unlearn.baselines import losses as L

    f, w = batch["forget"], batch["idk"]
    lose, n = L.sequence_logprob(_forward(ctx.model, f).logits, f["labels"])
    win, _ = L.sequence_logprob(_forward(ctx.model, w).logits, w["labels"])
    ref_lose, _ = L.sequence_logprob(_ref_forward(ctx, f).logits, f["labels"])
    ref_win, _ = L.sequence_logprob(_ref_forward(ctx, w).logits, w["labels"])
    forget = L.dpo_loss(win, lose, ref_win, ref_lose, float(ctx.params.get("beta", 0.1)))
    loss, logs = _combine(ctx, forget, _retain_term(ctx, batch))
    logs["forget_nll"] = float((-lose.sum() / n.sum().clamp_min(1)).detach())
    return loss, logs


def _retrain(ctx, batch):
    from t3unlearn.baselines import losses as L

    r = batch["retain"]
    loss = L.nll(_forward(ctx.model, r).logits, r["labels"])
    return loss, {"loss": float(loss.detach()), "retain_loss": float(loss.detach())}


def _uld_assistant(ctx, batch):
    """ULD's assistant: remember the forget set (NLL), be uninformative on retain (KL(U || p))."""
    from t3unlearn.baselines import losses as L

    f, r = batch["forget"], batch["retain"]
    nll_f = L.nll(_forward(ctx.model, f).logits, f["labels"])
    flat = L.kl_from_uniform(_forward(ctx.model, r).logits, r["labels"])
    gamma = float(ctx.params.get("gamma", 1.0))
    weight = float(ctx.params.get("retain_weight", 1.0))
    loss = gamma * nll_f + weight * flat
    logs = {"loss": float(loss.detach()), "forget_loss": float(nll_f.detach()), "retain_loss": float(flat.detach())}
    logs["forget_nll"] = float(nll_f.detach())
    return loss, logs


# RMU ---------------------------------------------------------------------------------


def num_layers(model) -> int:
    n = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    if not n:
        raise T3Error(f"cannot tell how many layers {type(model).__name__} has (no num_hidden_layers in its config).")
    return int(n)


def rmu_layer(model, params: dict) -> int:
    """The steered layer: ``params["layer"]``, or ``"auto"`` = the 8B default 7/32 of the depth."""
    n = num_layers(model)
    layer = params.get("layer", "auto")
    if layer in (None, "auto"):
        layer = max(0, min(n - 2, round(n * 7 / 32))) if n > 1 else 0
    layer = int(layer)
    if not 0 <= layer < n:
        raise T3Error(f"RMU layer {layer} is out of range for a model with {n} layers (0..{n - 1}).")
    return layer


def _rmu_trainable(model, params: dict) -> list[str]:
    layer = rmu_layer(model, params)
    span = int(params.get("trainable_span", 3))
    layers = list(range(max(0, layer - span + 1), layer + 1))
    pattern = re.compile(params.get("trainable_regex", r"layers\.({layers})\.mlp\.down_proj\.weight$").replace("{layers}", "|".join(map(str, layers))))
    names = [n for n, _ in model.named_parameters() if pattern.search(n)]
    if not names:
        raise T3Error(
            f"RMU found no parameter matching {pattern.pattern!r} in {type(model).__name__}; "
            "set 'trainable_regex' in the rmu config to this architecture's MLP output weights."
        )
    return names


def _rmu_setup(ctx: Context) -> None:
    import torch

    hidden = int(ctx.model.config.hidden_size)
    g = torch.Generator().manual_seed(int(ctx.extras.get("seed", 0)) + 7919)
    u = torch.rand(hidden, generator=g)
    u = u / u.norm()
    ctx.extras["rmu_target"] = float(ctx.params.get("steering_coeff", 2.0)) * u
    ctx.extras["rmu_layer"] = rmu_layer(ctx.model, ctx.params)


def _hidden_at(model, sub: dict, layer: int):
    # hidden_states[0] is the embedding output; [i + 1] is the output of block i.
    return _forward(model, sub, output_hidden_states=True).hidden_states[layer + 1]


def _rmu(ctx, batch):
    from t3unlearn.baselines import losses as L

    f, r = batch["forget"], batch["retain"]
    layer = ctx.extras["rmu_layer"]
    target = ctx.extras["rmu_target"].to(f["input_ids"].device)
    h_f = _hidden_at(ctx.model, f, layer)
    forget = L.rmu_loss(h_f, target, f["labels"] != L.IGNORE_INDEX)
    h_r = _hidden_at(ctx.model, r, layer)
    import torch

    with torch.no_grad():
        h_ref = _hidden_at(ctx.ref, r, layer)
    retain = L.rmu_loss(h_r, h_ref, r["labels"] != L.IGNORE_INDEX)
    return _combine(ctx, forget, retain)


# ----------------------------------------------------------------------------- registry

def _baseline(name: str, title: str, summary: str, defaults: dict, compute, **step) -> Method:
    style = "assistant" if name == "uld" else "finetune"
    return Method(name, "lm", summary, defaults, title=title, style=style, compute=compute, **step)


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        _baseline(
            "gradascent",
            "GradAscent",
            "maximize the forget answers' NLL: loss = -NLL_forget",
            {"gamma": 1.0},
            _gradascent,
        ),
        _baseline(
            "graddiff",
            "GradDiff",
            "gradient difference: loss = gamma * (-NLL_forget) + alpha * NLL_retain (or KL to ref on retain)",
            {"gamma": 1.0, "alpha": 1.0, "retain_loss": "nll"},
            _graddiff,
            needs_ref=lambda p: p.get("retain_loss", "nll") == "kl",
        ),
        _baseline(
            "npo",
            "NPO",
            "negative preference optimization: -(2/beta) mean log sigmoid(-beta (log pi - log pi_ref)) on forget + alpha NLL_retain",
            {"beta": 0.1, "gamma": 1.0, "alpha": 1.0, "retain_loss": "nll"},
            _npo,
            needs_ref=lambda p: True,
        ),
        _baseline(
            "simnpo",
            "SimNPO",
            "reference-free NPO: -(2/beta) mean log sigmoid(beta (L - delta)), L = mean answer token CE; + alpha NLL_retain",
            {"beta": 4.5, "delta": 0.0, "gamma": 0.125, "alpha": 1.0, "retain_loss": "nll"},
            _simnpo,
            needs_ref=lambda p: p.get("retain_loss", "nll") == "kl",
        ),
        _baseline(
            "idkdpo",
            "IdkDPO",
            "DPO preferring an 'I don't know' answer over the true forget answer, + alpha NLL_retain",
            {"beta": 0.1, "gamma": 1.0, "alpha": 1.0, "retain_loss": "nll"},
            _idkdpo,
            needs_ref=lambda p: True,
            uses_idk=True,
        ),
        _baseline(
            "rmu",
            "RMU",
            "steer layer-L activations on forget answers to c * u (u a fixed random unit vector); keep retain activations equal to ref's",
            {"layer": "auto", "steering_coeff": 2.0, "gamma": 1.0, "alpha": 1.0, "trainable_span": 3,
             "trainable_regex": r"layers\.({layers})\.mlp\.down_proj\.weight$"},
            _rmu,
            needs_ref=lambda p: True,
            setup=_rmu_setup,
            trainable=_rmu_trainable,
        ),
        _baseline(
            "retrain",
            "Retrain",
            "the oracle: fine-tune the pretrained base on the retain set only (NLL)",
            {},
            _retrain,
            data="retain",
        ),
        _baseline(
            "uld",
            "ULD assistant",
            "logit-difference assistant: gamma NLL_forget + retain_weight KL(uniform || p) on retain; served as base - alpha * assistant",
            {"gamma": 1.0, "retain_weight": 1.0, "alpha": 1.0, "assistant_layers": "half"},
            _uld_assistant,
        ),
    ]
}

FINETUNE_METHODS = ("gradascent", "graddiff", "npo", "simnpo", "idkdpo", "rmu", "retrain")


def get_method(name: str) -> Method:
    key = name.lower().replace("-", "").replace("_", "")
    if key not in METHODS:
        raise T3Error(f"unknown baseline {name!r}; choose one of {', '.join(METHODS)}.")
    return METHODS[key]
