"""t3unlearn: Temper-Then-Tilt unlearning for generative models.

The base model stays frozen; a small classifier head tilts its tempered next-token
distribution away from a forget set:  p_T3 ∝ p^(1/T) · f^s.

Heavy imports (torch, transformers) are deferred so that ``t3unlearn --help`` is instant.
"""

import os as _os

__version__ = "0.1.0"

# Same seed, same machine -> same numbers, whatever the load: ``--threads auto`` follows the load, and MKL's
# matrix products (torch's CPU BLAS) split long reductions by thread count unless its conditional numerical
# reproducibility is on. STRICT keeps the machine's fastest code path and makes them thread-count invariant.
# MKL reads this once, at its first call: import t3unlearn before any torch work (a value you set is kept).
_os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

from t3unlearn.lazy import lazy_exports

_LAZY = {
    "T3ForCausalLM": "t3unlearn.t3.model",
    "T3Config": "t3unlearn.t3.model",
    "CausalLM": "t3unlearn.lm",
    "load_lm": "t3unlearn.lm",
    "load_qa": "t3unlearn.data",
    "T3Error": "t3unlearn.errors",
}

__all__ = ["__version__", *_LAZY]


__getattr__ = lazy_exports(__name__, _LAZY)
