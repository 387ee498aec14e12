"""Each TOFU metric pinned to a value computed by hand on a small case."""

import math
import zlib

import numpy as np
import pytest

from t3unlearn.eval import metrics as M

LN2 = math.log(2)


def test_avg_loss_and_prob_count_every_token():
    # log-probs of two answer tokens + EOS: 1/2, 1/4, 1/2 -> avg loss (1 + 2 + 1) ln2 / 3
    lp = [math.log(0.5), math.log(0.25), math.log(0.5)]
    assert M.avg_loss(lp) == pytest.approx(4 * LN2 / 3)
    assert M.prob(M.avg_loss(lp)) == pytest.approx(2 ** (-4 / 3))
    assert M.q_a_prob([0.2, 0.4]) == pytest.approx(0.3)


def test_normalised_probability():
    assert M.normalised_prob(0.5, [0.25, 0.125, 0.125]) == pytest.approx(0.5)
    assert M.normalised_prob(0.0, [0.0, 0.0]) == 0.0  # the 1e-10 guard, no division by zero


def test_truth_ratio_uses_arithmetic_mean_of_losses():
    # wrong losses 0 and ln 16: mean ln 4 -> exp(-ln 4) = 1/4 (not the mean of probabilities, 17/32)
    tr = M.truth_ratio(LN2, [0.0, 4 * LN2])
    assert tr == pytest.approx(0.25 / 0.5)


def test_truth_ratio_aggregations():
    ratios = [0.5, 2.0, 1.0]
    # forget: min(TR, 1/TR) -> 0.5, 0.5, 1 -> 2/3
    assert M.truth_ratio_closer_to_1(ratios) == pytest.approx(2 / 3)
    # retain: max(0, 1 - TR) -> 0.5, 0, 0 -> 1/6
    assert M.truth_ratio_true_better(ratios) == pytest.approx(1 / 6)


def test_forget_quality_is_the_ks_p_value():
    # fully separated samples of sizes 4 and 3: D = 1, exact two-sided p = 2 / C(7, 3) = 2/35
    assert M.forget_quality([0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7]) == pytest.approx(2 / 35)
    assert M.forget_quality([0.1, 0.2, 0.3], [0.3, 0.1, 0.2]) == pytest.approx(1.0)


def test_model_utility_harmonic_mean_and_zero():
    assert M.model_utility([1.0, 2.0, 4.0]) == pytest.approx(3 / (1 + 1 / 2 + 1 / 4))
    assert M.model_utility([0.5, 0.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]) == 0.0


def test_rouge_on_known_strings():
    s = M.rouge_scores("The cat sat on the mat", "the cats sat")
    # stemmed: gen {the, cat, sat} all in the 6-token reference; LCS "the cat sat" = 3
    assert s["rouge1_recall"] == pytest.approx(3 / 6)
    assert s["rougeL_recall"] == pytest.approx(3 / 6)
    assert s["rougeL_f1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert M.rouge_scores("a b", "")["rougeL_recall"] == 0.0


def test_min_k_lowest_forty_percent():
    lp = [-1.0, -5.0, -2.0, -4.0, -3.0]
    assert M.min_k_score(lp) == pytest.approx(4.5)  # int(0.4 * 5) = 2 lowest: -5, -4
    assert M.min_k_score([-1.0, -3.0]) == pytest.approx(3.0)  # int(0.8) = 0 -> at least 1
    assert M.min_k_score([]) == 0.0


def test_min_k_plus_plus_on_a_known_distribution():
    # next-token distribution (1/2, 1/4, 1/4) at every position:
    # mu = -1.5 ln2, var = 2.5 ln2^2 - 2.25 ln2^2 = 0.25 ln2^2, sd = 0.5 ln2
    p = np.array([0.5, 0.25, 0.25])
    mu = float((p * np.log(p)).sum())
    var = float((p * np.log(p) ** 2).sum() - mu**2)
    assert mu == pytest.approx(-1.5 * LN2) and var == pytest.approx(0.25 * LN2**2)
    tokens = [0, 1, 1, 0, 0]  # z = +1 for token 0, -1 for tokens 1/2
    lp = np.log(p[tokens])
    score = M.min_k_plus_plus_score(lp, [mu] * 5, [var] * 5)
    assert score == pytest.approx(1.0)  # the two lowest z are -1, -1
    # a one-hot distribution has zero variance: floored at 1e-6
    assert M.min_k_plus_plus_score([0.0], [0.0], [0.0]) == pytest.approx(0.0)
    assert M.min_k_plus_plus_score([-1e-3], [0.0], [0.0]) == pytest.approx(1e-3 / 1e-3)


def test_mia_auc_orientation_and_privleak():
    # members (forget) = 0 score lower: perfect separation -> 1
    assert M.mia_auc([1.0, 2.0], [3.0, 4.0]) == pytest.approx(1.0)
    assert M.mia_auc([1.0, 3.0], [2.0, 4.0]) == pytest.approx(0.75)  # 3 of 4 pairs ordered
    assert M.privleak(0.8, 0.5) == pytest.approx(-60.0)
    assert M.privleak(0.3, 0.4) == pytest.approx((0.7 - 0.6) / 0.6 * 100)
    assert M.privleak(0.6, 0.6) == pytest.approx(0.0)
    assert M.privleak(0.5) == pytest.approx(0.0)  # reference 0.5 when unknown


def test_loss_and_zlib_scores():
    assert M.mia_loss_score(1.25) == 1.25
    text = " Ilse Varga was born in Lisbon."
    assert M.mia_zlib_score(2.0, text) == pytest.approx(2.0 / len(zlib.compress(text.encode())))


@pytest.mark.parametrize(
    "flags,expected",
    [
        ([1, 1, 1, 1], 1.0),  # k* = 0
        ([0, 1, 1, 1], 0.75),  # k* = 1
        ([1, 0, 1, 1], 0.5),  # k* = 2: only the last two match
        ([1, 1, 1, 0], 0.25),  # no suffix matches: the reference's loop stops at k* = n - 1, so 1/n
        ([0, 0, 0, 1], 0.25),
        ([0, 0, 0, 0, 0], 0.2),
        ([], 0.0),  # no answer tokens: the reference scores 0
    ],
)
def test_extraction_strength(flags, expected):
    assert M.extraction_strength(np.array(flags, dtype=bool)) == pytest.approx(expected)


def test_exact_memorization():
    assert M.exact_memorization([True, False, True, True]) == pytest.approx(0.75)
    assert M.exact_memorization([]) is None  # no answer tokens: left out, not 0
    assert M.mean_of_present([0.5, None, 1.0]) == pytest.approx(0.75)
