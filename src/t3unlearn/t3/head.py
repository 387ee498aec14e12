"""The guidance head: pooled hidden state -> one logit of P(retain | prefix, next token = v) per token v.

    Linear(d -> h, no bias) -> act -> [Linear(h -> h, no bias) -> act] * (layers - 1) -> Linear(h -> V, no bias)

With the default identity activation the head is a rank-``h`` linear map ``d -> V`` (more
layers would add nothing, so they are refused). Training only ever needs the logit of the
realized next token: :meth:`GuidanceHead.gather` takes the rows of the last weight for those
tokens instead of computing all ``V`` logits.

A trained head also carries a :class:`SupportGate`: where in feature space it was trained. A head
trained to tell forget from retain content has never seen content that is neither (the base's general
knowledge), and reads some of it as forget; the gate lets guidance fade out there (the ``support``
guidance knob, :mod:`t3unlearn.t3.guidance`).

It also carries its tokenizer's *word pieces* (:func:`word_pieces`): which tokens continue a word rather than start
one. The ``piece_floor`` guidance knob reads them, so that the tilt chooses among words and a word, once begun, is
finished as the base would finish it.
"""

from __future__ import annotations

import torch
from torch import nn

from t3unlearn.errors import ModelError
from t3unlearn.t3.config import ACTIVATIONS, check_head_shape  # noqa: F401 - part of this module's API

NO_PIECES = ("this head has no word-piece table (it was saved by an earlier t3unlearn); retrain it with 't3unlearn "
             "unlearn', or leave the piece exemption and the base's spelling off (--piece-floor none --spelling "
             "guided).")
WORD_STARTS = ("\u0120", "\u2581", " ")  # byte-level BPE's 'Ġ', SentencePiece's '▁', a plain space: a token that starts a word


def word_pieces(tokenizer, vocab_size: int | None = None) -> torch.Tensor:
    """``(V,)`` bool: the tokens that continue a word -- letters only, without the word-start mark their tokenizer
    puts on a word's first piece ('ana' of 'Zuz|ana', 'ford' of 'ĠDal|ford'). Numbers, punctuation, special tokens and
    every word's first piece are False. A vocabulary with no word-start marks (a word-level tokenizer: every token is
    a whole word) has no pieces. ``vocab_size``: the model's (padded) vocabulary; ids past the tokenizer's are False."""
    size = int(vocab_size) if vocab_size else len(tokenizer)
    n = min(len(tokenizer), size)
    tokens = tokenizer.convert_ids_to_tokens(list(range(n)))
    tokens = ["" if t is None else str(t) for t in tokens]
    if not any(t.startswith(WORD_STARTS) for t in tokens):
        return torch.zeros(size, dtype=torch.bool)
    special = set(getattr(tokenizer, "all_special_tokens", ()) or ())
    out = torch.zeros(size, dtype=torch.bool)
    out[:n] = torch.tensor([t.isalpha() and not t.startswith(WORD_STARTS) and t not in special for t in tokens],
                           dtype=torch.bool)
    return out


def ensure_pieces(head: "GuidanceHead", tokenizer) -> bool:
    """Give ``head`` its tokenizer's word-piece table if it was saved without one (the table training makes: a pure
    function of the tokenizer); True when it was added."""
    if head.pieces is not None:
        return False
    head.set_pieces(word_pieces(tokenizer, head.vocab_size))
    return True


NO_SUPPORT = ("this head has no support statistics (it was saved by an earlier t3unlearn); retrain it with "
              "'t3unlearn unlearn', or leave the support knob unset (--support none).")


def _activation(name: str) -> nn.Module:
    if name == "identity":
        return nn.Identity()
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    if name == "tanh":
        return nn.Tanh()
    raise ModelError(f"unknown head activation {name!r}; choose one of {', '.join(ACTIVATIONS)}.")


def _ledoit_wolf(feats: torch.Tensor, mean: torch.Tensor) -> float:
    """scikit-learn's Ledoit-Wolf shrinkage of the covariance of ``feats`` (a strided sample of at most
    :attr:`SupportGate.LW_POSITIONS` rows): near 0 with many positions per dimension, near 1 with few."""
    from sklearn.covariance import ledoit_wolf_shrinkage

    step = max(1, -(-len(feats) // SupportGate.LW_POSITIONS))
    x = (feats[::step].double() - mean).cpu().numpy()
    return float(ledoit_wolf_shrinkage(x, assume_centered=True))


class SupportGate(nn.Module):
    """The head's training support: how far a pooled state is from the states the head was trained on.

    The distance is Mahalanobis, ``d(x) = sqrt((x - mean)ᵀ P (x - mean))``, with ``P`` the inverse of the
    training states' covariance shrunk toward its mean variance by the Ledoit-Wolf amount (scikit-learn's
    estimate on at most :attr:`LW_POSITIONS` positions; at least :attr:`SHRINKAGE`), as in Mahalanobis
    out-of-distribution detection (Lee et al., 2018). ``quantiles`` are the training positions' distances
    at ``q = 0, 0.001, ..., 1``; :meth:`weight` is 1 inside the ``q``-quantile of those distances and decays
    as ``exp(-(d - d_q) / spread)`` beyond it (``spread``: their standard deviation). Buffers, float32,
    saved with the head.
    """

    SHRINKAGE = 0.01  # the least shrinkage
    LW_POSITIONS = 20_000
    N_QUANTILES = 1001
    MAX_POSITIONS = 1_000_000  # distances for the quantiles: at most this many training positions (strided)

    def __init__(self, dim: int):
        super().__init__()
        self.dim = int(dim)
        self.register_buffer("mean", torch.zeros(self.dim))
        self.register_buffer("precision", torch.zeros(self.dim, self.dim))
        self.register_buffer("quantiles", torch.zeros(self.N_QUANTILES))
        self.register_buffer("spread", torch.ones(1))

    @classmethod
    @torch.no_grad()
    def fit(cls, feats: torch.Tensor, *, chunk: int = 65536) -> "SupportGate":
        """The gate of the pooled training states ``feats`` ``(N, d)`` (float64 sums, deterministic)."""
        n, d = feats.shape
        if n < 2:
            raise ModelError("the support gate needs at least two training positions.")
        gate = cls(d).to(feats.device)
        total = torch.zeros(d, dtype=torch.float64, device=feats.device)
        for i in range(0, n, chunk):
            total += feats[i : i + chunk].double().sum(0)
        mean = total / n
        cov = torch.zeros(d, d, dtype=torch.float64, device=feats.device)
        for i in range(0, n, chunk):
            z = feats[i : i + chunk].double() - mean
            cov += z.T @ z
        cov /= n
        lam = max(cls.SHRINKAGE, _ledoit_wolf(feats, mean))
        eye = torch.eye(d, dtype=torch.float64, device=feats.device)
        shrunk = (1 - lam) * cov + lam * (cov.trace() / d).clamp_min(1e-12) * eye
        gate.mean.copy_(mean.float())
        gate.precision.copy_(torch.cholesky_inverse(torch.linalg.cholesky(shrunk)).float())
        step = max(1, -(-n // cls.MAX_POSITIONS))
        sample = feats[::step]
        dist = torch.cat([gate.distance(sample[i : i + chunk]) for i in range(0, len(sample), chunk)])
        q = torch.linspace(0, 1, cls.N_QUANTILES, dtype=torch.float64, device=dist.device)
        gate.quantiles.copy_(torch.quantile(dist.double(), q).float())
        gate.spread.fill_(max(float(dist.double().std()), 1e-6))
        return gate

    def distance(self, pooled: torch.Tensor) -> torch.Tensor:
        """Mahalanobis distance of each pooled state to the training states: ``(..., d) -> (...)``."""
        z = pooled.float() - self.mean
        return ((z @ self.precision) * z).sum(-1).clamp_min(0).sqrt()

    def threshold(self, q: float) -> torch.Tensor:
        """The training positions' distance at quantile ``q`` (linear between the stored quantiles)."""
        x = float(q) * (self.N_QUANTILES - 1)
        lo = min(int(x), self.N_QUANTILES - 2)
        return self.quantiles[lo] + (x - lo) * (self.quantiles[lo + 1] - self.quantiles[lo])

    def weight(self, pooled: torch.Tensor, q: float) -> torch.Tensor:
        """``(..., d) -> (..., 1)``: 1 within the training distances' ``q``-quantile, fading beyond it."""
        excess = (self.distance(pooled) - self.threshold(q)).clamp_min(0)
        return torch.exp(-excess / self.spread).unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"d={self.dim}"


class GuidanceHead(nn.Module):
    """Classifier head of T3 (see the module doc). Parameters are float32."""

    def __init__(self, in_features: int, hidden: int, vocab_size: int, *, activation: str = "identity", layers: int = 1):
        super().__init__()
        check_head_shape(in_features, hidden, vocab_size, activation, layers)
        self.in_features, self.hidden, self.vocab_size = int(in_features), int(hidden), int(vocab_size)
        self.activation, self.layers = activation, int(layers)
        self.inp = nn.Linear(self.in_features, self.hidden, bias=False)
        self.mid = nn.ModuleList(nn.Linear(self.hidden, self.hidden, bias=False) for _ in range(self.layers - 1))
        self.out = nn.Linear(self.hidden, self.vocab_size, bias=False)
        self.act = _activation(activation)
        self.register_module("support", None)  # a SupportGate once fitted (fit_support)
        self.register_buffer("pieces", None)  # (V,) 1.0 where a token continues a word (set_pieces), saved with the head

    def set_pieces(self, pieces: torch.Tensor) -> "GuidanceHead":
        """Record which tokens continue a word (:func:`word_pieces`; ``(V,)`` bool, kept as float32 0/1)."""
        if pieces.shape != (self.vocab_size,):
            raise ModelError(f"the word-piece table has {tuple(pieces.shape)} entries; this head's vocabulary is {self.vocab_size}.")
        self.pieces = pieces.to(device=self.out.weight.device, dtype=torch.float32)
        return self

    def piece_mask(self) -> torch.Tensor:
        """``(V,)`` bool: the tokens that continue a word (a ModelError for a head saved without the table)."""
        if self.pieces is None:
            raise ModelError(NO_PIECES)
        return self.pieces > 0.5

    def fit_support(self, feats: torch.Tensor) -> "GuidanceHead":
        """Fit the :class:`SupportGate` on the pooled training states ``feats`` ``(N, d)``."""
        self.support = SupportGate.fit(feats)
        return self

    def support_weight(self, pooled: torch.Tensor, q: float | None) -> torch.Tensor | None:
        """The gate's weight ``(..., 1)`` at quantile ``q`` (None for ``q=None``)."""
        if q is None:
            return None
        if self.support is None:
            raise ModelError(NO_SUPPORT)
        return self.support.weight(pooled, q)

    def embed(self, pooled: torch.Tensor) -> torch.Tensor:
        z = self.act(self.inp(pooled))
        for layer in self.mid:
            z = self.act(layer(z))
        return z

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """All ``V`` logits: ``(..., d) -> (..., V)``."""
        return self.out(self.embed(pooled))

    def gather(self, pooled: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The logit of ``tokens`` only: ``(N, d), (N,) -> (N,)``, without the ``V``-wide product."""
        z = self.embed(pooled)
        return (z * self.out.weight[tokens]).sum(-1)

    @classmethod
    def ensemble(cls, members: "list[GuidanceHead]") -> "GuidanceHead":
        """One head whose logits are the mean of ``members``' logits (heads of one shape, trained with different
        seeds): the members' hidden units side by side, the middle layers block-diagonal, the output layer
        ``[W_1 ... W_K] / K``. It is an ordinary :class:`GuidanceHead` of width ``K h`` (saved, served and
        calibrated like any other); the support gate is the first member's (it depends on the features only)."""
        if not members:
            raise ModelError("an ensemble needs at least one head.")
        first = members[0]
        if any(m.shape_dict() != first.shape_dict() for m in members):
            raise ModelError("the heads of an ensemble must have one shape (input, width, vocabulary, activation, layers).")
        if len(members) == 1:
            return first
        k = len(members)
        out = cls(first.in_features, first.hidden * k, first.vocab_size, activation=first.activation, layers=first.layers)
        with torch.no_grad():
            out.inp.weight.copy_(torch.cat([m.inp.weight for m in members]))
            for i, layer in enumerate(out.mid):
                layer.weight.copy_(torch.block_diag(*[m.mid[i].weight for m in members]))
            out.out.weight.copy_(torch.cat([m.out.weight for m in members], 1).div_(k))
        out.support = first.support
        if first.pieces is not None:
            out.set_pieces(first.pieces)
        return out.to(first.inp.weight.device)

    def shape_dict(self) -> dict:
        return {
            "in_features": self.in_features,
            "hidden": self.hidden,
            "vocab_size": self.vocab_size,
            "activation": self.activation,
            "layers": self.layers,
        }

    def extra_repr(self) -> str:
        return f"d={self.in_features}, h={self.hidden}, V={self.vocab_size}, activation={self.activation}, layers={self.layers}"
