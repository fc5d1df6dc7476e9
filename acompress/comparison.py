"""Side-by-side comparison of compression methods from their result files.

Every method writes one JSON with the same top-level keys (see `baselines`: "method",
"seed", "teacher", "chosen", "budget"); the latent search's ``compressed/report.json``
has them too. `collect` reads any mix of result files or run directories, `summarise`
groups them by method, and `markdown` / `plot` render the table and the figure.

The headline number is the compression ratio of the chosen network when its **test**
accuracy is within ``max_drop`` of the teacher's (chosen on validation; test only
reported). A run whose chosen network drops more counts as a miss: its ratio is kept in
the table but not in the "ratio at <= drop" mean.
"""

import json
import math
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from acompress import plots
from acompress import rundir

CANDIDATE_FILES = ("result.json", os.path.join("compressed", "report.json"), "report.json")


def find_result(path: str) -> str:
    """The result file at `path` (a file, or a run directory holding one of CANDIDATE_FILES)."""
    if not tf.io.gfile.isdir(path):
        if tf.io.gfile.exists(path):
            return path
        raise FileNotFoundError(f"no result at {path}")
    for name in CANDIDATE_FILES:
        candidate = os.path.join(path, name)
        if tf.io.gfile.exists(candidate):
            return candidate
    raise FileNotFoundError(f"{path} holds no result ({', '.join(CANDIDATE_FILES)}); has the run finished?")


def row(result: dict, source: str, max_drop: float) -> dict:
    """One comparable row of a result."""
    for key in ("method", "teacher", "chosen", "budget"):
        if key not in result:
            raise ValueError(f"{source} is not a result file: it has no {key!r}")
    teacher, chosen, budget = result["teacher"], result["chosen"], result["budget"]
    drop = teacher["test_accuracy"] - chosen["test_accuracy"]
    return {"method": result["method"], "seed": result.get("seed"), "source": source,
            "teacher_params": teacher["params"], "teacher_test_accuracy": teacher["test_accuracy"],
            "params": chosen["params"], "flops": chosen.get("flops"), "ratio": teacher["params"] / chosen["params"],
            "test_accuracy": chosen["test_accuracy"], "val_accuracy": chosen.get("val_accuracy"),
            "test_drop": drop, "within_drop": drop <= max_drop + 1e-9,
            "child_epochs": budget.get("child_epochs"), "wall_seconds": budget.get("wall_seconds")}


def collect(paths: Sequence[str], max_drop: float = 0.01) -> List[dict]:
    rows = []
    for path in paths:
        source = find_result(path)
        try:
            result = rundir.read_json(source)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source} is not a result file: not valid JSON ({error})") from None
        rows.append(row(result, source, max_drop))
    teachers = {(r["teacher_params"], round(r["teacher_test_accuracy"], 6)) for r in rows}
    if len({params for params, _ in teachers}) > 1:
        raise ValueError("the results compress different teachers: " + ", ".join(
            f"{r['source']}: {r['teacher_params']} params" for r in rows))
    return rows


def _spread(values: Sequence[float]) -> Dict[str, Optional[float]]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    # The sample standard deviation (ddof 1): over 2-3 seeds the population one (ddof 0) understates the spread.
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return {"mean": float(np.mean(values)), "std": std, "min": float(min(values)), "max": float(max(values)),
            "n": len(values)}


def summarise(rows: Sequence[dict]) -> List[dict]:
    """Per method: ratio (all runs, and runs within the drop), test drop, budgets; sorted by ratio within drop."""
    methods = {}
    for r in rows:
        methods.setdefault(r["method"], []).append(r)
    out = []
    for method, group in methods.items():
        kept = [r for r in group if r["within_drop"]]
        out.append({"method": method, "runs": len(group), "seeds": sorted(str(r["seed"]) for r in group),
                    "within_drop": len(kept),
                    "ratio": _spread([r["ratio"] for r in group]),
                    "ratio_within_drop": _spread([r["ratio"] for r in kept]),
                    "test_drop_points": _spread([100 * r["test_drop"] for r in group]),
                    "test_accuracy": _spread([r["test_accuracy"] for r in group]),
                    "child_epochs": _spread([r["child_epochs"] for r in group]),
                    "wall_seconds": _spread([r["wall_seconds"] for r in group])})
    return sorted(out, key=lambda s: -(s["ratio_within_drop"]["mean"] or 0.0))


def _fmt(spread: dict, digits: int = 1, suffix: str = "") -> str:
    if spread["mean"] is None:
        return "—"
    text = f"{spread['mean']:.{digits}f}{suffix}"
    if spread["n"] > 1:
        text += f" ± {spread['std']:.{digits}f}"
    return text


def markdown(summary: Sequence[dict], max_drop: float) -> str:
    head = (f"| method | runs | within {100 * max_drop:g} pt | ratio within drop | ratio (all runs) | test drop (pt) | "
            "child-epochs | search wall time (s) |\n|---|---|---|---|---|---|---|---|\n")
    lines = [f"| {s['method']} | {s['runs']} | {s['within_drop']}/{s['runs']} | {_fmt(s['ratio_within_drop'], 1, 'x')} "
             f"| {_fmt(s['ratio'], 1, 'x')} | {_fmt(s['test_drop_points'], 2)} | {_fmt(s['child_epochs'], 0)} "
             f"| {_fmt(s['wall_seconds'], 0)} |" for s in summary]
    note = "\n± is the sample standard deviation over runs (n - 1 in the denominator).\n"
    return head + "\n".join(lines) + "\n" + note


def runs_markdown(rows: Sequence[dict]) -> str:
    """Every run, one line each: method, seed, parameters, ratio, test accuracy and drop, within the drop."""
    head = ("| method | seed | parameters | ratio | test accuracy | test drop (pt) | within drop | child-epochs |\n"
            "|---|---|---|---|---|---|---|---|\n")
    ordered = sorted(rows, key=lambda r: (r["method"], str(r["seed"])))
    lines = []
    for r in ordered:
        epochs = "—" if r["child_epochs"] is None else f"{r['child_epochs']:.0f}"
        lines.append(f"| {r['method']} | {r['seed']} | {r['params']:,} | {r['ratio']:.1f}x "
                     f"| {100 * r['test_accuracy']:.2f} % | {100 * r['test_drop']:.2f} "
                     f"| {'yes' if r['within_drop'] else 'no'} | {epochs} |")
    return head + "\n".join(lines) + "\n"


def plot(path: str, rows: Sequence[dict], title: str = "compression methods") -> str:
    """Test accuracy vs. parameters of every method's chosen network, and the teacher."""
    figure, axes = plots.new_figure((7.5, 4.8))
    methods = sorted({r["method"] for r in rows})
    for index, method in enumerate(methods):
        group = [r for r in rows if r["method"] == method]
        epochs = _spread([r["child_epochs"] for r in group])["mean"]
        label = f"{method}" + (f" ({epochs:.0f} child-epochs)" if epochs else "")
        axes.scatter([r["params"] for r in group], [r["test_accuracy"] for r in group], s=40,
                     color=plots.color(index), label=label, zorder=3)
    teacher = rows[0]
    axes.scatter([teacher["teacher_params"]], [teacher["teacher_test_accuracy"]], marker="*", s=220, color="black",
                 label="teacher", zorder=4)
    axes.axhline(teacher["teacher_test_accuracy"] - 0.01, color="gray", linestyle=":", linewidth=1,
                 label="teacher - 1 point")
    return plots.finish(figure, axes, path, xlabel="parameters", ylabel="test accuracy", title=title,
                        legend={"fontsize": 8, "loc": "lower right"})
