"""The guidance head: pooled hidden state -> one logit of P(retain | prefix, next token = v) per token v.

    Linear(d -> h, no bias) -> act -> [Linear(h -> h, no bias) -> act] * (layers - 1) -> Linear(h -> V, no bias)

With the default identity activation the head is a rank-``h`` linear map ``d -> V`` (more
layers would add nothing, so they are refused). Training only ever needs the logit of the
realized next token: :meth:`GuidanceHead.gather` takes the rows of the last weight for those
tokens instead of computing all ``V`` logits.
"""

from __future__ import annotations

import torch
from torch import nn

from t3unlearn.errors import ModelError
from t3unlearn.t3.config import ACTIVATIONS, check_head_shape  # noqa: F401 - part of this module's API


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
