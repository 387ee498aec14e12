"""Choosing T, s and the other guidance knobs without the oracle.

Users never have a retain model. What they can have is *held-out* data: items of the same kind as the
forget set that the model never trained on (TOFU ships holdout authors; the world has a calibration set).
An unlearned model should treat the forget items the way it treats those: as unknown. Calibration scores
a grid of guidance settings on three sets with the head trained once:

- forget and holdout: each item's answer loss under the guided model; the objective is the two-sample
  Kolmogorov-Smirnov distance between the two loss distributions (0: the forget answers look exactly as
  unfamiliar as never-seen ones; too little guidance leaves them more familiar, too much makes them
  *less* likely than unknown answers, which an attacker reads as well);
- forget and holdout again, as a membership attack reads them: the min-k AUC between the two sets must
  stay within ``mia_tolerance`` of 0.5. Mean losses can match while the forget answers' least likely
  tokens stay more familiar than a never-seen answer's; that is what privleak measures;
- retain: the mean answer probability under the guided model, which must stay within ``tolerance``
  (relative) of the base's: retained knowledge is not to be taxed.

Every setting reuses one forward pass of the base per set: the base's final hidden states and pooled
states at the answer positions are kept. The grid is then scored chunk by chunk of positions: the base's
output layer, the head, and what guidance derives from them alone (the head's log-sigmoid, the forget mass,
the support gate's weight) are computed once per chunk, and each setting costs only its tempering, tilt and
softmax there -- bit for bit what :func:`token_logprobs` gives setting by setting.
The chosen values are saved in the head (``t3_config.json``).

What TOFU's forget quality tests is the forget items' *truth ratios* (a perturbed answer's probability against the
paraphrased answer's) under the unlearned model against the oracle's. Where the calibration items carry
paraphrased and perturbed answers, the objective is the KS distance between the forget truth ratios under the
guided model and the *base's own* truth ratios on the calibration items: authors it never saw, judged by a model
that learned everything else the data teaches (the oracle's view of the forget authors, without the oracle).
Without them, a model that never saw the forget set (``reference``: the checkpoint the base was fine-tuned from)
gives its truth ratios on the forget items instead; it never learned the rest of the data either, which is why
the calibration items are preferred.

With an *oracle* -- a model that never saw the forget set, such as the retain model a benchmark ships --
every setting is also scored the way TOFU's evaluation scores a model against it: forget quality (the KS
test's p-value between the forget truth ratios under the guided model and under the oracle) and privleak
(min-k membership AUC on forget vs holdout, relative to the oracle's). Those columns are never used to
choose; they show how close the oracle-free choice comes to the setting an oracle would pick.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from t3unlearn.errors import T3Error
from t3unlearn.t3.config import (CALIBRATION_COPY_FLOORS, CALIBRATION_SCALES, CALIBRATION_SUPPORTS, CALIBRATION_TEMPERATURES,
                                 CALIBRATION_TEMPERINGS, CALIBRATION_WORDS)
from t3unlearn.t3.grid import Setting, choose, grid, ks_resolution, settled  # noqa: F401 (grid: API)
from t3unlearn.t3.answer_states import AnswerStates, answer_states, grid_logprobs, state_cache, token_logprobs  # noqa: F401 (API)

MIN_K = 0.4
RETAIN_TOLERANCE = 0.03  # the retain answers' probability may fall at most this much (relative) below the base's
MIA_TOLERANCE = 0.075  # the forget-vs-holdout min-k AUC must stay within 0.5 ± this (docs/t3.md, "Privleak in the band")
ORACLE_PRIVLEAK = 15.0  # the oracle check's second pick: privleak within ± this (the band docs/comparison.md reads)


# --------------------------------------------------------------------------- the answers' statistics


def item_stats(logprobs: torch.Tensor, states: AnswerStates) -> dict[str, np.ndarray]:
    """Per item: ``avg_loss`` (answer tokens and EOS, as TOFU), ``prob`` and the ``min_k`` attack score
    (answer tokens without EOS, k = 0.4)."""
    seq = states.seq.cpu().numpy()
    lp = logprobs.numpy().astype(np.float64)
    last = states.last.cpu().numpy()
    n = states.n_items
    counts = np.bincount(seq, minlength=n)
    sums = np.bincount(seq, weights=lp, minlength=n)
    avg_loss = -sums / np.maximum(counts, 1)
    return {"avg_loss": avg_loss, "prob": np.exp(-avg_loss), "min_k": _min_k(lp[~last], seq[~last], n)}


def _min_k(lp: np.ndarray, seq: np.ndarray, n: int) -> np.ndarray:
    """Per item: minus the mean of its lowest ``max(1, int(count · MIN_K))`` log-probs (0 for an item without any).
    One sort for all items, then one row-wise mean per distinct k: numpy sums each contiguous row pairwise, as
    ``np.sort(item)[:k].mean()`` does item by item, so the figures are the same bits."""
    vals = lp[np.lexsort((lp, seq))]  # item by item, each item's log-probs ascending
    counts = np.bincount(seq, minlength=n)
    k = np.maximum(1, (counts * MIN_K).astype(np.int64))
    starts = np.cumsum(counts) - counts
    out = np.zeros(n)
    for kk in np.unique(k[counts > 0]):
        items = np.flatnonzero((k == kk) & (counts > 0))
        out[items] = -vals[starts[items, None] + np.arange(kk)].mean(axis=1)
    return out


# --------------------------------------------------------------------------- the objective


def ks_distance(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import ks_2samp

    return float(ks_2samp(np.asarray(a), np.asarray(b)).statistic)


def auc(members: Sequence[float], non_members: Sequence[float]) -> float:
    """ROC AUC of a score that is higher for non-members (the MIA convention of the evaluation)."""
    from sklearn.metrics import roc_auc_score

    y = np.concatenate([np.zeros(len(members)), np.ones(len(non_members))])
    return float(roc_auc_score(y, np.concatenate([members, non_members])))


@dataclass
class TruthRatioReference:
    """What the forget items' truth ratios should look like: those of a model that never saw them.

    ``para`` / ``pert``: the base's states on the forget items' paraphrased and perturbed answers (``n_pert``
    perturbed answers per item, item-major); ``reference``: the truth ratios to match -- the base's on never-seen
    calibration items (``source`` "calibration") or a reference model's on the forget items (``source`` "model")."""

    para: AnswerStates
    pert: AnswerStates
    n_pert: int
    reference: np.ndarray | None
    source: str = "model"


@dataclass
class OracleCheck:
    """What an oracle (a model that never saw the forget set) says of each setting: its forget truth ratios and
    its forget-vs-holdout min-k AUC, the two references of TOFU's forget quality and privleak."""

    truth_ratios: np.ndarray
    auc: float


def forget_quality(truth_ratios: Sequence[float], oracle_truth_ratios: Sequence[float]) -> float:
    """TOFU's forget quality: the two-sample KS test's p-value (scipy's defaults)."""
    from scipy.stats import ks_2samp

    return float(ks_2samp(np.asarray(truth_ratios), np.asarray(oracle_truth_ratios)).pvalue)


def privleak(mia_auc: float, oracle_auc: float) -> float:
    """The relative membership-attack advantage over the oracle's, in % (0: the oracle's; TOFU's privleak)."""
    return ((1 - mia_auc) - (1 - oracle_auc)) / ((1 - oracle_auc) + 1e-10) * 100


def truth_ratios(model, head, para: AnswerStates, pert: AnswerStates, n_pert: int, setting: Setting) -> np.ndarray:
    """Per item: the perturbed answers' geometric-mean per-token probability over the paraphrased answer's
    (TOFU's truth ratio, as the evaluation computes it for forget quality)."""
    return _truth_ratios_of(token_logprobs(model, head, para, setting), token_logprobs(model, head, pert, setting),
                            para, pert, n_pert)


def _truth_ratios_of(lp_para, lp_pert, para: AnswerStates, pert: AnswerStates, n_pert: int) -> np.ndarray:
    p = item_stats(lp_para, para)["avg_loss"]
    q = item_stats(lp_pert, pert)["avg_loss"].reshape(-1, n_pert)
    return np.exp(-q.mean(1)) / (np.exp(-p) + 1e-10)


@dataclass
class CalibrationRow:
    setting: Setting
    ks: float  # KS distance, forget vs holdout answer losses (the objective without a reference; lower is better)
    mia_auc: float  # min-k AUC forget vs holdout (0.5: indistinguishable)
    forget_prob: float
    holdout_prob: float
    retain_prob: float
    retain_ratio: float  # retain_prob / the base's
    feasible: bool
    tr_ks: float | None = None  # KS distance, forget truth ratios vs the reference model's (the objective with one)
    forget_quality: float | None = None  # with an oracle: TOFU's forget quality against it (never used to choose)
    privleak: float | None = None  # with an oracle: TOFU's privleak against it, on the calibration holdout
    tr_median: float | None = None  # the median forget truth ratio under the setting (with a reference or an oracle)

    def objective(self) -> float:
        return self.ks if self.tr_ks is None else self.tr_ks

    def as_dict(self) -> dict:
        d = asdict(self)
        d["setting"] = asdict(self.setting)
        d["label"] = self.setting.label()
        return d


@dataclass
class Calibration:
    rows: list[CalibrationRow]
    chosen: CalibrationRow
    base_retain_prob: float
    tolerance: float
    mia_tolerance: float | None = None  # |MIA AUC - 0.5| allowed
    reference_tr_median: float | None = None  # the reference's median truth ratio (with one)
    reference_source: str | None = None  # "calibration": the base's truth ratios on the calibration items; "model"
    oracle_tr_median: float | None = None  # the oracle's (with one; a report, never used to choose)
    resolution: float = 0.0  # KS distances closer than this are not told apart (t3unlearn.t3.grid.ks_resolution)
    unscored: int = 0  # plain settings of the grid left unscored: a whole-word one was already within the resolution

    @property
    def uses_reference(self) -> bool:
        return self.chosen.tr_ks is not None

    @property
    def uses_oracle(self) -> bool:
        return self.chosen.forget_quality is not None

    def restricted(self, keep) -> "Calibration":
        """The same rows and rule over the settings ``keep(setting)`` accepts -- e.g. plain guidance's choice,
        ``keep=lambda s: s.temperature == 1``, from the grid already scored."""
        rows = [r for r in self.rows if keep(r.setting)]
        if not rows:
            raise T3Error("no setting of the calibration grid is kept; widen the grid.")
        return Calibration(rows, choose(rows, self.tolerance, self.mia_tolerance, self.resolution), self.base_retain_prob,
                           self.tolerance, self.mia_tolerance, reference_source=self.reference_source,
                           resolution=self.resolution)

    def oracle_best(self, privleak_within: float | None = None) -> CalibrationRow | None:
        """The setting an oracle would pick: the highest forget quality among the settings that keep the retain
        answers' probability (the utility constraint the oracle-free rule has) and, with ``privleak_within``,
        whose privleak is within that band of 0 (ties: the smaller |privleak|). None without an oracle, or when no
        setting is in the band."""
        if not self.uses_oracle:
            return None
        kept = [r for r in self.rows if r.retain_ratio >= 1 - self.tolerance] or self.rows
        if privleak_within is not None:
            kept = [r for r in kept if abs(r.privleak) <= privleak_within]
        return max(kept, key=lambda r: (round(r.forget_quality, 12), -abs(r.privleak)), default=None)

    def oracle_summary(self) -> str:
        """The chosen setting's forget quality and privleak against the oracle, beside the settings an oracle would
        pick: by forget quality alone, and by forget quality with privleak within ±ORACLE_PRIVLEAK."""
        best = self.oracle_best()
        if best is None:
            return ""
        c = self.chosen

        def pick(r: CalibrationRow | None, what: str) -> str:
            if r is None:
                return f"{what}: none in the grid"
            ratio = r.forget_quality / c.forget_quality if c.forget_quality > 0 else math.inf
            return (f"{what}: {r.setting.label()}: {r.forget_quality:.3g}, privleak {r.privleak:+.1f}"
                    + (" (the chosen one)" if r is c else f" ({ratio:.3g}x the chosen's forget quality)"))

        return (f"oracle check (never used to choose): chosen {c.setting.label()}: forget quality {c.forget_quality:.3g}, "
                f"privleak {c.privleak:+.1f}\n  " + pick(best, "the oracle's pick (best forget quality keeping the retain answers)")
                + "\n  " + pick(self.oracle_best(ORACLE_PRIVLEAK), f"the same with privleak within ±{ORACLE_PRIVLEAK:g}"))

    def as_dict(self) -> dict:
        objective = ("KS distance between the forget truth ratios and the base's on the calibration items"
                     if self.reference_source == "calibration"
                     else "KS distance between the forget truth ratios and the reference model's" if self.uses_reference
                     else "KS distance between forget and holdout answer losses")
        best, banded = self.oracle_best(), self.oracle_best(ORACLE_PRIVLEAK)
        return {"chosen": self.chosen.as_dict(), "base_retain_prob": self.base_retain_prob, "tolerance": self.tolerance,
                "oracle_best": None if best is None else best.as_dict(),
                "oracle_best_privleak_within": None if banded is None else {"band": ORACLE_PRIVLEAK, **banded.as_dict()},
                "objective": f"{objective}, retain prob >= (1 - tolerance) x base, |MIA AUC - 0.5| <= mia_tolerance",
                "mia_tolerance": self.mia_tolerance, "ks_resolution": self.resolution, "unscored": self.unscored,
                "reference_tr_median": self.reference_tr_median,
                "reference_source": self.reference_source,
                "oracle_tr_median": self.oracle_tr_median,
                "rows": [r.as_dict() for r in self.rows]}

    def table(self, top: int | None = 12) -> str:
        rows = sorted(self.rows, key=lambda r: (not r.feasible, r.objective()))
        ref, orc = self.uses_reference, self.uses_oracle
        best = self.oracle_best()
        shown = (rows[:top] if top else rows) + ([best] if best is not None and best not in rows[:top or None] else [])
        w = max([48] + [len(r.setting.label()) for r in shown])  # the setting column, as wide as its longest label
        head = ("setting".ljust(w + 2) + ("  KS(TR,reference)" if ref else "") + "  KS(forget,holdout)  MIA AUC  forget p"
                "  holdout p  retain p/base" + ("  FQ(oracle)  privleak" if orc else ""))
        lines = [head, "-" * len(head)]
        for r in shown:
            mark = "*" if r is self.chosen else (" " if r.feasible else "x")
            tr_ks = f"{'n/a':>18}" if r.tr_ks is None else f"{r.tr_ks:>18.3f}"  # infeasible: not scored (the rule)
            lines.append(f"{mark} {r.setting.label():<{w}}" + (tr_ks if ref else "")
                         + f"{r.ks:>20.3f}{r.mia_auc:>9.3f}{r.forget_prob:>10.3f}{r.holdout_prob:>11.3f}{r.retain_ratio:>15.3f}"
                         + (f"{r.forget_quality:>12.2e}{r.privleak:>+10.1f}" + (" <- oracle's pick" if r is best else "")
                            if orc else ""))
        closest = min((r for r in self.rows if r.feasible), key=lambda r: r.objective(), default=self.chosen)
        if closest.objective() < self.chosen.objective():
            lines.append(f"= whole words kept: their best distance ({self.chosen.objective():.3f}) is within the KS test's "
                         f"resolution ({self.resolution:.3f}) of the closest plain setting's ({closest.objective():.3f})")
        if not self.chosen.feasible:
            lines.append("! no setting meets the constraints below: the one that misses them by least was chosen; "
                         "widen the grid or the tolerances")
        why = (f"retain prob below {1 - self.tolerance:.2f} x the base's {self.base_retain_prob:.3f}, "
               f"or MIA AUC outside 0.5 ± {self.mia_tolerance:g}")
        lines.append(f"(* chosen; x: {why}; "
                     f"{len(self.rows)} settings)")
        if self.unscored:
            lines.append(f"({self.unscored} plain-token settings not scored: a whole-word setting is within the KS "
                         f"test's resolution ({self.resolution:.3f}) of the reference, so none of them could be chosen)")
        if orc:
            lines.append(self.oracle_summary())
        return "\n".join(lines)


def evaluate_settings(model, head, forget: AnswerStates, holdout: AnswerStates, retain: AnswerStates,
                      settings: Sequence[Setting], *, tolerance: float = RETAIN_TOLERANCE, truth: TruthRatioReference | None = None,
                      mia_tolerance: float = MIA_TOLERANCE, oracle: OracleCheck | None = None,
                      progress: bool = False) -> Calibration:
    """Score every setting (see the module doc) and choose: the feasible setting with the smallest KS
    distance -- between the forget truth ratios and ``truth``'s reference when given, else between forget and
    holdout answer losses (ties: the smaller scale, then the smaller temperature). A feasible setting keeps the
    retain answers' probability within ``tolerance`` of the base's and the forget-vs-holdout membership AUC
    within ``mia_tolerance`` of 0.5: losses and truth ratios can match while the forget answers' least likely
    tokens stay more familiar than a never-seen answer's.

    ``oracle`` (with ``truth``, whose states it scores): each row also gets forget quality and privleak against it,
    for the report only."""
    if not settings:
        raise T3Error("calibration needs at least one setting.")
    if not 0 <= tolerance < 1:
        raise T3Error(f"the retain tolerance must be in [0, 1), not {tolerance}.")
    if not 0 <= mia_tolerance <= 0.5:
        raise T3Error(f"the MIA tolerance is a distance from AUC 0.5 and must be in [0, 0.5], not {mia_tolerance}.")
    return _score_and_choose(model, head, forget, holdout, retain, settings, tolerance, truth, mia_tolerance, oracle,
                             progress)


def _score_and_choose(model, head, forget, holdout, retain, settings, tolerance, truth, mia_tolerance, oracle,
                      progress) -> Calibration:
    """Per group of settings (whole words first, then plain tokens: :func:`~t3unlearn.t3.grid.choose`), two passes:
    every setting on the forget, holdout and retain answers (the constraints), then the truth ratios (the
    paraphrased and perturbed answers, most of the positions) of the *feasible* settings only -- the rule never
    reads an infeasible row's objective while a feasible one exists. Every setting's truth ratios are scored when
    none is feasible (the fallback ranks them all) or with an oracle (its columns cover every row). The plain
    settings are not scored at all when a feasible whole-word one is within the KS resolution of a perfect match
    (none of them could then be chosen), unless an oracle asks for every row."""
    from t3unlearn.progress import progress as progress_bar

    settings = list(settings)
    if truth is not None and truth.reference is not None:  # the objective's two samples
        resolution = ks_resolution(forget.n_items, len(truth.reference))
    else:
        resolution = ks_resolution(forget.n_items, holdout.n_items)
    sets = {"forget": forget, "holdout": holdout, "retain": retain}
    per_set = sum(st.targets.numel() for st in sets.values())
    per_truth = 0 if truth is None else truth.para.targets.numel() + truth.pert.targets.numel()
    whole = [st for st in settings if st.reads_pieces]
    groups = [whole, [st for st in settings if not st.reads_pieces]] if 0 < len(whole) < len(settings) else [settings]
    rows: dict = {}
    with progress_bar(total=(per_set + per_truth) * len(settings), desc=f"calibrate ({len(settings)} settings{', the plain half if needed' if len(groups) > 1 else ''})",
                      unit="token x setting", enabled=progress) as bar:
        step = _Ticks(bar, len(settings))
        base_retain = None
        for i, group in enumerate(groups):
            if i and oracle is None and settled(rows.values(), resolution):
                step.skip((per_set + per_truth) * len(group))
                continue
            base = [] if base_retain is not None else [Setting(1.0, 0.0)]  # the base's retain probability, once
            step.n = len(group)
            lps = {name: grid_logprobs(model, head, st, group + (base if name == "retain" else []), bar=step)
                   for name, st in sets.items()}
            if base_retain is None:
                base_retain = float(item_stats(lps["retain"][-1], retain)["prob"].mean())
            group_rows = [_constraint_row(st, lps, k, forget, holdout, retain, base_retain, tolerance, mia_tolerance)
                          for k, st in enumerate(group)]
            rows.update(zip(group, group_rows))
            if truth is not None:
                keep = [r for r in group_rows if r.feasible or oracle is not None]
                step.skip(per_truth * (len(group) - len(keep)))  # the settings left out of the second pass cost nothing
                _score_truth(model, head, keep, truth, oracle, step)
        if truth is not None and not any(r.feasible for r in rows.values()):  # the fallback ranks every row
            _score_truth(model, head, [r for r in rows.values() if r.tr_median is None], truth, oracle, step)
    scored = [rows[st] for st in settings if st in rows]
    return Calibration(scored, choose(scored, tolerance, mia_tolerance, resolution), base_retain, tolerance, mia_tolerance,
                       reference_tr_median=None if truth is None or truth.reference is None else float(np.median(truth.reference)),
                       reference_source=None if truth is None or truth.reference is None else truth.source,
                       oracle_tr_median=None if oracle is None else float(np.median(oracle.truth_ratios)),
                       resolution=resolution, unscored=len(settings) - len(scored))


def _score_truth(model, head, rows, truth, oracle, step) -> None:
    """The truth ratios of ``rows``' settings (and the objective and the oracle's columns they give) on ``rows``."""
    if not rows:
        return
    step.n = len(rows)
    lp = grid_logprobs(model, head, truth.para, [r.setting for r in rows], bar=step)
    lq = grid_logprobs(model, head, truth.pert, [r.setting for r in rows], bar=step)
    for j, r in enumerate(rows):
        tr = _truth_ratios_of(lp[j], lq[j], truth.para, truth.pert, truth.n_pert)
        r.tr_median = float(np.median(tr))
        if truth.reference is not None:
            r.tr_ks = ks_distance(tr, truth.reference)
        if oracle is not None:
            r.forget_quality = forget_quality(tr, oracle.truth_ratios)
            r.privleak = privleak(r.mia_auc, oracle.auc)


class _Ticks:
    """A progress bar counted in (token, setting) pairs: ``grid_logprobs`` reports positions, each worth ``n``
    settings."""

    def __init__(self, bar, n: int):
        self.bar, self.n = bar, n

    def update(self, tokens: int) -> None:
        self.bar.update(tokens * self.n)

    def skip(self, pairs: int) -> None:
        self.bar.update(pairs)


def _constraint_row(st: Setting, lps: dict, k: int, forget, holdout, retain, base_retain: float, tolerance: float,
                    mia_tolerance: float) -> CalibrationRow:
    f = item_stats(lps["forget"][k], forget)
    h = item_stats(lps["holdout"][k], holdout)
    retain_prob = float(item_stats(lps["retain"][k], retain)["prob"].mean())
    mia = auc(f["min_k"], h["min_k"])
    return CalibrationRow(
        setting=st, ks=ks_distance(f["avg_loss"], h["avg_loss"]), mia_auc=mia,
        forget_prob=float(f["prob"].mean()), holdout_prob=float(h["prob"].mean()), retain_prob=retain_prob,
        retain_ratio=retain_prob / base_retain if base_retain > 0 else math.nan,
        feasible=retain_prob >= (1 - tolerance) * base_retain and abs(mia - 0.5) <= mia_tolerance)


# --------------------------------------------------------------------------- the whole step

DEFAULT_TEMPERATURES = CALIBRATION_TEMPERATURES
DEFAULT_SCALES = CALIBRATION_SCALES
DEFAULT_TEMPERINGS = CALIBRATION_TEMPERINGS
DEFAULT_SUPPORTS = CALIBRATION_SUPPORTS
DEFAULT_COPY_FLOORS = CALIBRATION_COPY_FLOORS
DEFAULT_WORDS = CALIBRATION_WORDS
RETAIN_ITEMS = 400  # retain items scored for the utility constraint (a seeded sample of the retain set)


def default_grid(plain: bool = False) -> list[Setting]:
    """``t3unlearn calibrate``'s default grid; ``plain``: its T = 1 settings only (classifier guidance)."""
    temps = [1.0] if plain else list(DEFAULT_TEMPERATURES)
    return grid(temps, DEFAULT_SCALES, DEFAULT_TEMPERINGS, supports=DEFAULT_SUPPORTS, copy_floors=DEFAULT_COPY_FLOORS,
                words=DEFAULT_WORDS)


def _examples(fmt, data) -> list:
    rows = data.to_list() if hasattr(data, "to_list") else list(data)
    return fmt.encode_batch([r["question"] for r in rows], [r["answer"] for r in rows])


PERTURBED_FIELDS = ("question", "paraphrased_answer", "perturbed_answer")


def has_perturbed(data) -> bool:
    """Whether ``data``'s items carry TOFU's paraphrased and perturbed answers (every field of the first item)."""
    return len(data) > 0 and all(f in data[0] for f in PERTURBED_FIELDS)


def check_perturbed(data) -> None:
    """Refuse forget items without TOFU's paraphrased and perturbed answers (the truth ratios are scored on them)."""
    missing = [f for f in PERTURBED_FIELDS if len(data) and f not in data[0]]
    if not len(data) or missing:
        raise T3Error("scoring the forget truth ratios (calibration items with perturbed answers, --pretrained, --oracle) "
                      "needs the forget items' paraphrased and perturbed answers (fields "
                      f"{', '.join(PERTURBED_FIELDS)}; missing: {', '.join(missing) or 'every item'}); give them with "
                      "--perturbed SOURCE (TOFU: tofu:forget10_perturbed).")


def _perturbed_examples(fmt, data, what: str = "forget"):
    """``(paraphrased, perturbed, n_pert)`` examples of items with TOFU's perturbation fields."""
    rows = data.to_list() if hasattr(data, "to_list") else list(data)
    missing = [f for f in PERTURBED_FIELDS if rows and f not in rows[0]]
    if what != "forget" and (not rows or missing):
        raise T3Error(f"the {what} items need paraphrased and perturbed answers (fields {', '.join(PERTURBED_FIELDS)}; "
                      f"missing: {', '.join(missing) or 'every item'}).")
    check_perturbed(rows)
    counts = {len(r["perturbed_answer"] or []) if r["paraphrased_answer"] is not None else 0 for r in rows}  # None: lacks it
    if len(counts) != 1 or 0 in counts:
        raise T3Error(f"every {what} item needs a paraphrased_answer and the same number of wrong answers in perturbed_answer, "
                      f"at least one; found {' and '.join(map(str, sorted(counts)))} (0: without them): give every item as many.")
    n_pert = counts.pop()
    para = fmt.encode_batch([r["question"] for r in rows], [r["paraphrased_answer"] for r in rows])
    pert = fmt.encode_batch([r["question"] for r in rows for _ in range(n_pert)], [p for r in rows for p in r["perturbed_answer"]])
    return para, pert, n_pert


def _check_vocab(model, other, what: str) -> None:
    from t3unlearn.t3.features import vocab_size_of

    if vocab_size_of(other) != vocab_size_of(model):
        raise T3Error(f"the {what}'s vocabulary ({vocab_size_of(other)}) is not the base's ({vocab_size_of(model)}); "
                      "it must share the base's tokenizer (e.g. the checkpoint the base was fine-tuned from).")


def _plain_truth_ratios(model, para, pert, n_pert, pad_id: int, batch_size: int) -> np.ndarray:
    rp = answer_states(model, para, pad_id, batch_size=batch_size)
    rq = answer_states(model, pert, pad_id, batch_size=batch_size)
    return truth_ratios(model, None, rp, rq, n_pert, Setting(1.0, 0.0))


def truth_reference(model, reference, pad_id: int, perturbed_examples, *, batch_size: int = 32) -> TruthRatioReference:
    """The base's states on the perturbation items (``(paraphrased, perturbed, n_pert)`` examples, as
    :func:`_perturbed_examples` gives them) and ``reference``'s truth ratios on them (one pass each;
    ``reference=None``: the states only, for an oracle check without a reference)."""
    para, pert, n_pert = perturbed_examples
    if reference is not None:
        _check_vocab(model, reference, "reference model")
    ref = None if reference is None else _plain_truth_ratios(reference, para, pert, n_pert, pad_id, batch_size)
    return TruthRatioReference(answer_states(model, para, pad_id, batch_size=batch_size),
                               answer_states(model, pert, pad_id, batch_size=batch_size), n_pert, ref)


def oracle_check(model, oracle, pad_id: int, perturbed_examples, forget_examples, holdout_examples, *,
                 batch_size: int = 32) -> OracleCheck:
    """``oracle``'s forget truth ratios (on the ``(paraphrased, perturbed, n_pert)`` examples) and its
    forget-vs-holdout min-k AUC (on the encoded forget and holdout answers)."""
    _check_vocab(model, oracle, "oracle")
    oracle.eval()
    para, pert, n_pert = perturbed_examples
    plain = Setting(1.0, 0.0)
    min_k = []
    for examples in (forget_examples, holdout_examples):
        st = answer_states(oracle, examples, pad_id, batch_size=batch_size)
        min_k.append(item_stats(token_logprobs(oracle, None, st, plain), st)["min_k"])
    return OracleCheck(_plain_truth_ratios(oracle, para, pert, n_pert, pad_id, batch_size), auc(*min_k))


def calibrate(t3, tokenizer, forget, holdout, retain, *, settings: Sequence[Setting] | None = None,
              tolerance: float = RETAIN_TOLERANCE, retain_items: int = RETAIN_ITEMS, seed: int = 0, batch_size: int = 32,
              max_length: int = 512, template: str = "auto", reference=None, perturbed=None,
              mia_tolerance: float = MIA_TOLERANCE, oracle=None, progress: bool = False,
              apply: bool = True, cache: bool = True, cache_dir=None) -> Calibration:
    """Choose the guidance of ``t3`` (a :class:`~t3unlearn.t3.model.T3ForCausalLM`) from forget vs
    holdout answers under a retain-utility constraint (see the module doc); with ``apply`` the chosen
    setting is set on ``t3`` and the table recorded in ``t3.config.calibration`` (saved with the head).

    ``forget`` / ``holdout`` / ``retain``: datasets or lists of ``{"question", "answer"}``; at most
    ``retain_items`` retain items (a seeded sample) are scored.

    When ``holdout``'s items carry TOFU's ``paraphrased_answer`` and ``perturbed_answer`` fields, the objective
    is the KS distance between the forget items' truth ratios under the guided model and the base's truth ratios
    on the holdout items (what TOFU's forget quality tests, never-seen authors standing in for the oracle's view
    of the forget authors; ``reference`` is then not used). Otherwise ``reference``: a causal LM that never saw
    the forget set and shares the base's tokenizer (the checkpoint the base was fine-tuned from, say), whose
    truth ratios on the forget items stand in. Either way the settings must also keep the forget-vs-holdout
    membership AUC within ``mia_tolerance`` of 0.5. ``perturbed``: the forget items with TOFU's
    ``paraphrased_answer`` and ``perturbed_answer`` fields (default: ``forget`` itself).

    ``oracle``: a model that never saw the forget set (the retain model, where a benchmark has one). Every
    setting is then also scored with TOFU's forget quality and privleak against it -- never used to choose, only
    reported (:meth:`Calibration.oracle_summary`) -- to show how close the oracle-free choice comes.

    ``cache``: keep every model's answer states on disk (``cache_dir``, default ``cache_home()/answer-states``), so
    that calibrating another head of the same base on the same sets runs no forward pass again
    (:func:`~t3unlearn.t3.answer_states.state_cache`).
    """
    import random

    from t3unlearn.data import QAFormatter

    if len(forget) == 0 or len(holdout) == 0 or len(retain) == 0:
        raise T3Error("calibration needs non-empty forget, holdout and retain sets.")
    fmt = QAFormatter(tokenizer, max_length=max_length, template=template)
    if any(st.reads_pieces for st in (settings or default_grid())):
        from t3unlearn.t3.head import ensure_pieces

        ensure_pieces(t3.head, tokenizer)  # a head saved before the table: the one training makes
    if len(retain) > retain_items:
        pick = sorted(random.Random(f"t3-calibrate-retain-{seed}").sample(range(len(retain)), retain_items))
        retain = retain.select(pick) if hasattr(retain, "select") else [retain[i] for i in pick]
    with state_cache(cache, cache_dir):  # every forward pass: read back when another run already made it
        examples = {name: _examples(fmt, data) for name, data in (("forget", forget), ("holdout", holdout), ("retain", retain))}
        truth = check = None
        never_seen = has_perturbed(holdout)
        if reference is not None or oracle is not None or never_seen:
            if reference is not None and not never_seen:
                reference.eval()
            pex = _perturbed_examples(fmt, forget if perturbed is None else perturbed)
            truth = truth_reference(t3.base, None if never_seen else reference, fmt.pad_id, pex, batch_size=batch_size)
            if never_seen:  # the base's own truth ratios on authors it never saw (the module doc)
                truth.reference = _plain_truth_ratios(t3.base, *_perturbed_examples(fmt, holdout, "calibration"), fmt.pad_id,
                                                      batch_size)
                truth.source = "calibration"
            if oracle is not None:
                check = oracle_check(t3.base, oracle, fmt.pad_id, pex, examples["forget"], examples["holdout"],
                                     batch_size=batch_size)
        base, head = t3.base, t3.head
        states = {name: answer_states(base, ex, fmt.pad_id, batch_size=batch_size) for name, ex in examples.items()}
        if settings is None:
            settings = default_grid()
        if head.support is None and any(st.support is not None for st in settings):
            raise T3Error("the grid has the support gate on, but this head has no support statistics (it was saved by an "
                          "earlier t3unlearn): retrain it with 't3unlearn unlearn', or calibrate with the gate off "
                          "(--supports none).")
        cal = evaluate_settings(base, head, states["forget"], states["holdout"], states["retain"], settings,
                                tolerance=tolerance, truth=truth, mia_tolerance=mia_tolerance, oracle=check,
                                progress=progress)
    if apply:
        t3.guidance = cal.chosen.setting
        items = {k: v.n_items for k, v in states.items()}
        if truth is not None:
            items["perturbed"] = truth.para.n_items
        t3.config.calibration = {**cal.as_dict(), "items": items}
        if t3.config.requests is not None:  # what the guidance was chosen for (t3unlearn.t3.requests.calibration_outdated)
            from t3unlearn.t3.requests import request_ids

            t3.config.calibration["requests"] = request_ids(t3.config)
    return cal
