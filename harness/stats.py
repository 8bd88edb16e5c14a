"""Statistics over seeds shared by every report: the interquartile mean and its percentile
bootstrap interval (Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice":
IQM with 95% stratified-bootstrap CIs; with one task per table the bootstrap is over seeds)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.stats


def iqm(x: Sequence[float]) -> float:
    """Interquartile mean: the mean of the middle 50% (``trim_mean(x, 0.25)``)."""
    return float(scipy.stats.trim_mean(np.asarray(x, np.float64), 0.25))


def bootstrap_ci(
    x: Sequence[float],
    stat: Callable[[np.ndarray], float] = iqm,
    *,
    reps: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap ``(1 - alpha)`` interval of ``stat`` over resampled seeds
    (``reps`` resamples of ``x``'s size, ``np.random.default_rng(seed)``); NaNs when empty."""
    x = np.asarray(x, np.float64)
    if x.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(reps, x.size))
    stats = np.array([stat(x[i]) for i in idx])
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)
