"""Oracle-free calibration: the cached-state scoring equals the guided model's, and the choice rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t3unlearn.data import QAFormatter
from t3unlearn.errors import T3Error
from t3unlearn.t3.calibrate import Setting, answer_states, evaluate_settings, grid, item_stats, token_logprobs
from t3unlearn.t3.head import GuidanceHead
from t3unlearn.t3.model import T3Config, T3ForCausalLM

QA = [("Where was Ilse Varga born?", "Ilse Varga was born in Lisbon."),
      ("What genre does Tomas Reed write?", "Tomas Reed writes science fiction."),
      ("What is the capital of France?", "The capital of France is Paris.")]


def _t3(base, seed=0, tok=None):
    """A T3 model with a random head; with ``tok``, the head carries its word-piece table."""
    torch.manual_seed(seed)
    head = GuidanceHead(base.config.hidden_size, 8, base.config.vocab_size)
    torch.nn.init.normal_(head.out.weight, std=2.0)
    if tok is not None:
        from t3unlearn.t3.head import word_pieces

        head.set_pieces(word_pieces(tok, base.config.vocab_size))
    return T3ForCausalLM(T3Config(), base, head).eval()


@pytest.mark.parametrize("setting", [Setting(2.0, 1.5), Setting(3.0, 1.0, "adaptive", None, 0.5), Setting(2.5, 0.5, "global", -3.0),
                                     Setting(3.0, 1.5, "adaptive", -3.0, 0.5, None, -0.5),
                                     Setting(2.5, 1.5, "adaptive", copy_floor=2.0),
                                     Setting(1.0, 2.0, copy_floor=-0.5, floor=-2.0),
                                     Setting(2.5, 1.5, "adaptive", piece_floor=3.0),
                                     Setting(1.0, 2.0, copy_floor=1.0, piece_floor=-0.5),
                                     Setting(2.5, 1.5, "adaptive", spelling="base"),
                                     Setting(2.0, 1.0, "global", -3.0, piece_floor=3.0, spelling="base")])
def test_cached_states_score_like_the_guided_model(random_lm, setting):
    """Calibration scores each setting from stored hidden states; it must give the log-probs the guided
    model itself gives for those answers (CausalLM.token_scores on a T3ForCausalLM with the same knobs)."""
    from t3unlearn.lm import CausalLM

    base, tok = random_lm
    t3 = _t3(base, tok=tok)
    t3.set_guidance(temperature=setting.temperature, scale=setting.scale, tempering=setting.tempering,
                    tail_logp=setting.tail_logp, bias=setting.bias, floor=setting.floor, copy_floor=setting.copy_floor,
                    piece_floor=setting.piece_floor, spelling=setting.spelling)
    fmt = QAFormatter(tok)
    examples = fmt.encode_batch([q for q, _ in QA], [a for _, a in QA])
    states = answer_states(base, examples, fmt.pad_id, batch_size=2)
    lp = token_logprobs(base, t3.head, states, setting)
    want = CausalLM(t3, tok).token_scores(examples, batch_size=3)
    torch.testing.assert_close(lp, torch.from_numpy(np.concatenate([w.logprob for w in want])).float(), atol=1e-4, rtol=1e-4)
    stats = item_stats(lp, states)
    np.testing.assert_allclose(stats["avg_loss"], [w.avg_loss for w in want], rtol=1e-4)
    # min-k: the answer tokens without the EOS, lowest 40 %
    first = want[0].without_eos().logprob
    k = max(1, int(first.size * 0.4))
    assert stats["min_k"][0] == pytest.approx(-np.sort(first)[:k].mean(), rel=1e-4)


def test_grid_and_choice_rule(random_lm):
    base, tok = random_lm
    t3 = _t3(base)
    g = grid([1.0, 2.0], [0.5, 1.0], ["global", "adaptive"])
    assert len(g) == 2 + 4 and len(set(g)) == len(g)  # T = 1 once per scale: tempering is moot there
    with pytest.raises(T3Error, match="tempering"):
        grid([2.0], [1.0], ["local"])
    fmt = QAFormatter(tok)
    ex = fmt.encode_batch([q for q, _ in QA], [a for _, a in QA])
    st = answer_states(base, ex, fmt.pad_id)
    cal = evaluate_settings(base, t3.head, st, st, st, g, tolerance=0.5)
    # forget == holdout here: every setting has KS distance 0; the rule keeps the gentlest feasible one
    assert all(r.ks == 0 for r in cal.rows)
    assert cal.chosen.setting.scale == 0.5 and cal.chosen.setting.temperature == 1.0
    # an impossible tolerance leaves nothing feasible except what keeps the base's retain probability
    strict = evaluate_settings(base, t3.head, st, st, st, [Setting(3.0, 3.0), Setting(1.0, 0.0)], tolerance=0.0)
    assert strict.chosen.setting == Setting(1.0, 0.0) and not strict.rows[0].feasible
    assert "chosen" in strict.table()
    # nothing feasible: the setting that misses the constraint by least, not the best objective
    none = evaluate_settings(base, t3.head, st, st, st, [Setting(8.0, 0.1, "global"), Setting(2.0, 0.1, "global"), Setting(3.0, 3.0)],
                             tolerance=0.0)
    assert not any(r.feasible for r in none.rows)
    assert none.chosen is max(none.rows, key=lambda r: r.retain_ratio) and "! no setting meets" in none.table()


def test_the_holdout_rule_keeps_the_membership_auc_near_one_half(random_lm):
    """Without a reference the objective is the forget-vs-holdout loss KS, and a setting is feasible only while
    the min-k membership AUC between the two sets is within mia_tolerance of 0.5: the chosen one has the smallest
    KS among those, not among all."""
    from t3unlearn.t3.calibrate import MIA_TOLERANCE, calibrate

    base, tok = random_lm
    forget = [{"question": q, "answer": a} for q, a in QA]
    other = [{"question": q, "answer": a.replace("was", "is").replace("writes", "wrote")} for q, a in QA]
    settings = grid([1.0, 1.5, 3.0], [0.0, 0.5, 2.0, 4.0], ["global", "adaptive"])
    kinds = []
    for tol in (0.05, 0.2):
        cal = calibrate(_t3(base), tok, forget, other, forget, settings=settings, tolerance=0.99, mia_tolerance=tol)
        assert [r.feasible for r in cal.rows] == [abs(r.mia_auc - 0.5) <= tol for r in cal.rows]
        assert cal.chosen.ks == min(r.ks for r in cal.rows if r.feasible)
        kinds.append({r.feasible for r in cal.rows})
        assert f"MIA AUC outside 0.5 ± {tol:g}" in cal.table() and cal.as_dict()["mia_tolerance"] == tol
    assert kinds == [{True, False}, {True}]  # the constraint bites at 0.05 here, not at 0.2
    # a choice among part of the grid already scored (the demo: plain guidance's T = 1 rows) = a calibration over
    # those settings alone
    part = cal.restricted(lambda st: st.temperature == 3.0)
    alone = calibrate(_t3(base), tok, forget, other, forget, settings=[st for st in settings if st.temperature == 3.0],
                      tolerance=0.99, mia_tolerance=0.2)
    assert part.chosen.setting == alone.chosen.setting and len(part.rows) == len(alone.rows) == 8
    assert cal.chosen.setting.temperature != 3.0  # so the restriction is what picked it
    with pytest.raises(T3Error, match="no setting of the calibration grid"):
        cal.restricted(lambda st: st.temperature == 9.0)
    with pytest.raises(T3Error, match="MIA tolerance"):
        calibrate(_t3(base), tok, forget, other, forget, settings=settings, mia_tolerance=0.7)
    # the default grid has the support gate on; a head without support statistics is told how to go on
    assert {st.support for st in grid([2.0], [1.0], supports=[0.95])} == {0.95}
    with pytest.raises(T3Error, match="--supports none"):
        calibrate(_t3(base), tok, forget, other, forget, tolerance=0.99)
    import argparse

    from t3unlearn.commands.t3 import add_calibration_options
    ap = argparse.ArgumentParser()
    add_calibration_options(ap)
    d = ap.parse_args([])
    assert d.mia_tolerance == MIA_TOLERANCE and d.supports == "0.95" and d.temperings == "adaptive"
    from t3unlearn.commands.calibration import _grid
    assert {st.tail_logp for st in _grid(d)} == {None}  # no tail guard unless asked
    # the two ways of treating words by default; given one of the two options, every pair with the other's whole-word value
    assert {(st.piece_floor, st.spelling) for st in _grid(d)} == {(10.0, "base"), (None, "guided")}
    assert {(st.piece_floor, st.spelling) for st in _grid(ap.parse_args(["--spellings", "guided,base"]))} == {
        (10.0, "guided"), (10.0, "base")}
    assert {(st.piece_floor, st.spelling) for st in _grid(ap.parse_args(["--piece-floors", "none"]))} == {(None, "base")}
    tailed = _grid(ap.parse_args(["--temperatures", "1,2", "--scales", "1", "--tails", "none,-16", "--spellings", "base"]))
    assert [(st.temperature, st.tail_logp) for st in tailed] == [(1.0, None), (2.0, None), (2.0, -16.0)]
    with pytest.raises(T3Error, match="--tails: tail_logp is a log-probability and must be < 0"):
        _grid(ap.parse_args(["--tails", "3"]))
    assert {st.floor for st in _grid(d)} == {None}  # no floor unless asked
    floored = _grid(ap.parse_args(["--temperatures", "1,2", "--scales", "1", "--floors=-6.5,none", "--spellings", "base"]))
    assert [(st.temperature, st.floor) for st in floored] == [(1.0, -6.5), (1.0, None), (2.0, -6.5), (2.0, None)]
    assert "floor=-6.5" in floored[0].label()
    with pytest.raises(T3Error, match="--floors: floor is a head logit .* must be < 0"):
        _grid(ap.parse_args(["--floors", "2"]))


PERTURBED = [{"question": q, "answer": a, "paraphrased_answer": a.replace(" was", " had been"),
              "perturbed_answer": [a.replace("Lisbon", "Oslo").replace("science", "crime").replace("Paris", "Lyon"),
                                   a[::-1]]} for q, a in QA]


def test_truth_ratios_from_cached_states_are_the_guided_models(random_lm):
    """The reference objective scores TOFU's truth ratio (perturbed answers' geometric-mean token probability
    over the paraphrase's) from stored states; it must be what the guided model itself gives."""
    from t3unlearn.lm import CausalLM
    from t3unlearn.t3.calibrate import _perturbed_examples, truth_ratios

    base, tok = random_lm
    t3 = _t3(base)
    setting = Setting(2.0, 1.0, "adaptive")
    t3.set_guidance(temperature=2.0, scale=1.0, tempering="adaptive")
    fmt = QAFormatter(tok)
    para, pert, n = _perturbed_examples(fmt, PERTURBED)
    assert n == 2 and len(pert) == 2 * len(para)
    got = truth_ratios(base, t3.head, answer_states(base, para, fmt.pad_id), answer_states(base, pert, fmt.pad_id), n, setting)
    lm = CausalLM(t3, tok)
    p = np.array([w.avg_loss for w in lm.token_scores(para, batch_size=3)])
    q = np.array([w.avg_loss for w in lm.token_scores(pert, batch_size=3)]).reshape(-1, n)
    np.testing.assert_allclose(got, np.exp(-q.mean(1)) / np.exp(-p), rtol=1e-4)


def test_a_reference_model_sets_the_objective(random_lm):
    """With a reference model, the setting whose forget truth ratios match the reference's wins: here the
    reference is the base itself, so guidance off (T = 1, s = 0) matches exactly and must be chosen. (The
    holdout is the forget set, so the loss objective ties everywhere and its tie-break would take T = 0.5.)"""
    from t3unlearn.t3.calibrate import calibrate

    base, tok = random_lm
    t3 = _t3(base)
    forget = [{"question": q, "answer": a} for q, a in QA]
    settings = [Setting(2.0, 1.0), Setting(1.0, 0.0), Setting(0.5, 0.0, "global"), Setting(1.5, 2.0, "adaptive")]
    cal = calibrate(t3, tok, PERTURBED, forget, forget, settings=settings, tolerance=0.99, reference=base)
    assert cal.chosen.setting == Setting(1.0, 0.0) and cal.chosen.tr_ks == 0.0
    assert all(r.tr_ks is not None for r in cal.rows) and max(r.tr_ks for r in cal.rows) > 0
    assert "KS(TR,reference)" in cal.table() and "truth ratios" in t3.config.calibration["objective"]
    head, rule, *body = cal.table().splitlines()
    rows = [line for line in body if line[:1] in "*x "]  # every column under its header, however long the label
    assert rows and all(len(line) == len(head) == len(rule) for line in rows)
    assert t3.config.calibration["items"]["perturbed"] == len(PERTURBED)
    # the membership constraint: a setting whose forget answers an attacker tells from never-seen ones is out
    other = [{"question": q, "answer": "zq xv " * 12} for q, _ in QA]  # never-seen answers of another kind
    strict = calibrate(_t3(base), tok, PERTURBED, other, forget, settings=settings, tolerance=0.99, reference=base,
                       mia_tolerance=0.12)
    flags = [r.feasible for r in strict.rows]
    assert flags == [abs(r.mia_auc - 0.5) <= 0.12 for r in strict.rows] and True in flags and False in flags
    assert strict.chosen.feasible
    loose = calibrate(_t3(base), tok, PERTURBED, other, forget, settings=settings, tolerance=0.99, reference=base,
                      mia_tolerance=0.5)
    assert all(r.feasible for r in loose.rows) and "MIA AUC outside 0.5 ± 0.5" in loose.table()
    # without one: the holdout objective, no truth-ratio column
    plain = calibrate(_t3(base), tok, forget, forget, forget, settings=settings, tolerance=0.99)
    assert plain.chosen.tr_ks is None and "KS(TR" not in plain.table() and plain.chosen.setting.temperature == 0.5
    with pytest.raises(T3Error, match="paraphrased and perturbed answers"):
        calibrate(_t3(base), tok, forget, forget, forget, settings=settings, reference=base)


def test_calibration_items_with_perturbed_answers_are_the_reference(random_lm):
    """Holdout items with paraphrased and perturbed answers: the reference is the base's own truth ratios on them
    (never-seen authors), not a reference model's on the forget items -- a reference model given too is not used.
    With the forget items themselves as the holdout, guidance off matches exactly and must be chosen."""
    from t3unlearn.t3.calibrate import _perturbed_examples, _plain_truth_ratios, calibrate

    base, tok = random_lm
    forget = [{"question": q, "answer": a} for q, a in QA]
    settings = [Setting(2.0, 1.0), Setting(1.0, 0.0), Setting(0.5, 0.0, "global"), Setting(1.5, 2.0, "adaptive")]
    t3 = _t3(base)
    cal = calibrate(t3, tok, PERTURBED, PERTURBED, forget, settings=settings, tolerance=0.99, mia_tolerance=0.5)
    assert cal.reference_source == "calibration" and cal.chosen.setting == Setting(1.0, 0.0) and cal.chosen.tr_ks == 0.0
    assert "calibration items" in t3.config.calibration["objective"]
    # another holdout: its truth ratios under the base are the reference, whatever reference model is given
    other = [{**r, "paraphrased_answer": r["perturbed_answer"][0], "perturbed_answer": [r["paraphrased_answer"]] * 2}
             for r in PERTURBED]
    fmt = QAFormatter(tok)
    want = _plain_truth_ratios(base, *_perturbed_examples(fmt, other), fmt.pad_id, 32)
    # the reference model's truth ratios would be read on the forget items, which differ from the holdout's
    swapped = calibrate(_t3(base), tok, PERTURBED, other, forget, settings=settings, tolerance=0.99, mia_tolerance=0.5,
                        reference=base)
    assert swapped.reference_source == "calibration"
    assert swapped.reference_tr_median == pytest.approx(float(np.median(want)))
    assert swapped.chosen.tr_ks > 0
    # a holdout without them falls back to the reference model
    fallback = calibrate(_t3(base), tok, PERTURBED, forget, forget, settings=settings, tolerance=0.99, mia_tolerance=0.5,
                         reference=base)
    assert fallback.reference_source == "model" and fallback.chosen.setting == Setting(1.0, 0.0)


def test_only_feasible_settings_get_their_truth_ratios_scored_and_the_choice_is_unchanged(random_lm):
    """The truth ratios (most of calibration's positions) are scored for the feasible settings only; the choice and
    every feasible row equal scoring all of them (an oracle makes calibration score every row). With no feasible
    setting, every row is scored, as the fallback ranks them all."""
    from transformers import LlamaForCausalLM

    from t3unlearn.t3.calibrate import calibrate

    base, tok = random_lm
    torch.manual_seed(1)
    oracle = LlamaForCausalLM(base.config).eval()
    forget = [{"question": q, "answer": a} for q, a in QA]
    settings = [Setting(2.0, 1.0), Setting(1.0, 0.0), Setting(1.5, 2.0, "adaptive"), Setting(3.0, 0.5), Setting(1.0, 0.5)]
    # the retain constraint leaves some settings feasible and not others
    full = calibrate(_t3(base), tok, PERTURBED, PERTURBED, forget, settings=settings, tolerance=0.05, mia_tolerance=0.5,
                     oracle=oracle)
    fast = calibrate(_t3(base), tok, PERTURBED, PERTURBED, forget, settings=settings, tolerance=0.05, mia_tolerance=0.5)
    flags = [r.feasible for r in fast.rows]
    assert True in flags and False in flags and flags == [r.feasible for r in full.rows]
    assert fast.chosen.setting == full.chosen.setting
    for a, b in zip(fast.rows, full.rows):
        assert (a.tr_ks == b.tr_ks and a.tr_median == b.tr_median) if a.feasible else a.tr_ks is None
    assert "-" in fast.table()
    upper = [{**r, "answer": r["answer"].upper()} for r in PERTURBED]  # 3 vs 3 items: an AUC of exactly 0.5 needs a tie
    none = calibrate(_t3(base), tok, PERTURBED, upper, forget, settings=settings, tolerance=0.05, mia_tolerance=0.0)
    assert not any(r.feasible for r in none.rows) and all(r.tr_ks is not None for r in none.rows)


def test_plain_settings_are_left_unscored_only_when_none_of_them_could_be_chosen(random_lm):
    """Whole-word settings are scored first; when a feasible one is within the KS resolution of the reference (3
    items against 3: every distance is), no plain setting could be chosen and none is scored -- the same choice
    as scoring every row (an oracle makes calibration score them all). With no whole-word setting feasible, every
    plain one is scored."""
    from transformers import LlamaForCausalLM

    from t3unlearn.t3.calibrate import calibrate

    base, tok = random_lm
    torch.manual_seed(1)
    oracle = LlamaForCausalLM(base.config).eval()
    forget = [{"question": q, "answer": a} for q, a in QA]
    whole = [Setting(2.0, 1.0, piece_floor=10.0, spelling="base"), Setting(1.5, 0.5, piece_floor=10.0, spelling="base")]
    plain = [Setting(1.0, 0.0), Setting(2.0, 1.0), Setting(3.0, 0.5)]
    kw = dict(settings=whole + plain, tolerance=0.99, mia_tolerance=0.5, cache=False)
    fast = calibrate(_t3(base), tok, PERTURBED, PERTURBED, forget, **kw)
    full = calibrate(_t3(base), tok, PERTURBED, PERTURBED, forget, oracle=oracle, **kw)
    assert fast.resolution > 1 and fast.unscored == 3 and [r.setting for r in fast.rows] == whole
    assert len(full.rows) == 5 and full.unscored == 0
    assert fast.chosen.setting == full.chosen.setting and fast.chosen.setting.reads_pieces
    assert min(r.objective() for r in full.rows) < full.chosen.objective()  # a plain row is closer, within the resolution
    assert "3 plain-token settings not scored" in fast.table() and fast.as_dict()["unscored"] == 3
    # no whole-word setting feasible (an impossible retain tolerance spares only the base itself): the plain ones are scored
    strict = calibrate(_t3(base), tok, PERTURBED, PERTURBED, forget, settings=whole + plain, tolerance=0.0,
                       mia_tolerance=0.5, cache=False)
    assert strict.unscored == 0 and len(strict.rows) == 5 and strict.chosen.setting == Setting(1.0, 0.0)


def test_an_oracle_scores_every_setting_as_the_evaluation_would_and_never_chooses(random_lm):
    """--oracle: each row gets TOFU's forget quality (KS p-value of the forget truth ratios, guided model vs
    oracle) and privleak (min-k AUC on forget vs holdout relative to the oracle's), computed here from the guided
    model's own token scores with the evaluation's metric functions; the choice is the one made without it."""
    from transformers import LlamaForCausalLM

    from t3unlearn.eval import metrics
    from t3unlearn.lm import CausalLM
    from t3unlearn.t3.calibrate import _perturbed_examples, calibrate

    base, tok = random_lm
    torch.manual_seed(1)
    oracle = LlamaForCausalLM(base.config).eval()  # another model with the base's vocabulary
    forget = [{"question": q, "answer": a} for q, a in QA]
    holdout = [{"question": q, "answer": a.upper()} for q, a in QA]
    settings = [Setting(2.0, 1.0), Setting(1.0, 0.0), Setting(1.5, 2.0, "adaptive")]
    cal = calibrate(_t3(base), tok, PERTURBED, holdout, forget, settings=settings, tolerance=0.99, oracle=oracle)
    without = calibrate(_t3(base), tok, PERTURBED, holdout, forget, settings=settings, tolerance=0.99)
    assert cal.chosen.setting == without.chosen.setting and without.oracle_best() is None

    fmt = QAFormatter(tok)
    para, pert, n = _perturbed_examples(fmt, PERTURBED)
    fq_ex, ho_ex = (fmt.encode_batch([r["question"] for r in d], [r["answer"] for r in d]) for d in (PERTURBED, holdout))

    def scores(model):
        lm = CausalLM(model, tok)
        p = np.array([w.avg_loss for w in lm.token_scores(para, batch_size=3)])
        q = np.array([w.avg_loss for w in lm.token_scores(pert, batch_size=3)]).reshape(-1, n)
        trs = [metrics.truth_ratio(pi, qi) for pi, qi in zip(p, q)]
        mink = [[metrics.min_k_score(w.without_eos().logprob) for w in lm.token_scores(ex, batch_size=3)] for ex in (fq_ex, ho_ex)]
        return trs, metrics.mia_auc(*mink)

    tr_o, auc_o = scores(oracle)
    for row in cal.rows:
        t3 = _t3(base)
        t3.set_guidance(temperature=row.setting.temperature, scale=row.setting.scale, tempering=row.setting.tempering)
        tr, auc = scores(t3)
        assert row.forget_quality == pytest.approx(metrics.forget_quality(tr, tr_o), abs=1e-6)
        assert row.privleak == pytest.approx(metrics.privleak(auc, auc_o), abs=1e-3)
    assert len({r.privleak for r in cal.rows}) > 1
    best = cal.oracle_best()
    assert best.forget_quality == max(r.forget_quality for r in cal.rows)
    # the banded pick: only settings whose privleak is within the band
    band = sorted(abs(r.privleak) for r in cal.rows)[0]
    banded = cal.oracle_best(band)
    assert abs(banded.privleak) == band and cal.oracle_best(band - 1e-3) is None
    assert "privleak within ±15" in cal.oracle_summary()
    table = cal.table()
    assert "FQ(oracle)" in table and "oracle check (never used to choose)" in table and "<- oracle's pick" in table
    assert cal.as_dict()["oracle_best"]["label"] == best.setting.label()
    # the oracle being the base itself: guidance off gives the oracle's truth ratios and AUC exactly
    same = calibrate(_t3(base), tok, PERTURBED, holdout, forget, settings=settings, tolerance=0.99, oracle=base)
    off = next(r for r in same.rows if r.setting == Setting(1.0, 0.0))
    assert off.forget_quality == 1.0 and off.privleak == pytest.approx(0.0, abs=1e-6)


def test_the_grid_scores_every_setting_bit_for_bit_as_one_setting_at_a_time(random_lm):
    """grid_logprobs computes the base's log-probs, the head and what guidance derives from them alone once per
    chunk and reuses them across the grid: every setting -- tempering, tail guard, bias, floor, support gate, T = 1,
    s = 0, repeated -- scores bit for bit what token_logprobs (guided_logits, one setting) scores, the kept
    log-probs are never written into (T = 1 tilts in place), and evaluate_settings' rows are the one-at-a-time ones."""
    import t3unlearn.t3.calibrate as C
    from t3unlearn.t3.answer_states import grid_logprobs
    from t3unlearn.t3.guidance import guided_logits

    base, tok = random_lm
    t3 = _t3(base, tok=tok)
    fmt = QAFormatter(tok)
    st = answer_states(base, fmt.encode_batch([q for q, _ in QA], [a for _, a in QA]), fmt.pad_id)
    t3.head.fit_support(st.pooled[::2])
    order = [Setting(1.0, 1.0), Setting(2.0, 0.5, "adaptive"), Setting(1.0, 2.0, bias=0.5), Setting(1.0, 0.0),
             Setting(3.0, 1.0, "global", -2.0), Setting(2.5, 0.7, "adaptive", support=0.5),
             Setting(2.0, 0.7, "adaptive", -3.0, 0.5, 0.9, -1.0), Setting(1.0, 0.6, support=0.9), Setting(2.0, 0.0, "adaptive"),
             Setting(2.0, 0.7, "adaptive", copy_floor=3.0), Setting(2.0, 0.7, "adaptive", copy_floor=0.0, bias=0.5),
             Setting(1.0, 1.0), Setting(2.0, 0.7, "adaptive", piece_floor=10.0),
             Setting(2.0, 0.7, "adaptive", copy_floor=3.0, piece_floor=0.0),
             Setting(2.0, 0.7, "adaptive", piece_floor=10.0, spelling="base"), Setting(1.0, 1.0, spelling="base")]
    one = [token_logprobs(base, t3.head, st, s, chunk=4) for s in order]
    many = grid_logprobs(base, t3.head, st, order, chunk=4)
    for a, b in zip(one, many):
        assert torch.equal(a, b)
    logp = torch.log_softmax(torch.randn(3, 7), -1)
    before = logp.clone()
    guided_logits(logp, torch.randn(3, 7), Setting(1.0, 1.5), normalized=True)
    assert torch.equal(logp, before)
    assert not torch.equal(one[0], one[1]) and not torch.equal(one[5], one[6])  # the settings do differ
    assert not torch.equal(one[1], one[9])  # the copy exemption changes the scores
    assert not torch.equal(one[1], one[12]) and not torch.equal(one[9], one[13])  # so does the piece exemption
    assert not torch.equal(one[12], one[14]) and not torch.equal(one[0], one[15])  # and the base's spelling
    # at T = 1 the tilt is done in place: the base's spelling must read the untilted log-probs of the pieces
    raw, pieces = torch.randn(3, 7), torch.tensor([True, False, True, False, False, True, False])
    with torch.no_grad():
        spelled = guided_logits(raw, torch.randn(3, 7), Setting(1.0, 1.5, spelling="base"), pieces=pieces)
    torch.testing.assert_close(torch.log_softmax(spelled, -1)[:, pieces], torch.log_softmax(raw, -1)[:, pieces])
    assert torch.equal(grid_logprobs(base, None, st, order[:2])[1], token_logprobs(base, None, st, order[0]))
    # the rows: as if each setting were scored alone (the slow path, patched in)
    fast = evaluate_settings(base, t3.head, st, st, st, order, tolerance=0.5)
    slow_grid = lambda m, h, s, settings, **kw: [token_logprobs(m, h, s, x) for x in settings]  # noqa: E731
    saved, C.grid_logprobs = C.grid_logprobs, slow_grid
    try:
        slow = evaluate_settings(base, t3.head, st, st, st, order, tolerance=0.5)
    finally:
        C.grid_logprobs = saved
    assert [r.as_dict() for r in fast.rows] == [r.as_dict() for r in slow.rows]
    assert fast.chosen.setting == slow.chosen.setting




def test_min_k_of_all_items_at_once_is_item_by_item_bit_for_bit():
    """item_stats' min-k score (all items in one sort) equals np.sort(item)[:k].mean() per item exactly, ties and
    items without tokens included."""
    from t3unlearn.t3.calibrate import MIN_K, _min_k

    rng = np.random.default_rng(0)
    for trial in range(100):
        counts = rng.integers(0, 60, int(rng.integers(1, 30)))
        seq = np.repeat(np.arange(counts.size), counts)
        lp = (-rng.exponential(3, seq.size)).astype(np.float32).astype(np.float64)
        if trial % 3 == 0:
            lp = np.round(lp, 1)
        starts = np.cumsum(counts) - counts
        want = [-np.sort(lp[a : a + c])[: max(1, int(c * MIN_K))].mean() if c else 0.0 for a, c in zip(starts, counts)]
        assert np.array_equal(_min_k(lp, seq, counts.size), np.array(want))


def test_a_second_calibration_of_the_same_base_reads_its_forward_passes_back(random_lm, tmp_path):
    """The answer-state cache: another head on the same base and sets runs no forward pass of the base or the
    reference and gets the same table; changed weights or items are new entries; a broken file is made again;
    cache=False neither reads nor writes."""
    import copy

    from t3unlearn.t3.calibrate import calibrate

    base, tok = random_lm
    forget = [{"question": q, "answer": a} for q, a in QA]
    settings = [Setting(2.0, 1.0), Setting(1.0, 0.0), Setting(1.5, 2.0, "adaptive")]
    reference = copy.deepcopy(base)
    with torch.no_grad():
        reference.model.norm.weight.mul_(1.5)  # another model: its own entries
    calls = {"base": 0, "reference": 0}
    hooks = [m.get_input_embeddings().register_forward_hook(lambda *_, k=k: calls.__setitem__(k, calls[k] + 1))
             for k, m in (("base", base), ("reference", reference))]
    try:
        run = lambda t3, **kw: calibrate(t3, tok, PERTURBED, forget, forget, settings=settings, tolerance=0.99,  # noqa: E731
                                         reference=reference, cache_dir=tmp_path, **kw)
        first = run(_t3(base, seed=0))
        files = sorted(tmp_path.glob("*.safetensors"))
        # the base: the answers (forget, holdout and retain are the same items here: one entry), paraphrased and
        # perturbed answers; the reference: paraphrased and perturbed answers
        assert calls["base"] > 0 and calls["reference"] > 0 and len(files) == 5
        calls.update(base=0, reference=0)
        again = run(_t3(base, seed=0))
        assert calls == {"base": 0, "reference": 0} and sorted(tmp_path.glob("*.safetensors")) == files
        assert again.as_dict() == first.as_dict()
        other_head = run(_t3(base, seed=1))
        assert calls == {"base": 0, "reference": 0} and other_head.as_dict() != first.as_dict()
        files[0].write_bytes(b"not safetensors")
        assert run(_t3(base, seed=0)).as_dict() == first.as_dict() and calls["base"] + calls["reference"] > 0
        calls.update(base=0, reference=0)
        with torch.no_grad():
            reference.model.norm.weight.mul_(1.5)  # new weights: a new entry, computed
        changed = run(_t3(base, seed=0))
        assert calls["reference"] > 0 and calls["base"] == 0 and changed.as_dict() != first.as_dict()
        assert len(list(tmp_path.glob("*.safetensors"))) == 7
        calls.update(base=0, reference=0)
        before = {f: f.stat().st_mtime_ns for f in tmp_path.glob("*.safetensors")}
        assert run(_t3(base, seed=0), cache=False).as_dict() == changed.as_dict() and calls["base"] > 0
        assert {f: f.stat().st_mtime_ns for f in tmp_path.glob("*.safetensors")} == before
        # other items (a smaller holdout): a new entry of the base, computed
        calls.update(base=0, reference=0)
        calibrate(_t3(base, seed=0), tok, PERTURBED, forget[:2], forget, settings=settings, tolerance=0.99,
                  reference=reference, cache_dir=tmp_path)
        assert calls["base"] > 0 and len(list(tmp_path.glob("*.safetensors"))) == 8
    finally:
        for h in hooks:
            h.remove()


def test_calibration_gives_a_head_saved_before_word_piece_tables_its_table(random_lm):
    """A grid with the piece exemption on a head saved without the table: calibration makes the table training
    makes (from the tokenizer) and scores the grid with it; a grid without it leaves the head as it was."""
    from t3unlearn.t3.calibrate import calibrate
    from t3unlearn.t3.head import word_pieces

    base, tok = random_lm
    forget, other = [{"question": q, "answer": a} for q, a in QA[:2]], [{"question": QA[2][0], "answer": QA[2][1]}]
    t3 = _t3(base)
    calibrate(t3, tok, forget, other, forget, settings=[Setting(2.0, 1.0)], tolerance=0.99, cache=False)
    assert t3.head.pieces is None
    cal = calibrate(t3, tok, forget, other, forget, settings=[Setting(2.0, 1.0, piece_floor=10.0)], tolerance=0.99,
                    cache=False)
    assert torch.equal(t3.head.piece_mask(), word_pieces(tok, base.config.vocab_size))
    assert t3.guidance.piece_floor == 10.0 and cal.chosen.setting.piece_floor == 10.0


def test_whole_words_are_kept_unless_plain_tokens_match_beyond_the_ks_tests_resolution():
    """The default grid scores whole words (piece floor 10, the base spelling) and plain tokens; the rule keeps the
    closest whole-word setting unless a plain one is closer by more than the two-sample KS test resolves at 5 %."""
    import math

    from t3unlearn.t3.calibrate import CalibrationRow, default_grid
    from t3unlearn.t3.grid import choose, ks_resolution

    g = default_grid()
    assert {(st.piece_floor, st.spelling) for st in g} == {(10.0, "base"), (None, "guided")}
    assert len(g) == 2 * len(grid([1.0, 1.5, 1.75, 2.0, 2.25, 2.5], [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 1.0, 1.5],
                                  ["adaptive"]))
    # the asymptotic critical value of the two-sample test: 1.358 x sqrt(2 / 400) for two samples of 400
    assert ks_resolution(400, 400) == pytest.approx(1.3581 * math.sqrt(2 / 400), rel=1e-4)
    assert ks_resolution(40, 400) > ks_resolution(400, 400) > ks_resolution(4000, 4000) and ks_resolution(0, 5) == 0

    def row(setting, tr_ks, feasible=True):
        return CalibrationRow(setting, 0.1, 0.5, 0.1, 0.1, 0.9, 1.0, feasible, tr_ks=tr_ks)

    whole = row(Setting(2.5, 0.75, "adaptive", piece_floor=10.0, spelling="base"), 0.065)
    plain = row(Setting(2.5, 0.55, "adaptive"), 0.058)
    closer = row(Setting(2.5, 0.7, "adaptive"), 0.030)
    infeasible = row(Setting(2.0, 0.5, "adaptive"), 0.0, feasible=False)
    res = ks_resolution(400, 400)  # 0.096
    assert choose([plain, whole, infeasible], 0.03, 0.075, res) is whole  # 0.007 apart: not told apart
    assert choose([plain, whole], 0.03, 0.075, 0.0) is plain  # without the resolution: the closest
    assert choose([plain, whole, closer], 0.03, 0.075, 0.03) is closer  # 0.035 apart at a resolution of 0.03
    assert choose([plain, closer], 0.03, 0.075, res) is closer  # no whole-word setting: the closest as before
    far = row(Setting(2.5, 0.9, "adaptive", piece_floor=10.0, spelling="base"), 0.302)
    tofu_plain = row(Setting(2.5, 0.7, "adaptive"), 0.142)
    assert choose([far, tofu_plain], 0.03, 0.075, res) is tofu_plain  # 0.16 apart: plain tokens
    assert choose([far, row(tofu_plain.setting, 0.142, feasible=False)], 0.03, 0.075, res) is far  # only what is feasible
