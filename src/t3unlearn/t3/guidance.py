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

- ``copy_floor=c``: a token already in the context (``seen``: the question's names, words said earlier) is read as
  at least ``c``. Copying it is then neither tilted away nor counted in the forget mass, so the answer keeps the
  author's name while the facts the context does not give are still tilted away (the head reads every token of a
  forget answer as forget content, names copied from the question included).

- ``piece_floor=c``: a token that continues a word (``pieces``, the head's word-piece table: 'ana' of 'Zuz|ana') is
  read as at least ``c``. The tilt then chooses among words by their first piece, and a word once begun is finished
  as the base would finish it: a name is not broken into pieces the base never put together ("Zuzanaeford"), and
  the pieces are not counted in the adaptive forget mass.

- ``spelling="base"``: the base spells words. A token that continues a word keeps exactly the base's probability,
  and tempering and the tilt share out only the rest of the mass (``1 - Σ p(piece)``) among the other tokens, in
  the proportions the guided distribution gives them: a piece the base finds implausible at a word boundary is not
  lifted by tempering and glued to the word before ("born indapest").

With ``T = 1`` (plain classifier guidance) every tempering is the identity. Every variant returns
unnormalized log-probabilities; ``log_softmax`` of the result is the guided distribution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from t3unlearn.t3.config import Guidance



def _read_head(head_logits: torch.Tensor, bias: float = 0.0, floor: float | None = None,
               seen: torch.Tensor | None = None, copy_floor: float | None = None,
               pieces: torch.Tensor | None = None, piece_floor: float | None = None) -> torch.Tensor:
    """The head's logits as the guidance reads them: ``max(head + bias, floor)``, at least ``copy_floor`` for the
    tokens ``seen`` (a bool mask like the logits: already in the context) and at least ``piece_floor`` for the tokens
    that continue a word (``pieces``, ``(V,)`` bool), float32."""
    h = head_logits.float()
    if bias:
        h = h + bias
    if floor is not None:
        h = h.clamp(min=float(floor))
    if copy_floor is not None and seen is not None:
        h = torch.where(seen, h.clamp(min=float(copy_floor)), h)
    if piece_floor is not None and pieces is not None:
        h = torch.where(pieces.to(h.device), h.clamp(min=float(piece_floor)), h)
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

    def __init__(self, head_logits: torch.Tensor, bias: float = 0.0, floor: float | None = None,
                 seen: torch.Tensor | None = None, copy_floor: float | None = None,
                 pieces: torch.Tensor | None = None, piece_floor: float | None = None):
        self._head, self._bias, self._floor = head_logits, bias, floor
        self._seen, self._copy = seen, copy_floor
        self._pieces, self._piece = pieces, piece_floor
        self._read = self._lsig = None
        self._mass: tuple | None = None  # (id of the base log-probs, their forget mass)
        self._others: torch.Tensor | None = None  # the ids of the tokens that do not continue a word
        self._column: torch.Tensor | None = None  # each token's index among them
        self._rest: tuple | None = None  # (the base log-probs, log of their mass on those tokens)
        self._columns: tuple | None = None  # (the base log-probs, them and this reading on those tokens)

    @property
    def read(self) -> torch.Tensor:
        if self._read is None:
            self._read = _read_head(self._head, self._bias, self._floor, self._seen, self._copy, self._pieces, self._piece)
        return self._read

    @property
    def pieces(self) -> torch.Tensor:
        if self._pieces is None:
            raise ValueError("spelling='base' reads the head's word-piece table; pass pieces= (GuidanceHead.piece_mask()).")
        return self._pieces

    def others(self, device) -> torch.Tensor:
        """The ids of the tokens that do not continue a word (what the base's spelling leaves to guidance)."""
        if self._others is None:
            self._others = (~self.pieces).nonzero().squeeze(-1)
        return self._others.to(device)

    def column(self, device) -> torch.Tensor:
        """``(V,)``: each token's index among :meth:`others` (a piece's: 0, never read)."""
        if self._column is None:
            self._column = (torch.cumsum(~self.pieces, 0) - 1).clamp(min=0)
        return self._column.to(device)

    def rest(self, logp: torch.Tensor) -> torch.Tensor:
        """``log Σ_others p``: the base's log-mass on the tokens that do not continue a word, ``(..., 1)``."""
        if self._rest is None or self._rest[0] is not logp:
            self._rest = (logp, torch.logsumexp(logp.index_select(-1, self.others(logp.device)), -1, keepdim=True))
        return self._rest[1]

    def on_others(self, logp: torch.Tensor) -> tuple[torch.Tensor, "_Columns"]:
        """The base's log-probs and this reading restricted to the tokens that do not continue a word (the columns
        the base's spelling leaves to guidance), for scoring: computed once per ``logp``."""
        if self._columns is None or self._columns[0] is not logp:
            others = self.others(logp.device)
            self._columns = (logp, logp.index_select(-1, others), _Columns(self, logp, others))
            if self._rest is None or self._rest[0] is not logp:  # the same restriction: read once
                self._rest = (logp, torch.logsumexp(self._columns[1], -1, keepdim=True))
        return self._columns[1], self._columns[2]

    def logsigmoid(self) -> torch.Tensor:
        if self._lsig is None:
            self._lsig = F.logsigmoid(self.read)
        return self._lsig

    def mass(self, logp: torch.Tensor) -> torch.Tensor:
        if self._mass is None or self._mass[0] is not logp:
            self._mass = (logp, _mass(logp, self.read))
        return self._mass[1]


class _Columns:
    """A :class:`HeadReading` restricted to some columns (tokens) for :func:`_tempered_and_tilted`: the log-sigmoid of
    those columns, and the forget mass of the whole vocabulary (a per-position figure, not a column's). Tensors only:
    a reference back to the reading would make a cycle that keeps every chunk's tensors until the garbage collector
    runs."""

    def __init__(self, reading: HeadReading, logp: torch.Tensor, columns: torch.Tensor):
        self._lsig = reading.logsigmoid().index_select(-1, columns)
        self._mass = reading.mass(logp)

    def logsigmoid(self) -> torch.Tensor:
        return self._lsig

    def mass(self, logp: torch.Tensor) -> torch.Tensor:
        return self._mass


def guided_logits(
    base_logits: torch.Tensor,
    head_logits: torch.Tensor | HeadReading,
    guidance: Guidance,
    *,
    weight: torch.Tensor | None = None,
    seen: torch.Tensor | None = None,
    pieces: torch.Tensor | None = None,
    normalized: bool = False,
) -> torch.Tensor:
    """T3's guided logits (float32) from the base's and the head's logits of the same positions, under ``guidance``
    (a :class:`~t3unlearn.t3.config.Guidance`; its ``support`` is read by whoever computes ``weight``).

    ``weight`` (``(..., 1)`` in [0, 1], e.g. :meth:`SupportGate.weight`) scales guidance per position. ``seen``
    (bool, like the logits): the tokens already in each position's context, read by the guidance's ``copy_floor``
    (without it the copy exemption has nothing to exempt). ``pieces`` (``(V,)`` bool, the head's
    :meth:`~t3unlearn.t3.head.GuidanceHead.piece_mask`): the tokens that continue a word, read by ``piece_floor``.
    ``normalized``: ``base_logits`` are already the base's log-probabilities (``log_softmax``, float32), e.g. kept
    across many settings; they are not modified. ``head_logits`` may be a :class:`HeadReading` at the guidance's
    bias and floor (reused across settings)."""
    if not isinstance(guidance, Guidance):
        raise TypeError(f"guided_logits takes a Guidance, not {type(guidance).__name__}; e.g. Guidance(temperature=2.0, scale=0.7).")
    if guidance.reads_pieces and pieces is None and not isinstance(head_logits, HeadReading):
        raise ValueError("piece_floor and spelling='base' read the head's word-piece table; pass pieces= "
                         "(GuidanceHead.piece_mask()).")
    reading = (head_logits if isinstance(head_logits, HeadReading)
               else HeadReading(head_logits, guidance.bias, guidance.floor, seen, guidance.copy_floor, pieces,
                                guidance.piece_floor))
    logp = base_logits.float() if normalized else torch.log_softmax(base_logits.float(), dim=-1)
    # the base's spelling reads logp after the tilt: it must not be tilted in place
    out = _tempered_and_tilted(logp, reading, guidance, weight, copy=normalized or guidance.spelling == "base")
    return _base_spelling(logp, out, reading) if guidance.spelling == "base" else out


def guided_logprobs_at(base_logp: torch.Tensor, reading: HeadReading, guidance: Guidance, target: torch.Tensor, *,
                       weight: torch.Tensor | None = None) -> torch.Tensor:
    """``log_softmax(guided_logits(...)).gather(-1, target)`` without the V-wide softmax where the base spells: the
    guided log-probability of ``target`` (``(..., 1)`` ids) at each position, from the base's log-probs
    (``log_softmax``, float32; not modified) and the head's reading. Scoring answers (calibration's grid) needs only
    these. With ``spelling="base"`` a piece's log-prob is the base's and another token's is its guided logit less
    ``log Σ_others e^guided``, plus ``log Σ_others p`` -- what the guided distribution gives, in a third of the
    work; otherwise the softmax of :func:`guided_logits`."""
    if guidance.spelling != "base" or reading.others(base_logp.device).numel() == base_logp.shape[-1]:
        out = _tempered_and_tilted(base_logp, reading, guidance, weight, copy=True)
        return torch.log_softmax(out, -1).gather(-1, target)
    # tempered and tilted on the other tokens' columns only: the pieces keep the base's log-probs
    logp_others, columns = reading.on_others(base_logp)
    out = _tempered_and_tilted(logp_others, columns, guidance, weight, copy=True)
    column = reading.column(out.device)[target]  # the target's column among the other tokens (a piece's: 0)
    return torch.where(reading.pieces.to(out.device)[target], base_logp.gather(-1, target),
                       out.gather(-1, column) - torch.logsumexp(out, -1, keepdim=True) + reading.rest(base_logp))


def _tempered_and_tilted(logp: torch.Tensor, reading: HeadReading, guidance: Guidance,
                         weight: torch.Tensor | None, copy: bool) -> torch.Tensor:
    temperature, scale = guidance.temperature, guidance.scale
    tempering, tail_logp = guidance.tempering, guidance.tail_logp
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
        tempered = logp.clone() if copy else logp  # the in-place tilt below must not write into the caller's
    if scale == 0.0:
        return tempered
    if weight is not None:
        if torch.is_grad_enabled():
            return tempered + (scale * weight.float()) * reading.logsigmoid()
        return tempered.addcmul_(reading.logsigmoid(), weight.float(), value=scale)
    if torch.is_grad_enabled():
        return tempered + scale * reading.logsigmoid()
    return tempered.add_(reading.logsigmoid(), alpha=scale)  # a fresh tensor: in place saves a V-wide copy


def _base_spelling(logp: torch.Tensor, guided: torch.Tensor, reading: "HeadReading") -> torch.Tensor:
    """Word pieces at the base's probability ``p(v)``; the other tokens share the rest, ``1 - Σ_pieces p``, in the
    proportions of the guided distribution restricted to them. Unnormalized: the pieces' log-probs are shifted by
    ``log Σ_others e^guided - log Σ_others p``, so that ``log_softmax`` of the result is that distribution."""
    others = reading.others(logp.device)
    if others.numel() == logp.shape[-1]:  # a vocabulary without word pieces (word-level): nothing to spell
        return guided
    shift = torch.logsumexp(guided.index_select(-1, others), -1, keepdim=True) - reading.rest(logp)
    return torch.where(reading.pieces.to(logp.device), logp + shift, guided)


def seen_tokens(ids: torch.Tensor, vocab_size: int, *, mask: torch.Tensor | None = None,
                prior: torch.Tensor | None = None, keep: int | torch.Tensor = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """What the copy exemption reads: ``(seen, running)`` for token ids ``(B, q)`` that follow ``prior`` (``(B, V)``
    bool: the tokens of the context before them, or None).

    ``seen`` ``(B, k, V)`` marks, at each of the last ``k = keep`` positions (``0``: all ``q``), every token of the
    context up to and including that position -- the context its next-token logits are computed from;
    ``running`` ``(B, V)`` marks every token so far (the next call's ``prior``). Padding (``mask == 0``) and ids
    outside the vocabulary are not counted. ``keep`` may also be a tensor of positions (``logits_to_keep``)."""
    if isinstance(keep, torch.Tensor):
        seen, running = seen_tokens(ids, vocab_size, mask=mask, prior=prior)
        return seen[:, keep], running
    b, q = ids.shape
    k = q if keep <= 0 or keep >= q else keep
    junk = vocab_size  # one column past the vocabulary takes padding and out-of-range ids
    ids = torch.where((ids >= 0) & (ids < vocab_size), ids, junk)
    if mask is not None:
        ids = torch.where(mask.to(ids.device).bool(), ids, junk)
    before = torch.zeros(b, vocab_size + 1, dtype=torch.bool, device=ids.device)
    if prior is not None:
        before[:, :vocab_size] = prior
    if q > k:
        before.scatter_(1, ids[:, : q - k], True)
    tail = torch.zeros(b, k, vocab_size + 1, dtype=torch.uint8, device=ids.device)
    tail.scatter_(2, ids[:, q - k:].unsqueeze(-1), 1)
    seen = tail.cummax(dim=1).values.bool() | before.unsqueeze(1)
    return seen[..., :vocab_size], seen[:, -1, :vocab_size]
