"""How a T3 head guides an image generator, and the defaults: one table. No torch (``--help`` reads it).

The image side's knobs are the LLM side's T and s, plus the diffusion *scheme* -- how ``p^(1/T)`` is sampled
(:mod:`t3unlearn.images.t3`): ``score`` (the score scaled by 1/T), ``adaptive`` (a per-sample T, the LLM side's
adaptive tempering carried over) or ``langevin`` (corrector steps toward the tempered target). The LLM side's
``tempering`` (``global`` / ``adaptive``: *where* the base is tempered) is another knob; the scheme was called
``tempering`` before, and that name is still read (a saved head's ``guidance.json``, ``--set tempering=...``).
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, fields

from t3unlearn.errors import T3Error

SCHEMES = ("score", "langevin", "adaptive")
RENAMED = {"tempering": "scheme"}  # old setting name -> new


@dataclass(frozen=True)
class ImageGuidance:
    """How a guided sampler draws: p^(1/T) · f^s, and the scheme that samples p^(1/T) for diffusion models. The
    defaults are the DDPM's (:data:`GUIDANCE_DEFAULTS`)."""

    temperature: float = 1.5
    scale: float = 3.0
    scheme: str = "adaptive"  # DDPM only: score | langevin | adaptive (module doc)
    langevin_steps: int = 1  # corrector steps per level (langevin)
    final_langevin_steps: int = 30  # more corrector steps at the last level (langevin)
    snr: float = 0.1  # corrector step size: eta = 2 (snr ||z|| / ||grad||)^2
    langevin_min_sigma: float = 0.1  # no correction below this noise level (learned scores blow up there)
    max_rounds: int = 50  # VAE rejection sampling: proposal rounds before the last ones are kept

    def __post_init__(self):
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise T3Error(f"temperature must be a positive number, not {self.temperature}.")
        if not (self.scale >= 0 and math.isfinite(self.scale)):
            raise T3Error(f"scale must be >= 0, not {self.scale}.")
        if self.scheme not in SCHEMES:
            raise T3Error(f"unknown sampling scheme {self.scheme!r}; choose one of {', '.join(SCHEMES)}.")
        if self.langevin_steps < 0 or self.final_langevin_steps < 0:
            raise T3Error("langevin_steps and final_langevin_steps must be >= 0.")
        if not 0 <= self.langevin_min_sigma < 1:
            raise T3Error(f"langevin_min_sigma must lie in [0, 1), not {self.langevin_min_sigma}.")
        if not self.snr > 0:
            raise T3Error(f"snr must be > 0, not {self.snr}.")
        if self.max_rounds < 1:
            raise T3Error(f"max_rounds must be >= 1, not {self.max_rounds}.")

    @classmethod
    def from_dict(cls, d: dict | None) -> "ImageGuidance":
        """From a dict of settings (a saved head's, a method's); old names (``tempering``) are read as the new."""
        d = {RENAMED.get(k, k): v for k, v in (d or {}).items()}
        known = {f.name for f in fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise T3Error(f"unknown guidance setting(s) {', '.join(bad)}; known: {', '.join(sorted(known))}.")
        return cls(**d)


# The defaults, by method and family: chosen by hand on seed 0 of the default preset (docs/images.md, "T3 for
# images"). ImageGuidance's own defaults are the DDPM's; the VAE's tilt needs a larger s (its decoded-sample
# classifier is less sure of blurry samples). Classifier guidance (cg) is the same classifier at T = 1.
FAMILY_DEFAULTS = {"ddpm": {}, "vae": {"temperature": 1.2, "scale": 10.0}}
CG = {"temperature": 1.0, "scheme": "score"}


def guidance_defaults(method: str = "t3", family: str = "ddpm") -> dict:
    """Every guidance setting of ``method`` (t3 or cg) on ``family`` (ddpm or vae) at its default."""
    d = {**asdict(ImageGuidance()), **FAMILY_DEFAULTS[family]}
    return {**d, **CG} if method == "cg" else d


def family_params(method: str, family: str) -> dict:
    """The settings in which ``family``'s defaults differ from the method's own (a preset's ``params``)."""
    base, fam = guidance_defaults(method, "ddpm"), guidance_defaults(method, family)
    return {k: v for k, v in fam.items() if base[k] != v}


def renamed_settings(params: dict, known) -> dict:
    """``params`` with old setting names (``tempering``) replaced by the new ones that ``known`` holds; one line on
    stderr for each."""
    out = {}
    for k, v in params.items():
        new = RENAMED.get(k)
        if new is not None and new in known and new not in params:
            print(f"warning: the setting {k} is now called {new}; use --set {new}={v} (the old name will be removed).",
                  file=sys.stderr)
            k = new
        out[k] = v
    return out
