"""The qualitative claims of the toy theory, on fixed seeds (the numbers are exact given the seed).

Measured values (seeds 0-2, K = 400, g = 0.1, n = 4000, s = 1) are quoted in the messages; each
threshold sits well inside the measured effect, yet a run without the effect would fail it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from t3unlearn.toy import discrete_world, fit_classifier, gaussian_world_1d, gaussian_world_2d, kl, t3_estimate
from t3unlearn.toy.experiments import ToyConfig, evaluate, temperature_sweep

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def ratios():
    """(peak, T, exact?) -> forget ratio E_pf[p_hat / p_r], mean over SEEDS (one fit per peak and seed)."""
    vals = {}
    for peak in (0.01, 1.0):
        for seed in SEEDS:
            w = discrete_world(K=400, forget_size=100, peak=peak, g=0.1, seed=seed)
            fits = {False: fit_classifier(w, 4000, seed=seed), True: w.bayes_log_f()}
            for T in (1.0, 2.5):
                for ex, log_f in fits.items():
                    vals.setdefault((peak, T, ex), []).append(evaluate(w, log_f, T)["forget_ratio"])
    return {k: float(np.mean(v)) for k, v in vals.items()}


def test_forget_error_grows_with_peak_at_T1_and_far_slower_at_T25(ratios):
    g1 = ratios[(1.0, 1.0, False)] / ratios[(0.01, 1.0, False)]
    g25 = ratios[(1.0, 2.5, False)] / ratios[(0.01, 2.5, False)]
    # measured: T = 1: 1.109 -> 3.164 (x2.85); T = 2.5: 1.041 -> 0.334 (x0.32)
    assert g1 > 1.8, f"T=1: forget ratio grew only x{g1:.2f} from peak 0.01 to 1 (expected > 1.8; measured 2.85)"
    assert g25 < 1.0, f"T=2.5: forget ratio grew x{g25:.2f} from peak 0.01 to 1 (expected < 1; measured 0.32)"
    assert g1 > 3 * g25, f"growth at T=1 (x{g1:.2f}) is not markedly above growth at T=2.5 (x{g25:.2f})"


def test_classifier_induced_leak_is_amplified_by_the_peak(ratios):
    # The part of the forget ratio due to the classifier's error: learned f minus exact f*.
    leak = {(pk, T): ratios[(pk, T, False)] - ratios[(pk, T, True)] for pk in (0.01, 1.0) for T in (1.0, 2.5)}
    a1 = leak[(1.0, 1.0)] / leak[(0.01, 1.0)]
    a25 = leak[(1.0, 2.5)] / leak[(0.01, 2.5)]
    # measured: T = 1 x19.8 (0.109 -> 2.164), T = 2.5 x1.94 (0.118 -> 0.229); the peak rose 100x
    assert a1 > 6, f"T=1: classifier-induced leak grew only x{a1:.1f} as the peak sharpened 100x (measured 19.8)"
    assert a25 < 3, f"T=2.5: classifier-induced leak grew x{a25:.1f} (expected < 3; measured 1.94)"
    assert a1 > 4 * a25, f"leak amplification at T=1 (x{a1:.1f}) not > 4x that at T=2.5 (x{a25:.1f})"


def test_exact_classifier_at_T1_recovers_p_r_exactly():
    worlds = [discrete_world(peak=pk, seed=s) for pk in (0.01, 0.3, 1.0) for s in (0, 1)]
    worlds += [gaussian_world_1d(forget_width=0.02), gaussian_world_2d(forget_width=0.12)]
    for w in worlds:
        log_ph = t3_estimate(w.log_p, w.bayes_log_f(), T=1.0, s=1.0)
        d = kl(w.p_r, np.exp(log_ph))
        assert abs(d) < 1e-10, f"{w.name}: KL(p_r || p_hat*) = {d:.3g}, expected ~0"
        np.testing.assert_allclose(np.exp(log_ph), w.p_r, rtol=1e-9, atol=1e-300)
        # and a forget ratio of exactly 1: nothing learned from the forget data
        assert evaluate(w, w.bayes_log_f(), 1.0)["forget_ratio"] == pytest.approx(1.0, abs=1e-9)


def test_at_the_best_T_the_retain_error_matches_the_exact_classifiers():
    cfg = ToyConfig(seeds=3, Ts=[1.0, 1.25, 1.5, 2.0, 2.5], ss=[1.0])
    tp = temperature_sweep(cfg)
    bT = tp["best_T"]
    i = tp["Ts"].index(bT)
    est = tp["series"]["estimated/s=1"]["retain_kl"]["mean"][i]
    ex = tp["series"]["exact/s=1"]["retain_kl"]["mean"][i]
    fr1 = tp["series"]["estimated/s=1"]["forget_ratio"]["mean"][0]
    # measured: best T = 1.5; retain KL 0.0140 (learned) vs 0.0149 (exact), factor 0.94
    assert bT > 1.0, f"best T is {bT}: plain guidance already stops the leak (forget ratio {fr1:.2f} at T=1)"
    assert est <= 1.5 * ex, f"at best T={bT:g}: retain KL {est:.4f} > 1.5 x exact classifier's {ex:.4f}"
    assert fr1 > 2.0, f"at T=1 the forget ratio is {fr1:.2f}; expected a leak > 2 (measured 3.16)"


def test_gaussian_narrow_forget_component_leaks_at_T1_not_after_tempering():
    def ratio(width, T):
        w = gaussian_world_1d(forget_width=width)
        return np.mean([evaluate(w, fit_classifier(w, 2000, seed=s), T)["forget_ratio"] for s in (0, 1)])

    g1 = ratio(0.01, 1.0) / ratio(1.0, 1.0)
    g25 = ratio(0.01, 2.5) / ratio(1.0, 2.5)
    # measured: T = 1 x14.7 (0.99 -> 14.5); T = 2.5 x1.46 (1.88 -> 2.75)
    assert g1 > 6, f"1-D Gaussian, T=1: forget ratio grew only x{g1:.1f} as the width shrank 100x (measured 14.7)"
    assert g25 < g1 / 4, f"1-D Gaussian: growth at T=2.5 (x{g25:.1f}) not < 1/4 of T=1's (x{g1:.1f})"


def test_classifier_is_deterministic_for_a_seed():
    w = discrete_world(K=100, forget_size=10, peak=0.5)
    np.testing.assert_array_equal(fit_classifier(w, 500, seed=4), fit_classifier(w, 500, seed=4))
    assert not np.array_equal(fit_classifier(w, 500, seed=4), fit_classifier(w, 500, seed=5))
    wg = gaussian_world_1d(forget_width=0.1)
    np.testing.assert_array_equal(fit_classifier(wg, 300, seed=1), fit_classifier(wg, 300, seed=1))


def test_cli_writes_its_files(tmp_path, capsys, monkeypatch):
    from t3unlearn.commands.main import main
    from t3unlearn.toy.figures import FIGURES

    # the full CLI path, on an even smaller grid than --quick (the figures are the fixed cost)
    tiny = ToyConfig(seeds=1, peaks=[0.01, 1.0], Ts=[1.0, 2.5], ss=[1.0], ns=[500, 2000], gauss_n=500,
                     widths_1d=[1.0, 0.03], widths_2d=[1.0, 0.12])
    monkeypatch.setattr(ToyConfig, "quick", classmethod(lambda cls, seeds=None: tiny))
    out = tmp_path / "figs"
    assert main(["toy", "--out", str(out), "--quick", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "wall time:" in printed and "T = 2.5" in printed
    for name in FIGURES:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
    res = json.loads((out / "toy_results.json").read_text())
    assert {"config", "peak", "temperature", "samples", "gauss1d", "gauss2d", "summary"} <= set(res)
    assert res["config"]["seeds"] == 1
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")], "temporary files left behind"


def test_cli_rejects_bad_options(tmp_path, capsys):
    from t3unlearn.commands.main import main

    assert main(["toy", "--out", str(tmp_path), "--seeds", "0"]) == 2
    assert "--seeds must be >= 1" in capsys.readouterr().err
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["toy", "--out", str(f), "--quick"]) == 2
