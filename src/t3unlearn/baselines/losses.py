"""The baselines' losses as small pure functions of tensors (no models, no state).

Notation follows ``docs/baselines.md``: for one item, ``log pi(y|x)`` is the *sum* of the
answer tokens' log-probabilities (EOS included); ``NLL`` of a batch is the mean token
cross-entropy over all answer tokens of the batch; ``ref`` is the frozen starting model.
Every loss is written so that *minimizing* it does what the method wants.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from t3unlearn.data import IGNORE_INDEX  # noqa: F401 - the label of prompt and padding positions
from t3unlearn.lm import answer_logprobs, answer_targets, answer_token_logprobs


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log pi(y|x), n)`` per item: the summed answer log-probability and the answer length."""
    lp, mask = answer_token_logprobs(logits, labels)
    return lp.sum(-1), mask.sum(-1)


def nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean token cross-entropy over every answer token of the batch (the usual LM loss)."""
    lp, mask = answer_token_logprobs(logits, labels)
    return -lp.sum() / mask.sum().clamp_min(1)


def grad_ascent_loss(forget_nll: torch.Tensor) -> torch.Tensor:
    """GradAscent: ``-NLL_forget`` (minimizing it raises the loss on the forget answers)."""
    return -forget_nll


def npo_loss(logp: torch.Tensor, logp_ref: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO: ``-(2/beta) mean log sigmoid(-beta (log pi - log pi_ref))``.

    Equals ``(2/beta) log 2`` where ``pi == pi_ref``; falls to 0 as ``pi / pi_ref -> 0``.
    """
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp - logp_ref)).mean()


def simnpo_loss(avg_nll: torch.Tensor, beta: float, delta: float = 0.0) -> torch.Tensor:
    """SimNPO: ``-(2/beta) mean log sigmoid(beta (L - delta))``, L = an item's mean token CE.

    No reference model: the length-normalized loss of the current model alone.
    """
    return -(2.0 / beta) * F.logsigmoid(beta * (avg_nll - delta)).mean()


def dpo_loss(
    logp_win: torch.Tensor,
    logp_lose: torch.Tensor,
    ref_win: torch.Tensor,
    ref_lose: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """DPO, scaled like NPO: ``-(2/beta) mean log sigmoid(beta ((lw - rw) - (ll - rl)))``.

    For IdkDPO the *win* answer is an "I don't know" answer and the *lose* answer is the
    true forget answer. (NPO is this loss without the win term.)
    """
    margin = (logp_win - ref_win) - (logp_lose - ref_lose)
    return -(2.0 / beta) * F.logsigmoid(beta * margin).mean()


def kl_to_ref(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``KL(p_ref || p)`` of the next-token distributions, averaged over answer positions."""
    logp, _, mask = answer_logprobs(logits, labels)
    logq, _, _ = answer_logprobs(ref_logits, labels)
    kl = (logq.exp() * (logq - logp)).sum(-1)
    return kl.sum() / mask.sum().clamp_min(1)


def kl_from_uniform(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``KL(U || p)`` = cross-entropy to the uniform distribution minus ``log V``, over answer positions.

    Zero exactly when the model's next-token distribution is uniform (maximally uninformative).
    """
    mask, _ = answer_targets(labels)
    z = logits[:, :-1][mask].float()
    ce_uniform = torch.logsumexp(z, -1) - z.mean(-1)
    kl = ce_uniform - math.log(z.shape[-1])
    return kl.sum() / mask.sum().clamp_min(1)


def rmu_loss(hidden: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of the hidden states at ``mask`` to ``target`` (a vector or a tensor).

    RMU's forget term uses ``target = c * u`` (a fixed random unit vector ``u`` scaled by the
    steering coefficient ``c``); its retain term uses the frozen reference's hidden states.
    """
    target = target.to(hidden.dtype)
    err = (hidden.float() - target.float()).square().mean(-1)
    mask = mask.to(err.dtype)
    return (err * mask).sum() / mask.sum().clamp_min(1)
