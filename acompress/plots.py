"""Plots (PNG) of accuracy against parameters.

Figures are `matplotlib.figure.Figure` objects drawn without pyplot, so importing the
package never changes the matplotlib backend of a notebook or an application.
"""

from typing import Optional, Sequence, Tuple

import matplotlib
from matplotlib import figure as figure_lib
import numpy as np


def new_figure(figsize: Tuple[float, float]) -> Tuple[figure_lib.Figure, "matplotlib.axes.Axes"]:
    """(figure, axes) of a one-panel figure at 120 dpi, independent of pyplot's state."""
    figure = figure_lib.Figure(figsize=figsize, dpi=120)
    return figure, figure.add_subplot()


def finish(figure: figure_lib.Figure, axes, path: str, *, xlabel: str, ylabel: str, title: str,
           legend: dict) -> str:
    """Log-scale parameters axis, labels, grid and legend; saves `figure` to `path` (PNG)."""
    axes.set_xscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(**legend)
    figure.tight_layout()
    figure.savefig(path)
    return path


def color(index: int):
    """The `index`-th colour of matplotlib's tab10 cycle."""
    return matplotlib.colormaps["tab10"](index % 10)


def corpus_scatter(path: str, params: Sequence[int], accuracy: Sequence[float], *, teacher_params: int,
                   teacher_accuracy: Optional[float] = None, title: str = "corpus",
                   teacher_label: str = "teacher") -> str:
    """Validation accuracy vs. parameters (log scale) of every child, the teacher marked."""
    params = np.asarray(params, np.float64)
    accuracy = np.asarray(accuracy, np.float64)
    figure, axes = new_figure((7, 4.5))
    axes.scatter(params, accuracy, s=10, alpha=0.6, label=f"children ({len(params)})")
    axes.axvline(teacher_params, color="tab:red", linestyle=":", linewidth=1)
    if teacher_accuracy is not None:
        axes.scatter([teacher_params], [teacher_accuracy], marker="*", s=200, color="tab:red",
                     label=teacher_label, zorder=3)
    if len(accuracy):
        low = np.nanmin(accuracy) if np.isfinite(accuracy).any() else 0.0  # every child stays in view
        axes.set_ylim(max(0.0, min(low, teacher_accuracy or 1.0) - 0.02), 1.0)
    return finish(figure, axes, path, xlabel="parameters", ylabel="validation accuracy", title=title,
                  legend={"loc": "best"})
