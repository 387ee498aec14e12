"""The guided next-token distribution of T3, as one pure function.

    guided_logits = temper(log_softmax(base_logits)) + s · logsigmoid(head_logits + bias)

``temper`` is the paper's ``log p / T`` with ``tempering="global"``. Two options change *where* and *how much* the base is
tempered (docs/t3.md, "Tempering that does not tax retained knowledge"):

- ``tempering="adaptive"``: a per-position temperature ``T_t = 1 + (T - 1) · g_t``, where
  ``g_t = Σ_v p(v) · (1 - f(v))`` is the mass the base puts on tokens the head reads as forget content
  (``f = sigmoid(head + bias)``). Where the base is about to say something the head flags, ``T_t → T``
  and the spike is flattened as in the paper; where it says retained content, ``T_t → 1`` and nothing is
  taxed.
- ``tail_logp=τ``: tempering lifts every token, also those the base considers impossible. With a tail
  guard, tokens with ``log p ≥ τ`` are tempered (``log p / T``) and those below keep falling at the
  base's slope (``τ / T + (log p - τ)``): plausible alternatives gain, the tail does not.

- ``support=q``: guidance fades out where the head was never trained. The head's :class:`SupportGate`
  gives each position a weight ``w_t`` (1 within the ``q``-quantile of the training positions' distances,
  decaying beyond); the position is tempered with ``1 + (T_t - 1) · w_t`` and tilted with ``s · w_t``.
  Content that is neither forget nor retain (the base's general knowledge) keeps the base's distribution
  instead of whatever the head extrapolates there.

- ``floor=φ``: the head's (biased) logits are read as ``max(head + bias, φ)``, i.e. the classifier's probability
  that a token is retained never falls below ``sigmoid(φ)``. The tilt then takes at most ``s · log(1 + e^-φ)``
  nats from any token: every token the head is sure of loses about the same, instead of the most confidently
  flagged ones falling far below what a model that never saw them gives (on offline TOFU that spread made a few
  forget items' paraphrases far less likely than their perturbations; docs/t3.md, "The head's floor").

With ``T = 1`` (plain classifier guidance) every tempering is the identity. Every variant returns
unnormalized log-probabilities; ``log_softmax`` of the result is the guided distribution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from t3unlearn.t3.config import Guidance



def _read_head(head_logits: torch.Tensor, bias: float = 0.0, floor: float | None = None) -> torch.Tensor:
    """The head's logits as the guidance reads them: ``max(head + bias, floor)``, float32."""
    h = head_logits.float()
    if bias:
        h = h + bias
    if floor is not None:
        h = h.clamp(min=float(floor))
    return h


def forget_mass(base_logp: torch.Tensor, head_logits: torch.Tensor, bias: float = 0.0,
                floor: float | None = None) -> torch.Tensor:
    """``g = Σ_v p(v) · (1 - sigmoid(max(head_v + bias, floor)))`` per position, ``(..., V) -> (..., 1)``: the
    base's probability of saying something the head reads as forget content."""
    return _mass(base_logp, _read_head(head_logits, bias, floor))


def _mass(base_logp: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    return (base_logp.exp() * torch.sigmoid(-h)).sum(-1, keepdim=True)


class HeadReading:
    """The head's logits as guidance reads them at one ``bias`` and ``floor`` (``max(head + bias, floor)``), and what
    is derived from them alone -- their log-sigmoid and, for given base log-probs, the forget mass -- each computed on
    first use. A grid of settings that share the base's log-probs, the bias and the floor (calibration) keeps one
    reading per (bias, floor) and pays for these once."""

    def __init__(self, head_logits: torch.Tensor, bias: float = 0.0, floor: float | None = None):
        self._head, self._bias, self._floor = head_logits, bias, floor
        self._read = self._lsig = None
        self._mass: tuple | None = None  # (id of the base log-probs, their forget mass)

    @property
    def read(self) -> torch.Tensor:
        if self._read is None:
            self._read = _read_head(self._head, self._bias, self._floor)
        return self._read

    def logsigmoid(self) -> torch.Tensor:
        if self._lsig is None:
            self._lsig = F.logsigmoid(self.read)
        return self._lsig

    def mass(self, logp: torch.Tensor) -> torch.Tensor:
        if self._mass is None or self._mass[0] is not logp:
            self._mass = (logp, _mass(logp, self.read))
        return self._mass[1]


def guided_logits(
    base_logits: torch.Tensor,
    head_logits: torch.Tensor | HeadReading,
    guidance: Guidance,
    *,
    weight: torch.Tensor | None = None,
    normalized: bool = False,
) -> torch.Tensor:
    """T3's guided logits (float32) from the base's and the head's logits of the same positions, under ``guidance``
    (a :class:`~t3unlearn.t3.config.Guidance`; its ``support`` is read by whoever computes ``weight``).

    ``weight`` (``(..., 1)`` in [0, 1], e.g. :meth:`SupportGate.weight`) scales guidance per position.
    ``normalized``: ``base_logits`` are already the base's log-probabilities (``log_softmax``, float32), e.g. kept
    across many settings; they are not modified. ``head_logits`` may be a :class:`HeadReading` at the guidance's
    bias and floor (reused across settings)."""
    if not isinstance(guidance, Guidance):
        raise TypeError(f"guided_logits takes a Guidance, not {type(guidance).__name__}; e.g. Guidance(temperature=2.0, scale=0.7).")
    reading = (head_logits if isinstance(head_logits, HeadReading)
               else HeadReading(head_logits, guidance.bias, guidance.floor))
    temperature, scale = guidance.temperature, guidance.scale
    tempering, tail_logp = guidance.tempering, guidance.tail_logp
    logp = base_logits.float() if normalized else torch.log_softmax(base_logits.float(), dim=-1)
    T = temperature
    if T != 1.0:
        strength = reading.mass(logp) if tempering == "adaptive" else None  # (..., 1)
        if weight is not None:
            strength = weight.float() if strength is None else strength * weight.float()
        if strength is not None:
            T = 1.0 + (temperature - 1.0) * strength
        if tail_logp is None:
            tempered = logp / T
        else:
            tau = float(tail_logp)
            tempered = torch.where(logp >= tau, logp / T, tau / T + (logp - tau))
    else:
        tempered = logp.clone() if normalized else logp  # the in-place tilt below must not write into the caller's
    if scale == 0.0:
        return tempered
    if weight is not None:
        if torch.is_grad_enabled():
            return tempered + (scale * weight.float()) * reading.logsigmoid()
        return tempered.addcmul_(reading.logsigmoid(), weight.float(), value=scale)
    if torch.is_grad_enabled():
        return tempered + scale * reading.logsigmoid()
    return tempered.add_(reading.logsigmoid(), alpha=scale)  # a fresh tensor: in place saves a V-wide copy
