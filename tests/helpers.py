"""Shared helpers for the tests: observed convergence order and small model factories."""

import numpy as np


def observed_order(spacings, errors) -> float:
    """Least-squares slope of log(error) against log(spacing) over all resolutions."""
    spacings, errors = np.asarray(spacings, float), np.asarray(errors, float)
    assert spacings.size >= 3, "fit an order over at least three resolutions"
    assert np.all(errors > 0) and np.all(np.isfinite(errors)), errors
    return float(np.polyfit(np.log(spacings), np.log(errors), 1)[0])
