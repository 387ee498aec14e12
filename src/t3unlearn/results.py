"""What every unlearning method returns: :class:`UnlearnResult` (the model, its tokenizer, a report, the cost).

T3 (:func:`t3unlearn.t3.unlearn`), the fine-tuning baselines
(:func:`t3unlearn.baselines.unlearn_baseline`) and ULD (:func:`t3unlearn.baselines.train_uld`) all
return one, so code that runs several methods never branches on which one it ran::

    result = unlearn_baseline("npo", "MODEL_DIR", forget, retain, out="npo")
    result.model, result.tokenizer          # a transformers causal LM and its tokenizer
    result.cost.wall_seconds, result.cost.peak_rss_mb, result.cost.trainable_params
    result.report                           # method-specific: steps, settings, per-step losses, ...
    result.out                              # where it was saved (None if not saved)

:func:`measure` times a block and reads the process's peak resident memory
(``resource.getrusage``); run the block in a fresh process, as ``t3unlearn compare`` does, to make
peaks of different methods comparable.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator


@dataclass
class Cost:
    """What unlearning cost: wall time of the unlearning step (loading and saving excluded), the peak
    resident memory of the process up to its end, the number of trained parameters."""

    wall_seconds: float
    peak_rss_mb: float | None = None
    trainable_params: int | None = None
    gpu_peak_mb: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None or k != "gpu_peak_mb"}


@dataclass
class UnlearnResult:
    """The result of any unlearning method (see the module doc).

    Unpacks as ``model, report = result`` (the form T3's ``unlearn`` has always returned).
    """

    model: Any
    tokenizer: Any
    report: dict = field(default_factory=dict)
    cost: Cost = field(default_factory=lambda: Cost(0.0))
    out: Path | None = None
    method: str = ""

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.report))

    def to_dict(self) -> dict[str, Any]:
        """Everything but the model and tokenizer, JSON-ready."""
        return {"method": self.method, "out": None if self.out is None else str(self.out), "cost": self.cost.to_dict(),
                "report": self.report}


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far, in MiB; None where unavailable.

    Linux: ``VmHWM`` of ``/proc/self/status``, the peak of this process's own address space. Not
    ``getrusage``'s ``ru_maxrss``: that one carries over the peak of the address space a process had
    before it exec'd, so a child started by a large parent (``subprocess`` forks it first) reports
    the parent's peak. Elsewhere ``getrusage``.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB elsewhere


@dataclass
class Measurement:
    """Filled in when the ``with measure() as m:`` block ends."""

    wall_seconds: float = 0.0
    peak_rss_mb: float | None = None
    gpu_peak_mb: float | None = None

    def cost(self, trainable_params: int | None = None) -> Cost:
        return Cost(self.wall_seconds, self.peak_rss_mb, trainable_params, self.gpu_peak_mb)


@contextlib.contextmanager
def measure() -> Iterator[Measurement]:
    """Time the block; then read the process's peak resident memory and, with a GPU, its peak allocation."""
    m = Measurement()
    cuda = _cuda()
    if cuda is not None:
        cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        yield m
    finally:
        m.wall_seconds = time.perf_counter() - t0
        m.peak_rss_mb = peak_rss_mb()
        if cuda is not None:
            m.gpu_peak_mb = cuda.max_memory_allocated() / 2**20


def _cuda():
    torch = sys.modules.get("torch")  # never import torch just to ask
    if torch is not None and torch.cuda.is_available():
        return torch.cuda
    return None


__all__ = ["Cost", "UnlearnResult", "Measurement", "measure", "peak_rss_mb"]
