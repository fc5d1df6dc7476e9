"""L1-norm filter pruning of the trained teacher (Li et al., ICLR 2017), the structured-pruning baseline.

This is what a Keras user can do today without any search (TF-MOT has no structured
pruning for Keras 3): remove each layer's filters with the smallest L1 norms, to a
target compression ratio, then fine-tune. Li et al. ("Pruning Filters for Efficient
ConvNets") choose each layer's pruning rate from a sensitivity analysis; `prune`
automates that choice:

1. **Sensitivity.** Each scalable unit of the teacher (a convolution, a hidden dense
   layer, a residual block's mid width; identity blocks follow their input) is pruned
   alone to every keep fraction of ``config.grid``. The pruned network keeps the
   teacher's largest-L1 filters, and the next layer keeps the matching input channels
   (`acompress.inheritance`). Its batch-norm statistics are recalibrated on
   ``config.recalibrate_batches`` training batches, and it is scored on the validation
   split without any training. The unpruned teacher is scored the same way: that is
   the base the losses are measured from.
2. **Allocation.** Starting from the teacher, the step that moves one unit to its next
   smaller fraction and loses the least validation accuracy per parameter removed is
   taken, until the network is at least ``target_ratio`` times smaller. The units'
   losses are taken to add up, which is Li et al.'s independence assumption.
3. The pruned network is then trained like every method's finalists
   (`acompress.finalists`). With ``init="inherit"``, the default, it starts from the
   same largest-L1 filters, so the whole baseline is prune, then fine-tune.

Only training and validation data are used (`data.SearchSplits`): test stays unseen.
"""

import dataclasses
import time
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import keras
import numpy as np
from absl import logging

from acompress import archspec
from acompress import data
from acompress import inheritance
from acompress import keras_builder
from acompress import progress
from acompress import sampler
from acompress import search_space
from acompress import training


@dataclasses.dataclass(frozen=True)
class PruningConfig:
    """How the sensitivity analysis runs.

    Attributes:
      grid: keep fractions each unit is tried at, each in (0, 1).
      recalibrate_batches: training batches each pruned network's batch norms see.
      importance: which filters are kept (`inheritance.IMPORTANCES`; "l1" is Li et al.'s).
      eval_examples: validation examples each pruned network is scored on (None: all).
    """

    grid: Tuple[float, ...] = (0.75, 0.5, 0.375, 0.25, 0.1875, 0.125, 0.0625)
    recalibrate_batches: int = 20
    importance: str = "l1"
    eval_examples: Optional[int] = None

    def __post_init__(self):
        grid = tuple(sorted({float(value) for value in self.grid}, reverse=True))
        if not grid or not all(0 < value < 1 for value in grid):
            raise ValueError(f"the pruning grid needs keep fractions in (0, 1), got {self.grid}")
        object.__setattr__(self, "grid", grid)
        if self.recalibrate_batches < 0:
            raise ValueError(f"recalibrate_batches must be >= 0, got {self.recalibrate_batches}")
        if self.importance not in inheritance.IMPORTANCES:
            raise ValueError(f"importance must be one of {inheritance.IMPORTANCES}, got {self.importance!r}")
        if self.eval_examples is not None and self.eval_examples < 1:
            raise ValueError(f"eval_examples must be >= 1, got {self.eval_examples}")

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["grid"] = list(self.grid)
        return out


@dataclasses.dataclass(frozen=True)
class Pruning:
    """The pruned teacher and how it was chosen.

    Attributes:
      spec: the pruned network.
      params: its exact parameter count.
      ratio: teacher parameters / params.
      target_ratio: the ratio asked for.
      reached: whether ``ratio >= target_ratio`` (False: every unit at its smallest
        fraction is still too large; `spec` is then that network).
      keep: unit index -> the keep fraction chosen (1.0: not pruned).
      base_accuracy: the teacher's validation accuracy under the same recalibration.
      sensitivity: unit index -> {keep fraction: validation accuracy of that unit pruned alone}.
      evaluations: pruned networks scored.
      seconds: wall time of the sensitivity analysis.
    """

    spec: archspec.ArchSpec
    params: int
    ratio: float
    target_ratio: float
    reached: bool
    keep: Dict[int, float]
    base_accuracy: float
    sensitivity: Dict[int, Dict[float, float]]
    evaluations: int
    seconds: float

    def to_dict(self) -> dict:
        return {"spec_hash": self.spec.hash, "params": self.params, "ratio": self.ratio,
                "target_ratio": self.target_ratio, "reached": self.reached,
                "keep": {str(unit): fraction for unit, fraction in sorted(self.keep.items())},
                "base_accuracy": self.base_accuracy,
                "sensitivity": {str(unit): {f"{fraction:g}": accuracy for fraction, accuracy in sorted(row.items())}
                                for unit, row in sorted(self.sensitivity.items())},
                "evaluations": self.evaluations, "seconds": self.seconds}


def prunable_units(teacher: archspec.ArchSpec) -> Tuple[int, ...]:
    """Indices of the units whose width pruning sets (identity blocks follow their input)."""
    residual = set(sampler.residual_units(teacher))
    return tuple(unit.index for unit in sampler.units(teacher) if unit.scalable and unit.index not in residual)


def pruned_spec(teacher: archspec.ArchSpec, keep: Mapping[int, float],
                space: Optional[search_space.SearchSpace] = None) -> archspec.ArchSpec:
    """The teacher with each unit in `keep` narrowed to that fraction (the sampler's width rounding)."""
    return sampler.apply_choices(teacher, width_multipliers=dict(keep), space=space)


def sensitivity(teacher_model: keras.Model, search: data.SearchSplits, data_config: data.DataConfig,
                config: PruningConfig = PruningConfig(), *, bn_momentum: float = 0.9,
                space: Optional[search_space.SearchSpace] = None, source=None
                ) -> Tuple[float, Dict[int, Dict[float, float]], int]:
    """Step 1 of the module docstring: (base accuracy, unit -> {fraction: accuracy}, evaluations).

    `source`: the teacher's `inheritance.source` when the caller already has it (it is computed otherwise).
    """
    info = search.info
    teacher_spec, tensors = source or inheritance.source(teacher_model, info.input_shape, info.num_classes)
    x_val, y_val = search.x_val, search.y_val
    if config.eval_examples is not None and config.eval_examples < len(y_val):
        chosen = np.sort(np.random.default_rng(data_config.seed).choice(len(y_val), config.eval_examples,
                                                                         replace=False))
        x_val, y_val = x_val[chosen], y_val[chosen]
    train, _ = data.search_datasets(search, data_config)
    validation = data.make_dataset(x_val, y_val, batch_size=data_config.batch_size, training=False)

    def score(spec: archspec.ArchSpec) -> float:
        model = keras_builder.build_model(spec, info.input_shape, info.num_classes, bn_momentum=bn_momentum)
        inheritance.inherit(model, spec, teacher_spec, tensors, info.input_shape, importance=config.importance)
        inheritance.recalibrate_batch_norm([model], train, config.recalibrate_batches)
        return training.accuracy(model, validation)

    units = prunable_units(teacher_spec)
    bar = progress.Progress(len(units) * len(config.grid) + 1, "pruning sensitivity", unit="networks")
    base = score(teacher_spec)
    bar.update()
    table: Dict[int, Dict[float, float]] = {}
    for unit in units:
        row = {}
        for fraction in config.grid:
            row[fraction] = score(pruned_spec(teacher_spec, {unit: fraction}, space))
            bar.update(extra=f"unit {unit} at {fraction:g}: {row[fraction]:.4f}")
        table[unit] = row
    bar.close()
    return base, table, 1 + len(units) * len(config.grid)


def allocate(teacher: archspec.ArchSpec, input_shape: Sequence[int], num_classes: int, *, target_ratio: float,
             base_accuracy: float, table: Mapping[int, Mapping[float, float]],
             space: Optional[search_space.SearchSpace] = None) -> Tuple[Dict[int, float], archspec.ArchSpec, bool]:
    """Step 2 of the module docstring: (unit -> keep fraction, the pruned spec, whether the ratio was reached).

    Ties go to the step that removes more parameters, then to the earlier unit.
    """
    if not target_ratio >= 1:
        raise ValueError(f"target_ratio must be >= 1, got {target_ratio}")
    target = teacher.count_params(input_shape, num_classes) / target_ratio
    levels = {unit: [1.0] + sorted(row, reverse=True) for unit, row in table.items()}
    position = {unit: 0 for unit in table}

    def loss(unit: int, level: int) -> float:
        fraction = levels[unit][level]
        return 0.0 if fraction == 1.0 else base_accuracy - table[unit][fraction]

    def keep_of(positions) -> Dict[int, float]:
        return {unit: levels[unit][level] for unit, level in positions.items() if levels[unit][level] < 1.0}

    spec = pruned_spec(teacher, {}, space)
    params = spec.count_params(input_shape, num_classes)
    while params > target * (1 + 1e-12):
        best = None
        for unit, level in position.items():
            for next_level in range(level + 1, len(levels[unit])):  # the next fraction that saves anything
                trial = {**position, unit: next_level}
                trial_spec = pruned_spec(teacher, keep_of(trial), space)
                saved = params - trial_spec.count_params(input_shape, num_classes)
                if saved > 0:
                    cost = (loss(unit, next_level) - loss(unit, level)) / saved
                    key = (cost, -saved, unit)
                    if best is None or key < best[0]:
                        best = (key, trial, trial_spec, params - saved)
                    break
        if best is None:
            return keep_of(position), spec, False
        _, position, spec, params = best
    return keep_of(position), spec, True


def prune(teacher_model: keras.Model, search: data.SearchSplits, data_config: data.DataConfig, *,
          target_ratio: float, config: PruningConfig = PruningConfig(), bn_momentum: float = 0.9,
          space: Optional[search_space.SearchSpace] = None) -> Pruning:
    """Sensitivity analysis and allocation (module docstring); the network still needs its fine-tune."""
    start = time.monotonic()
    info = search.info
    source = inheritance.source(teacher_model, info.input_shape, info.num_classes)  # parsed and copied once
    teacher_spec = source[0]
    base, table, evaluations = sensitivity(teacher_model, search, data_config, config, bn_momentum=bn_momentum,
                                           space=space, source=source)
    keep, spec, reached = allocate(teacher_spec, info.input_shape, info.num_classes, target_ratio=target_ratio,
                                   base_accuracy=base, table=table, space=space)
    params = spec.count_params(info.input_shape, info.num_classes)
    ratio = teacher_spec.count_params(info.input_shape, info.num_classes) / params
    logging.info("L1 filter pruning: %d params (%.1fx)%s, keep %s", params, ratio,
                 "" if reached else " (target not reached)", _describe(keep))
    return Pruning(spec=spec, params=params, ratio=ratio, target_ratio=target_ratio, reached=reached, keep=keep,
                   base_accuracy=base, sensitivity=table, evaluations=evaluations,
                   seconds=time.monotonic() - start)


def _describe(keep: Mapping[int, float]) -> str:
    parts: List[str] = [f"unit {unit}: {fraction:g}" for unit, fraction in sorted(keep.items())]
    return ", ".join(parts) or "nothing pruned"
