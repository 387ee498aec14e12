"""What a run's cost record measures: the peak memory of the process that did the work, not its parent's."""

from __future__ import annotations

import subprocess
import sys

import numpy as np


def test_a_child_process_reports_its_own_peak_not_its_parents():
    from t3unlearn.results import peak_rss_mb

    big = np.ones(60_000_000)  # 480 MB, every page touched
    parent = peak_rss_mb()
    assert parent is not None and parent > 450
    out = subprocess.run([sys.executable, "-c", "from t3unlearn.results import peak_rss_mb; print(peak_rss_mb())"],
                         capture_output=True, text=True, check=True).stdout
    child = float(out)
    # the child (a fresh interpreter: tens of MB) is started by fork + exec from this 480+ MB process;
    # getrusage's ru_maxrss would report the parent's peak here
    assert 5 < child < 200, (child, parent)
    del big
