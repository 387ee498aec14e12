"""The calibration grid and the rule that picks one of its settings (:mod:`t3unlearn.t3.calibrate` scores them).

The default grid treats words two ways (:data:`~t3unlearn.t3.config.CALIBRATION_WORDS`): *whole words* -- a word
once begun is finished as the base would finish it (the word-piece exemption at 10, the base spelling a word's later
pieces) -- and *plain tokens* (every token tempered and tilted alike, the paper's guidance). Whole words read better
(words the base spells rather than strung-together pieces: fewer non-words), so the rule prefers them: among the feasible settings it keeps the best
whole-word one unless a plain one matches the reference by more than the two-sample Kolmogorov-Smirnov test can tell
apart at the 5 % level (:func:`ks_resolution`, from the two samples' sizes). On the embedded world the two match
within that resolution and whole words are kept; on TOFU's long answers with a tokenizer that splits more words, the
base spelling leaves most of an answer's tokens as they were and the forget truth ratios cannot move, and the plain
tilt is kept (docs/t3.md, "Calibration without the oracle").
"""

from __future__ import annotations

import itertools
import math
from typing import Iterable, Sequence

from t3unlearn.errors import T3Error
from t3unlearn.t3.config import TEMPERINGS, Guidance

Setting = Guidance  # one point of the guidance grid: T, s, tempering, tail guard, bias, support gate, floor, ...
KS_ALPHA = 0.05  # the level at which two KS distances count as told apart (ks_resolution)
# the rule's name, part of the keys under which a comparison caches its calibrations
CHOICE = "closest feasible; whole words within the KS test's resolution at 5 %"


def grid(temperatures: Iterable[float], scales: Iterable[float], temperings: Iterable[str] = ("global",),
         tails: Iterable[float | None] = (None,), biases: Iterable[float] = (0.0,),
         supports: Iterable[float | None] = (None,), floors: Iterable[float | None] = (None,),
         copy_floors: Iterable[float | None] = (None,), piece_floors: Iterable[float | None] = (None,),
         spellings: Iterable[str] = ("guided",), words: Iterable[tuple[float | None, str]] | None = None) -> list[Setting]:
    """Every combination; ``T = 1`` appears once per scale, bias, support, floor, copy floor, piece floor and spelling
    (tempering and tail are then moot). ``words``: ``(piece floor, spelling)`` pairs to take instead of every pair of
    ``piece_floors`` x ``spellings``."""
    pairs = list(words) if words is not None else list(itertools.product(piece_floors, spellings))
    out, seen = [], set()
    for T, s, mode, tail, b, q, fl, cf, (pf, sp) in itertools.product(temperatures, scales, temperings, tails, biases,
                                                                      supports, floors, copy_floors, pairs):
        if mode not in TEMPERINGS:
            raise T3Error(f"unknown tempering {mode!r}; choose one of {', '.join(TEMPERINGS)}.")
        st = (Setting(float(T), float(s), "global", None, float(b), q, fl, cf, pf, sp) if float(T) == 1.0
              else Setting(float(T), float(s), mode, tail, float(b), q, fl, cf, pf, sp))
        if st not in seen:
            seen.add(st)
            out.append(st)
    return out


def ks_resolution(n: int, m: int, alpha: float = KS_ALPHA) -> float:
    """The smallest KS distance between samples of sizes ``n`` and ``m`` that the two-sample test rejects at level
    ``alpha`` (the asymptotic critical value sqrt(-ln(alpha / 2) / 2) x sqrt((n + m) / (n m))): two settings whose
    distances to the same reference differ by less are not told apart by it. 0 for an empty sample."""
    if n < 1 or m < 1:
        return 0.0
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


def choose(rows: Sequence, tolerance: float, mia_tolerance: float, resolution: float = 0.0):
    """The rule over scored rows (:class:`~t3unlearn.t3.calibrate.CalibrationRow`): the feasible row with the smallest
    objective (ties: smaller s, then smaller T) -- the best whole-word row instead when its objective is within
    ``resolution`` of that one's; with none feasible, the row that misses the constraints by least (not the best
    objective)."""
    feasible = [r for r in rows if r.feasible]
    if feasible:
        def rank(r):
            return round(r.objective(), 6), r.setting.scale, r.setting.temperature

        best = min(feasible, key=rank)
        whole = [r for r in feasible if r.setting.reads_pieces]
        if whole and not best.setting.reads_pieces:
            best_whole = min(whole, key=rank)
            if best_whole.objective() <= best.objective() + resolution:
                return best_whole
        return best

    def miss(r) -> float:
        short = max(0.0, (1 - tolerance) - r.retain_ratio)
        return short + max(0.0, abs(r.mia_auc - 0.5) - mia_tolerance)

    return min(rows, key=lambda r: (round(miss(r), 6), round(r.objective(), 6), r.setting.scale, r.setting.temperature))


def settled(rows: Iterable, resolution: float) -> bool:
    """Whether :func:`choose` is bound to keep a whole-word row whatever plain rows are added: a feasible whole-word
    row is within ``resolution`` of a perfect match (objective 0), so no plain row can be closer by more."""
    return any(r.feasible and r.setting.reads_pieces and r.objective() <= resolution for r in rows)
