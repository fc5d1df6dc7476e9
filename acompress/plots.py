"""Plots (PNG) of accuracy against parameters."""

from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot  # noqa: E402
import numpy as np  # noqa: E402


def corpus_scatter(path: str, params: Sequence[int], accuracy: Sequence[float], *, teacher_params: int,
                   teacher_accuracy: Optional[float] = None, title: str = "corpus",
                   teacher_label: str = "teacher") -> str:
    """Validation accuracy vs. parameters (log scale) of every child, the teacher marked."""
    params = np.asarray(params, np.float64)
    accuracy = np.asarray(accuracy, np.float64)
    figure, axes = pyplot.subplots(figsize=(7, 4.5), dpi=120)
    axes.scatter(params, accuracy, s=10, alpha=0.6, label=f"children ({len(params)})")
    axes.axvline(teacher_params, color="tab:red", linestyle=":", linewidth=1)
    if teacher_accuracy is not None:
        axes.scatter([teacher_params], [teacher_accuracy], marker="*", s=200, color="tab:red",
                     label=teacher_label, zorder=3)
    axes.set_xscale("log")
    axes.set_xlabel("parameters")
    axes.set_ylabel("validation accuracy")
    axes.set_title(title)
    if len(accuracy):
        low = np.nanmin(accuracy) if np.isfinite(accuracy).any() else 0.0  # every child stays in view
        axes.set_ylim(max(0.0, min(low, teacher_accuracy or 1.0) - 0.02), 1.0)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="best")
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)
    return path
