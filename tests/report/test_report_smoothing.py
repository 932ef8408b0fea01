import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from bvkit.errors import BvkitError
from bvkit.report.smoothing import default_window, moving_average


@pytest.mark.parametrize("window", [1, 3, 5, 11])
def test_moving_average_matches_pandas_centred_rolling(window):
    values = np.random.default_rng(window).normal(size=(3, 17))
    expected = pd.DataFrame(values.T).rolling(window, center=True, min_periods=1).mean().to_numpy().T
    np.testing.assert_allclose(moving_average(values, window), expected)


@pytest.mark.parametrize("window", [0, 2, 4, -1])
def test_moving_average_rejects_even_or_empty_windows(window):
    with pytest.raises(BvkitError, match="odd"):
        moving_average(np.zeros(5), window)


def test_default_window_is_odd_tenth():
    assert [default_window(n) for n in (5, 10, 100, 1000)] == [1, 1, 11, 101]


def test_moving_average_skips_nan_classes_like_pandas():
    values = np.array([1.0, np.nan, 3.0, 4.0, np.nan, np.nan, np.nan, 8.0])
    expected = pd.Series(values).rolling(3, center=True, min_periods=1).mean().to_numpy()
    np.testing.assert_allclose(moving_average(values, 3), expected)
    assert np.isnan(moving_average(values, 1)[1])


def test_report_needs_neither_torch_nor_pyplot():
    code = (
        "import io, sys, pandas as pd, bvkit.report, bvkit.report.commands\n"
        "usage = pd.DataFrame({'method': 'ride', 'subset': 0, 'split': 'few', 'n_experts': [1, 2],"
        " 'share': [0.4, 0.6]})\n"
        "bvkit.report.plot_expert_usage(usage).savefig(io.BytesIO(), format='png')\n"
        "assert 'torch' not in sys.modules and 'matplotlib.pyplot' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "MPLBACKEND": "TkAgg"})
