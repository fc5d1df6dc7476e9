"""Rank agreement between predictions and measurements: Kendall tau, pairwise accuracy, per-size bins.

Numpy only. Pairs are compared in blocks, so n of a few tens of thousands is fine.
"""

from typing import Dict, Optional, Sequence

import numpy as np

_BLOCK = 2048


def _pair_counts(x: np.ndarray, y: np.ndarray):
    """(concordant, discordant, tied in x only, tied in y only) over all pairs i < j."""
    concordant = discordant = tied_x = tied_y = 0
    n = len(x)
    for start in range(0, n, _BLOCK):
        rows = slice(start, min(start + _BLOCK, n))
        dx = np.sign(x[rows, None] - x[None, :])
        dy = np.sign(y[rows, None] - y[None, :])
        upper = np.arange(rows.start, rows.stop)[:, None] < np.arange(n)[None, :]
        product = (dx * dy)[upper]
        sx, sy = dx[upper], dy[upper]
        concordant += int(np.sum(product > 0))
        discordant += int(np.sum(product < 0))
        tied_x += int(np.sum((sx == 0) & (sy != 0)))
        tied_y += int(np.sum((sy == 0) & (sx != 0)))
    return concordant, discordant, tied_x, tied_y


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> Optional[float]:
    """Kendall's tau-b (ties handled as scipy does); None with fewer than 2 points or a constant side."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"kendall_tau needs two 1-D arrays of one length, got {x.shape} and {y.shape}")
    if len(x) < 2:
        return None
    concordant, discordant, tied_x, tied_y = _pair_counts(x, y)
    denominator = np.sqrt(float(concordant + discordant + tied_x) * float(concordant + discordant + tied_y))
    if denominator == 0:
        return None
    return float((concordant - discordant) / denominator)


def pairwise_accuracy(predicted: Sequence[float], measured: Sequence[float]) -> Optional[float]:
    """Of the pairs whose measured values differ, the share the prediction orders the same way (ties 1/2)."""
    predicted = np.asarray(predicted, np.float64)
    measured = np.asarray(measured, np.float64)
    concordant, discordant, tied_predicted, _ = _pair_counts(predicted, measured)
    total = concordant + discordant + tied_predicted
    if total == 0:
        return None
    return float((concordant + 0.5 * tied_predicted) / total)


def binned_tau(predicted: Sequence[float], measured: Sequence[float], bin_by: Sequence[float],
               bins: int = 5) -> Dict[str, object]:
    """Kendall tau inside quantile bins of `bin_by` (e.g. log parameters), and their pair-weighted mean.

    This is the ranking compression needs: among networks of about the same size,
    which is the most accurate.
    """
    predicted = np.asarray(predicted, np.float64)
    measured = np.asarray(measured, np.float64)
    bin_by = np.asarray(bin_by, np.float64)
    edges = np.quantile(bin_by, np.linspace(0, 1, bins + 1)) if len(bin_by) else np.zeros(bins + 1)
    which = np.clip(np.searchsorted(edges, bin_by, side="right") - 1, 0, bins - 1)
    per_bin, weights, taus = [], [], []
    for index in range(bins):
        members = which == index
        tau = kendall_tau(predicted[members], measured[members]) if members.sum() >= 2 else None
        per_bin.append({"low": float(edges[index]), "high": float(edges[index + 1]), "count": int(members.sum()),
                        "tau": tau})
        if tau is not None:
            count = int(members.sum())
            weights.append(count * (count - 1) / 2)
            taus.append(tau)
    mean = float(np.average(taus, weights=weights)) if taus else None
    return {"mean": mean, "bins": per_bin}


def r_squared(predicted: Sequence[float], measured: Sequence[float]) -> Optional[float]:
    """Coefficient of determination of `predicted` for `measured`."""
    predicted = np.asarray(predicted, np.float64)
    measured = np.asarray(measured, np.float64)
    total = float(np.sum((measured - measured.mean()) ** 2)) if len(measured) else 0.0
    if total == 0:
        return None
    return 1.0 - float(np.sum((measured - predicted) ** 2)) / total


def summary(predicted: Sequence[float], measured: Sequence[float], bin_by: Optional[Sequence[float]] = None,
            bins: int = 5) -> Dict[str, object]:
    """tau, pairwise accuracy and (with `bin_by`) tau within size bins."""
    out = {"kendall_tau": kendall_tau(predicted, measured), "pairwise_accuracy": pairwise_accuracy(predicted, measured),
           "count": int(len(measured))}
    if bin_by is not None:
        out["binned_tau"] = binned_tau(predicted, measured, bin_by, bins)
    return out
