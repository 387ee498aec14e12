"""The measurement helpers: the geometry forget detector (independent of the classifier) and the intervals."""

from __future__ import annotations

import math

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_geometry_detector_separates_glyphs_from_the_forget_labels_digits(module_home):
    from t3unlearn.images.data import ensure_benchmark
    from t3unlearn.images.measure import GeometryDetector, ink_area

    bench = ensure_benchmark("tiny")
    det = GeometryDetector.fit(bench)
    assert det.false_positive_rate <= 0.1 and det.true_positive_rate >= 0.9
    assert bool(det(bench.forget).all())  # the forget glyphs themselves (never seen by the fit)
    ones = bench.test[bench.test_labels == bench.forget_label]
    assert float(det(ones).float().mean()) <= 0.1
    # it reads ink, nothing else: a blank image is no glyph, a filled square is
    blank, block = torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16)
    block[..., 3:13, 4:12] = 1.0
    assert not bool(det(blank)[0]) and bool(det(block)[0])
    assert float(ink_area(block)[0]) == pytest.approx(80 / 256)


def test_intervals_match_hand_computations():
    from t3unlearn.errors import T3Error
    from t3unlearn.images.measure import binomial_interval, t_interval

    m, h = t_interval([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)  # t(0.975, 2) * sd / sqrt(n)
    assert math.isnan(t_interval([5.0])[1])
    with pytest.raises(T3Error):
        t_interval([])
    k, n, z = 3, 300, 1.959964
    p = k / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo, hi = binomial_interval(k, n)
    assert lo == pytest.approx(centre - half, rel=1e-4) and hi == pytest.approx(centre + half, rel=1e-4)
