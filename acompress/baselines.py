"""Baselines: Keras Tuner searches over the corpus sampler's child space, uniform width scaling and
L1-norm filter pruning.

The latent search is judged against searches that see the **same children** and
spend the **same budget**:

* ``random``, ``hyperband``, ``bayesian``: Keras Tuner's RandomSearch, Hyperband
  and BayesianOptimization oracles propose children through `ChildHyperModel`;
  each trial trains its child for a short proxy budget on the search splits
  (train / validation: `data.Splits.for_search()`, the test split is never touched
  during a search) and scores it with a named objective. The search stops
  starting trials once a wall-time or child-epoch budget (`Budget`) is spent.
  The top `num_finalists` *distinct* networks by objective are then retrained for
  the full budget (`finalists.train_finalists`) and one is chosen
  (`finalists.choose`: fewest parameters within `max_accuracy_drop` of the
  teacher, on validation accuracy).
* ``uniform``: every width of the teacher times one ``alpha``, the largest alpha
  whose network is at least `target_ratio` times smaller (`uniform_width_scaling`),
  trained as the single finalist. No search, no budget.
* ``l1_prune``: L1-norm filter pruning of the trained teacher (Li et al., 2017) to
  `target_ratio`, per-layer rates from a sensitivity analysis on the validation split
  (`acompress.pruning`), fine-tuned as the single finalist. Its budget is the
  sensitivity analysis: ``budget.evaluations`` pruned networks scored without training.

The child space
---------------
`ChildHyperModel` declares one hyperparameter per choice `sampler.apply_choices`
takes, and maps a configuration to a spec with `sampler.apply_choices` itself (the
one deterministic choices -> spec mapping, shared with the corpus sampler):

=====================  ==================================================  ==================
hyperparameter         what                                                values
=====================  ==================================================  ==================
``width_<g>``          width multiplier of width group ``g``               the sampler's grid
                       (`sampler.width_groups`; with ``per_unit_widths``,  (1/32, 1/16, ...,
                       one ``width_u<i>`` per scalable unit instead)       15/16, 1)
``remove_u<i>``        remove unit ``i`` (`sampler.removable_units`)       False / True
``kernel_u<i>``        kernel of conv/block unit ``i`` (``tune_kernels``)  odd kernels <= the
                                                                           teacher's, and 1
=====================  ==================================================  ==================

This is the sampler's space with per-group widths (the sampler draws per-group
widths for half its children and per-unit widths for the other half). The prior
differs: Keras Tuner draws each choice uniformly (a unit is removed with
probability 1/2, not the sampler's 0.1; a multiplier is uniform on the grid, so
most random children are mildly compressed), which is part of what a baseline is.
A configuration the space cannot express (every conv unit removed, a shape that
collapses) raises `InvalidChildError`, a `keras_tuner.errors.FailedTrialError`:
the trial is recorded as ``FAILED`` at no training cost and the search goes on.
A removed unit's width is a dead hyperparameter, so different configurations can
be the same network: finalists are deduplicated by spec hash.

Objectives (``TunerConfig.objective``; higher is better; A is the trial's
validation accuracy, r = teacher params / child params):

* ``log_tradeoff`` (default): ``A + tradeoff * log2(r)``; with tradeoff 0.01, one
  halving of the parameters is worth one point of accuracy.
* ``target``: accuracy at a parameter target: ``A`` if ``r >= target_ratio``, else
  ``A - 1 - log2(target_ratio / r)``: every child that meets the target beats
  every child that does not, and among those that do not, the closer the better.
* ``n2n``: the N2N reward (Ashok et al. 2018) ``C (2 - C) * A / A_teacher`` with
  ``C = 1 - 1/r``. **Pitfall (measured):** ``C (2 - C) = 1 - 1/r^2`` exceeds
  0.995 for every r past sqrt(200) = 14.14x (0.9949 at 14x, 0.99984 at 80x), so among children
  compressed more than ~14x the reward is accuracy alone to within half a percent:
  it cannot tell a 15x child from a 250x one, and the search drifts to the most
  accurate, least compressed candidates. Kept for comparison with N2N, not as a
  default.

Budget
------
`Budget` holds a wall-time limit (seconds), a child-epoch limit and/or a trial
limit. Before each new trial the oracle checks them; once any is spent, no trial
starts (a trial already running finishes, so the search overshoots by at most one
trial per worker). Child-epochs are the epochs actually trained, summed over
trials: Hyperband trials that continue an earlier trial count only their new
epochs (``tuner/epochs - tuner/initial_epoch``), diverged trials count the epochs
they ran, invalid configurations count 0; the epochs of trials still running are
counted as committed when deciding whether to start another. Wall time runs from
the search's first trial, summed over resumed sessions (the time between a kill
and the rerun is not counted; the kill's lost trial is run again on resume); the
reported ``wall_seconds`` ends at the last trial's end (so a distributed chief's
idle wait for its workers to leave is not in it).

Resuming and distribution
-------------------------
The tuner's state lives in ``<directory>/<method>/`` (Keras Tuner's
``overwrite=False``): rerunning continues the search where it stopped. With
``KERASTUNER_ORACLE_IP``, ``KERASTUNER_ORACLE_PORT`` and ``KERASTUNER_TUNER_ID``
(``chief`` for the oracle, any other id for a worker) set, `run_tuner` takes
part in Keras Tuner's distributed search: the chief serves the oracle (and the
budget) over gRPC and returns every trial; a worker runs trials and returns none
(`tuner_role`). All processes need the same arguments and a shared `directory`.
Resume with the same topology (a single-process project is not resumed by a chief).

Result schema (``result.json``, shared by every method, the latent search included)
---------------------------------------------------------------------------------
``schema_version``
    1.
``method``
    ``random`` | ``hyperband`` | ``bayesian`` | ``uniform`` | ``l1_prune`` (the latent search writes
    its own name).
``seed``
    the run's one seed; ``tuner_seed``: the seed Keras Tuner was given (``seed + 1``,
    because Keras Tuner treats 0 as "no seed"), null without a tuner.
``objective``
    the objective's name (null for ``uniform``); ``objective_config``: its parameters
    (``tradeoff``, ``target_ratio``, ``teacher_accuracy``).
``teacher``
    ``{spec_hash, params, flops, val_accuracy, test_accuracy}``: the teacher every
    method is compared against (one teacher stage, `teacher.train_or_load`).
``chosen``
    a finalist record (below) plus ``within_drop`` (whether it met the accuracy rule).
``selection``
    ``{rule, split: "validation", max_accuracy_drop, teacher_val_accuracy}``.
``finalists``
    finalist records: ``{spec, spec_hash, params, flops, ratio, val_accuracy,
    test_accuracy, train_seconds, epochs, seed, status, reason}`` (accuracies null
    unless status is ``ok``).
``trials``
    the search's trials, by trial id: ``{trial_id, status, score, val_accuracy,
    params, flops, ratio, spec, spec_hash, child_epochs, initial_epoch, epochs,
    train_seconds, hyperparameters, message}`` (``spec`` null for an invalid
    configuration; ``epochs`` is the network's cumulative epochs for Hyperband); [] for
    ``uniform``.
``budget``
    ``{wall_seconds, child_epochs, trials, trial_seconds, wall_limit, epoch_limit,
    trial_limit, finalist_epochs, finalist_seconds}``: what the search spent, its
    limits (null: none) and what the finalists cost on top.
``uniform``
    for ``uniform`` only: ``{alpha, target_ratio, reached}``.
``pruning``
    for ``l1_prune`` only: `pruning.Pruning.to_dict` (the kept fractions, the
    sensitivity table, its cost).
"""

import contextlib
import dataclasses
import math
import os
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import keras
import keras_tuner
from keras_tuner.engine import trial as trial_lib
import tensorflow as tf

from acompress import archspec
from acompress import child_training
from acompress import data
from acompress import finalists
from acompress import keras_builder
from acompress import progress
from acompress import pruning as pruning_lib
from acompress import rundir
from acompress import sampler
from acompress import search_space
from acompress import training

SCHEMA_VERSION = 1
RANDOM, HYPERBAND, BAYESIAN, UNIFORM, L1_PRUNE = "random", "hyperband", "bayesian", "uniform", "l1_prune"
TUNER_METHODS = (RANDOM, HYPERBAND, BAYESIAN)
METHODS = TUNER_METHODS + (UNIFORM, L1_PRUNE)
LOG_TRADEOFF, TARGET, N2N = "log_tradeoff", "target", "n2n"
OBJECTIVES = (LOG_TRADEOFF, TARGET, N2N)
SCORE = "score"  # the Keras Tuner objective every trial reports (maximised)
WEIGHTS_FILE = "child.weights.h5"  # a Hyperband trial's weights, for the trials that continue it
SELECTION_RULE = ("fewest parameters among finalists with val_accuracy >= teacher val_accuracy - "
                  "max_accuracy_drop; if none, the most accurate finalist")


# -- objectives -------------------------------------------------------------------------
def n2n_compression_term(ratio: float) -> float:
    """N2N's ``C (2 - C)`` with ``C = 1 - 1/ratio``, i.e. ``1 - 1/ratio^2`` (see the module docstring)."""
    if not ratio > 0:
        raise ValueError(f"ratio must be > 0, got {ratio}")
    compression = 1.0 - 1.0 / ratio
    return compression * (2.0 - compression)


def objective_value(objective: str, *, val_accuracy: float, params: int, teacher_params: int,
                    teacher_accuracy: Optional[float] = None, tradeoff: float = 0.01,
                    target_ratio: float = 10.0) -> float:
    """The score of a child under `objective` (higher is better; formulas in the module docstring).

    Args:
      objective: one of `OBJECTIVES`.
      val_accuracy: the child's validation accuracy.
      params, teacher_params: exact parameter counts.
      teacher_accuracy: A_teacher of ``n2n`` (a scale: it does not change the
        ranking); None: 1.
      tradeoff: accuracy per halving of the parameters, for ``log_tradeoff``.
      target_ratio: the compression ratio ``target`` asks for.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if params < 1 or teacher_params < 1:
        raise ValueError(f"parameter counts must be >= 1, got {params} and {teacher_params}")
    ratio = teacher_params / params
    if objective == LOG_TRADEOFF:
        return float(val_accuracy + tradeoff * math.log2(ratio))
    if objective == TARGET:
        if ratio >= target_ratio * (1 - 1e-12):
            return float(val_accuracy)
        return float(val_accuracy - 1.0 - math.log2(target_ratio / ratio))
    reference = teacher_accuracy if teacher_accuracy else 1.0
    return float(n2n_compression_term(ratio) * val_accuracy / reference)


# -- the hypermodel -----------------------------------------------------------------------
class InvalidChildError(keras_tuner.errors.FailedTrialError):
    """A configuration of `ChildHyperModel` that is not a valid child (the trial fails, the search goes on)."""


class ChildHyperModel(keras_tuner.HyperModel):
    """The teacher's child space as Keras Tuner hyperparameters (table in the module docstring).

    Args:
      teacher: the teacher's spec.
      input_shape, num_classes: the data's.
      space: the search space children must lie in (widths snap to it); default `SearchSpace()`
        widened for the teacher (`SearchSpace.extended_for`).
      width_grid: the multipliers offered; default the sampler's grid.
      per_unit_widths: one multiplier per scalable unit instead of one per width group.
      tune_kernels: offer smaller kernels for conv/block units (1 and odd kernels
        below the teacher's, as the sampler does).
      bn_momentum: batch norm momentum of built models.
    """

    def __init__(self, teacher: archspec.ArchSpec, input_shape: Sequence[int], num_classes: int, *,
                 space: Optional[search_space.SearchSpace] = None,
                 width_grid: Optional[Sequence[float]] = None, per_unit_widths: bool = False,
                 tune_kernels: bool = True, bn_momentum: float = 0.9, name: str = "child_space"):
        super().__init__(name=name)
        self.teacher = teacher
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_classes = int(num_classes)
        self.space = space or search_space.SearchSpace().extended_for(teacher)
        grid = sampler.SamplerConfig().width_grid if width_grid is None else width_grid
        self.width_grid = sampler.SamplerConfig(width_grid=tuple(grid)).width_grid  # validated
        self.bn_momentum = bn_momentum
        self.teacher_params = teacher.count_params(self.input_shape, self.num_classes)
        units = sampler.units(teacher)
        if per_unit_widths:
            groups = tuple((unit.index,) for unit in units if unit.scalable)
            self.width_names = tuple(f"width_u{group[0]}" for group in groups)
        else:
            groups = sampler.width_groups(teacher)
            self.width_names = tuple(f"width_{number}" for number in range(len(groups)))
        self.width_groups = groups
        self.removable = sampler.removable_units(teacher, self.input_shape, self.space)
        kernels = []
        if tune_kernels:
            for unit in units:
                if unit.has_kernel and unit.primary.kernel > 1:
                    kernel = unit.primary.kernel  # the sampler's options: odd kernels 3.. below it, and 1
                    smaller = {k for k in self.space.kernels if k % 2 == 1 and (3 <= k < kernel or k == 1)}
                    options = sorted({kernel} | smaller, reverse=True)
                    if len(options) > 1:
                        kernels.append((unit.index, tuple(options)))
        self.kernel_options = tuple(kernels)

    # Hyperparameter names, in declaration order.
    def removal_name(self, unit: int) -> str:
        return f"remove_u{unit}"

    def kernel_name(self, unit: int) -> str:
        return f"kernel_u{unit}"

    def declare_hyperparameters(self, hp: keras_tuner.HyperParameters) -> None:
        """Declares (or reads back) every hyperparameter of the space on `hp`."""
        for name in self.width_names:
            hp.Choice(name, list(self.width_grid), default=1.0)
        for unit in self.removable:
            hp.Boolean(self.removal_name(unit), default=False)
        for unit, options in self.kernel_options:
            hp.Choice(self.kernel_name(unit), list(options), default=options[0])

    def choices(self, values: Mapping[str, Any]) -> Dict[str, Any]:
        """The `sampler.apply_choices` keyword arguments a configuration stands for (missing: teacher's)."""
        multipliers = {}
        for name, group in zip(self.width_names, self.width_groups):
            for unit in group:
                multipliers[unit] = float(values.get(name, 1.0))
        removed = tuple(unit for unit in self.removable if bool(values.get(self.removal_name(unit), False)))
        kernels = {}
        for unit, options in self.kernel_options:
            kernel = int(values.get(self.kernel_name(unit), options[0]))
            if kernel != options[0]:
                kernels[unit] = kernel
        return {"width_multipliers": multipliers, "removed_units": removed, "kernel_choices": kernels}

    def spec_from_values(self, values: Mapping[str, Any]) -> archspec.ArchSpec:
        """The child a configuration describes; `InvalidChildError` if it is not a valid in-space child.

        Keras Tuner's own keys (``tuner/...``) are ignored.
        """
        try:
            child = sampler.apply_choices(self.teacher, space=self.space, input_shape=self.input_shape,
                                          **self.choices(values))
            self.space.check(child)
        except (ValueError, search_space.OutOfSearchSpaceError) as error:  # SpecError, ShapeError included
            raise InvalidChildError(f"not a valid child: {error}") from error
        return child

    def spec(self, hp: keras_tuner.HyperParameters) -> archspec.ArchSpec:
        """Declares the space on `hp` and returns the child its values describe."""
        self.declare_hyperparameters(hp)
        return self.spec_from_values(hp.values)

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        """The child's Keras model (untrained); `InvalidChildError` for an invalid configuration."""
        spec = self.spec(hp)
        return keras_builder.build_model(spec, self.input_shape, self.num_classes, bn_momentum=self.bn_momentum)


# -- configuration --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Budget:
    """When a search stops starting trials (module docstring, "Budget"). None: no such limit.

    Attributes:
      wall_seconds: wall time of the search, from its first trial, over all sessions.
      child_epochs: epochs trained, summed over trials.
      max_trials: trials started (invalid configurations included).
    """

    wall_seconds: Optional[float] = None
    child_epochs: Optional[int] = None
    max_trials: Optional[int] = None

    def __post_init__(self):
        if self.wall_seconds is not None and not self.wall_seconds > 0:
            raise ValueError(f"the wall-time budget must be > 0 seconds, got {self.wall_seconds}")
        if self.child_epochs is not None and self.child_epochs < 1:
            raise ValueError(f"the child-epoch budget must be >= 1, got {self.child_epochs}")
        if self.max_trials is not None and self.max_trials < 1:
            raise ValueError(f"the trial budget must be >= 1, got {self.max_trials}")

    @property
    def limited(self) -> bool:
        return any(value is not None for value in (self.wall_seconds, self.child_epochs, self.max_trials))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _default_trial() -> finalists.FinalistConfig:
    return finalists.FinalistConfig(train=training.TrainConfig(epochs=10, learning_rate=1e-3, optimizer="adam",
                                                               schedule="constant"))


def _default_grid() -> Tuple[float, ...]:
    return sampler.SamplerConfig().width_grid


@dataclasses.dataclass(frozen=True)
class TunerConfig:
    """A Keras Tuner search over the child space.

    Attributes:
      objective: one of `OBJECTIVES` (module docstring).
      tradeoff: accuracy per halving of the parameters (``log_tradeoff``).
      target_ratio: the compression ratio ``target`` asks for; also the ratio
        ``uniform`` scales the teacher to.
      trial: how each trial trains its child (default: 10 epochs of Adam 1e-3 at a
        constant rate, the per-child `fit` of the corpus benchmark). For Hyperband,
        ``trial.train.epochs`` is ``max_epochs`` and a continued trial restarts the
        learning-rate schedule on its new epochs (use "constant").
      width_grid: the width multipliers offered (default: the sampler's grid).
      per_unit_widths: one multiplier per scalable unit instead of per width group.
      tune_kernels: offer smaller kernels.
      hyperband_factor: Hyperband's reduction factor.
      bayesian_initial_points: random trials before the Gaussian process (None:
        Keras Tuner's 3 x the number of hyperparameters).
      max_consecutive_failures: the search stops (an error) after this many failed
        trials in a row (invalid configurations cost nothing but count here).
    """

    objective: str = LOG_TRADEOFF
    tradeoff: float = 0.01
    target_ratio: float = 10.0
    trial: finalists.FinalistConfig = dataclasses.field(default_factory=_default_trial)
    width_grid: Tuple[float, ...] = dataclasses.field(default_factory=_default_grid)
    per_unit_widths: bool = False
    tune_kernels: bool = True
    hyperband_factor: int = 3
    bayesian_initial_points: Optional[int] = None
    max_consecutive_failures: int = 50

    def __post_init__(self):
        object.__setattr__(self, "width_grid", sampler.SamplerConfig(width_grid=tuple(self.width_grid)).width_grid)
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.tradeoff < 0:
            raise ValueError(f"tradeoff must be >= 0, got {self.tradeoff}")
        if not self.target_ratio >= 1:
            raise ValueError(f"target_ratio must be >= 1, got {self.target_ratio}")
        if self.hyperband_factor < 2:
            raise ValueError(f"hyperband_factor must be >= 2, got {self.hyperband_factor}")
        if self.bayesian_initial_points is not None and self.bayesian_initial_points < 1:
            raise ValueError(f"bayesian_initial_points must be >= 1, got {self.bayesian_initial_points}")
        if self.max_consecutive_failures < 1:
            raise ValueError(f"max_consecutive_failures must be >= 1, got {self.max_consecutive_failures}")

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["width_grid"] = list(self.width_grid)
        return out


DEFAULT_NUM_FINALISTS = 5
DEFAULT_MAX_ACCURACY_DROP = 0.01


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
    """One baseline run end to end: search (or uniform scaling), finalists, choice.

    Attributes:
      method: one of `METHODS`.
      tuner: the search (for ``uniform``, only ``tuner.target_ratio`` is used).
      budget: the search's budget (ignored by ``uniform``).
      finalist: how finalists are trained (the teacher's budget).
      num_finalists: distinct networks retrained after the search.
      max_accuracy_drop: `finalists.choose`'s tolerance (0.01 = one point).
      pruning: the sensitivity analysis of ``l1_prune`` (`acompress.pruning`).
    """

    method: str = RANDOM
    tuner: TunerConfig = dataclasses.field(default_factory=TunerConfig)
    budget: Budget = dataclasses.field(default_factory=Budget)
    finalist: finalists.FinalistConfig = dataclasses.field(default_factory=finalists.inherited)
    num_finalists: int = DEFAULT_NUM_FINALISTS
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP
    pruning: pruning_lib.PruningConfig = dataclasses.field(default_factory=pruning_lib.PruningConfig)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.num_finalists < 1:
            raise ValueError(f"num_finalists must be >= 1, got {self.num_finalists}")
        if not 0 <= self.max_accuracy_drop <= 1:
            raise ValueError(f"max_accuracy_drop must be in [0, 1], got {self.max_accuracy_drop}")
        if self.method in TUNER_METHODS and not self.budget.limited:
            raise ValueError(f"a {self.method} search needs a budget: a wall-time, child-epoch or trial limit")

    def to_dict(self) -> dict:
        return {"method": self.method, "tuner": self.tuner.to_dict(), "budget": self.budget.to_dict(),
                "finalist": self.finalist.to_dict(), "num_finalists": self.num_finalists,
                "max_accuracy_drop": self.max_accuracy_drop,
                # Only l1_prune reads it (and run directories of the other methods resume as before).
                **({"pruning": self.pruning.to_dict()} if self.method == L1_PRUNE else {})}


# -- oracles with a budget ------------------------------------------------------------------------
def _metric(trial, name: str) -> Optional[float]:
    return trial.metrics.get_last_value(name) if trial.metrics.exists(name) else None


def _planned_epochs(trial, default_epochs: int) -> int:
    values = trial.hyperparameters.values
    return int(values.get("tuner/epochs", default_epochs)) - int(values.get("tuner/initial_epoch", 0))


class _Budgeted:
    """Mixin for a Keras Tuner oracle: no new trial once the `Budget` is spent.

    It runs where the oracle runs (the chief, in a distributed search), so one
    budget covers every worker. `clock` can be replaced (tests).
    """

    clock: Callable[[], float] = staticmethod(time.monotonic)

    def set_budget(self, budget: Budget, default_epochs: int) -> None:
        self.budget = budget
        self.default_epochs = int(default_epochs)
        self.max_trials = budget.max_trials
        self._elapsed_before = getattr(self, "_elapsed_before", 0.0)
        self._search_seconds = getattr(self, "_search_seconds", 0.0)
        self._session_start = None

    def elapsed_seconds(self) -> float:
        """Wall time of the search so far, over every session."""
        if self._session_start is None:
            return self._elapsed_before
        return self._elapsed_before + (self.clock() - self._session_start)

    def search_seconds(self) -> float:
        """Wall time from the first trial's start to the last trial's end, over every session
        (what the search took; a distributed chief's idle wait for its workers to leave is not in it)."""
        return self._search_seconds

    def child_epochs_run(self) -> int:
        """Epochs reported by trials so far (finished, diverged or still reporting)."""
        return int(sum(_metric(trial, "child_epochs") or 0 for trial in self.trials.values()))

    def _committed_epochs(self) -> int:
        return sum(_planned_epochs(trial, self.default_epochs) for trial in self.ongoing_trials.values()
                   if _metric(trial, "child_epochs") is None)

    def spent(self) -> Optional[str]:
        """Why no new trial may start, or None while the budget lasts."""
        budget = self.budget
        if budget.wall_seconds is not None and self.elapsed_seconds() >= budget.wall_seconds:
            return f"wall-time budget spent ({self.elapsed_seconds():.1f} of {budget.wall_seconds:g} s)"
        if budget.child_epochs is not None:
            used = self.child_epochs_run() + self._committed_epochs()
            if used >= budget.child_epochs:
                return f"child-epoch budget spent ({used} of {budget.child_epochs})"
        return None

    @keras_tuner.synchronized
    def create_trial(self, tuner_id):
        if self._session_start is None:
            self._session_start = self.clock()
        if tuner_id not in self.ongoing_trials:
            reason = self.spent()
            if reason is not None:
                logging.info("%s: no new trial for %s", reason, tuner_id)
                self.tuner_ids.discard(tuner_id)
                return trial_lib.Trial(self.get_space(), status=trial_lib.TrialStatus.STOPPED)
        return super().create_trial(tuner_id)

    @keras_tuner.synchronized
    def end_trial(self, trial):
        self._search_seconds = self.elapsed_seconds()
        super().end_trial(trial)
        budget = self.budget
        logging.info("trial %s %s; search: %d trials, %d%s child-epochs, %s%s elapsed", trial.trial_id,
                     self.trials[trial.trial_id].status, len(self.trials), self.child_epochs_run(),
                     f"/{budget.child_epochs}" if budget.child_epochs else "",
                     progress.format_seconds(self.elapsed_seconds()),
                     f"/{progress.format_seconds(budget.wall_seconds)}" if budget.wall_seconds else "")

    def get_state(self):
        state = super().get_state()
        state["budget"] = {"elapsed_seconds": self.elapsed_seconds(), "search_seconds": self._search_seconds}
        return state

    def set_state(self, state):
        super().set_state(state)
        self._elapsed_before = float(state.get("budget", {}).get("elapsed_seconds", 0.0))
        self._search_seconds = float(state.get("budget", {}).get("search_seconds", 0.0))
        self._session_start = None


class _RandomSearchOracle(_Budgeted, keras_tuner.oracles.RandomSearchOracle):
    pass


class _HyperbandOracle(_Budgeted, keras_tuner.oracles.HyperbandOracle):
    pass


class _BayesianOracle(_Budgeted, keras_tuner.oracles.BayesianOptimizationOracle):
    pass


def _make_oracle(method: str, config: TunerConfig, budget: Budget, tuner_seed: int):
    common = {"objective": keras_tuner.Objective(SCORE, direction="max"), "seed": tuner_seed,
              "max_consecutive_failed_trials": config.max_consecutive_failures}
    if method == RANDOM:
        oracle = _RandomSearchOracle(max_trials=budget.max_trials, **common)
    elif method == BAYESIAN:
        oracle = _BayesianOracle(max_trials=budget.max_trials, num_initial_points=config.bayesian_initial_points,
                                 **common)
    elif method == HYPERBAND:
        oracle = _HyperbandOracle(max_epochs=config.trial.train.epochs, factor=config.hyperband_factor,
                                  hyperband_iterations=None, **common)
    else:
        raise ValueError(f"method must be one of {', '.join(TUNER_METHODS)}, got {method!r}")
    oracle.set_budget(budget, config.trial.train.epochs)
    return oracle


# -- trials ---------------------------------------------------------------------------------------
class _TrialRunner:
    """Trains one trial's child on the search splits and reports its metrics."""

    def __init__(self, hypermodel: ChildHyperModel, search: data.SearchSplits, data_config: data.DataConfig,
                 config: TunerConfig, *, seed: int, teacher_model: Optional[keras.Model],
                 teacher_accuracy: Optional[float], save_weights: bool, strategy=None):
        self.hypermodel = hypermodel
        self.strategy = strategy
        self.search = search
        self.data_config = data_config
        self.config = config
        self.seed = seed
        self.teacher_model = teacher_model
        self.teacher_accuracy = teacher_accuracy
        self.save_weights = save_weights

    def run(self, tuner: keras_tuner.Tuner, trial) -> Dict[str, float]:
        start = time.perf_counter()
        values = trial.hyperparameters.values
        spec = self.hypermodel.spec_from_values(values)  # InvalidChildError: a failed trial, no cost
        recipe = self.config.trial
        initial_epoch = int(values.get("tuner/initial_epoch", 0))
        total_epochs = int(values.get("tuner/epochs", recipe.train.epochs))
        weights = None
        if values.get("tuner/trial_id") is not None and initial_epoch > 0:
            path = os.path.join(tuner.get_trial_dir(values["tuner/trial_id"]), WEIGHTS_FILE)
            if tf.io.gfile.exists(path):
                weights = path
            else:
                logging.warning("trial %s: no weights of trial %s to continue from; training %d epochs from "
                                "scratch", trial.trial_id, values["tuner/trial_id"], total_epochs)
                initial_epoch = 0
        recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train,
                                                                       epochs=total_epochs - initial_epoch))
        seed = child_training.child_seed(self.seed, int(trial.trial_id))
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        train, validation = data.search_datasets(self.search, self.data_config)
        model, summary = finalists.train_spec(spec, train, validation, self.search.info, recipe, seed=seed,
                                              teacher_model=self.teacher_model, initial_weights=weights,
                                              name=f"trial_{trial.trial_id}", strategy=self.strategy, log_epochs=False)
        params = spec.count_params(self.hypermodel.input_shape, self.hypermodel.num_classes)
        metrics = {"child_epochs": float(summary["epochs"]), "params": float(params),
                   "flops": float(spec.count_flops(self.hypermodel.input_shape, self.hypermodel.num_classes)),
                   "initial_epoch": float(initial_epoch)}
        if summary["diverged"]:
            metrics.update({SCORE: float("nan"), "val_accuracy": float("nan"),
                            "train_seconds": time.perf_counter() - start})
            tuner.oracle.update_trial(trial.trial_id, metrics)  # its epochs count against the budget
            raise keras_tuner.errors.FailedTrialError(f"diverged in epoch {summary.get('diverged_epoch')}")
        if self.save_weights:
            model.save_weights(os.path.join(tuner.get_trial_dir(trial.trial_id), WEIGHTS_FILE))
        accuracy = summary["val_accuracy"]
        metrics[SCORE] = objective_value(self.config.objective, val_accuracy=accuracy, params=params,
                                         teacher_params=self.hypermodel.teacher_params,
                                         teacher_accuracy=self.teacher_accuracy, tradeoff=self.config.tradeoff,
                                         target_ratio=self.config.target_ratio)
        metrics["val_accuracy"] = accuracy
        metrics["train_seconds"] = time.perf_counter() - start
        logging.info("trial %s: %s, %d params (%.1fx), %d epochs, val accuracy %.4f, %s %.4f, %.1f s",
                     trial.trial_id, spec.hash, params, self.hypermodel.teacher_params / params, summary["epochs"],
                     accuracy, self.config.objective, metrics[SCORE], metrics["train_seconds"])
        return metrics


class _ChildTuner(keras_tuner.Tuner):
    """A Keras Tuner tuner whose trials are `_TrialRunner` runs (no Keras Tuner checkpoints)."""

    def __init__(self, oracle, hypermodel: ChildHyperModel, runner: _TrialRunner, **kwargs):
        super().__init__(oracle=oracle, hypermodel=hypermodel, **kwargs)
        self.runner = runner

    def run_trial(self, trial, *args, **kwargs):
        return self.runner.run(self, trial)


def tuner_role() -> str:
    """"single", or "chief" / "worker" of a distributed search (Keras Tuner's environment variables)."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    for name in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"):
        if not os.environ.get(name):
            raise ValueError(f"KERASTUNER_ORACLE_IP is set but {name} is not: a distributed search needs "
                             "KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT and KERASTUNER_TUNER_ID")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


@dataclasses.dataclass(frozen=True)
class TunerOutcome:
    """What a search produced.

    Attributes:
      method, objective, tuner_seed: as run.
      role: "single", "chief" or "worker" (`tuner_role`); a worker sees no trials.
      trials: trial records (module docstring, "trials"), by trial id.
      wall_seconds: the search's wall time, first trial start to last trial end, over all
        sessions (0 for a worker).
      child_epochs: epochs trained, summed over trials.
      trial_seconds: the trials' own wall times, summed.
      budget: the limits the search ran under.
    """

    method: str
    objective: str
    tuner_seed: int
    role: str
    trials: Tuple[dict, ...]
    wall_seconds: float
    child_epochs: int
    trial_seconds: float
    budget: Budget

    def budget_dict(self) -> dict:
        return {"wall_seconds": self.wall_seconds, "child_epochs": self.child_epochs, "trials": len(self.trials),
                "trial_seconds": self.trial_seconds, "wall_limit": self.budget.wall_seconds,
                "epoch_limit": self.budget.child_epochs, "trial_limit": self.budget.max_trials}


def run_tuner(method: str, teacher_spec: archspec.ArchSpec, search: data.SearchSplits,
              data_config: data.DataConfig, config: TunerConfig, *, seed: int, budget: Budget, directory: str,
              teacher_model: Optional[keras.Model] = None, teacher_accuracy: Optional[float] = None,
              overwrite: bool = False, strategy: Optional[tf.distribute.Strategy] = None) -> TunerOutcome:
    """Runs (or resumes) a Keras Tuner search over the teacher's child space.

    Args:
      method: ``random``, ``hyperband`` or ``bayesian``.
      teacher_spec: the teacher's architecture.
      search: train / validation splits (`data.Splits.for_search()`; no test split).
      data_config: batch size and augmentation of the trials' pipelines.
      config: the search (objective, trial budget, space options).
      seed: the run seed; Keras Tuner gets ``seed + 1`` (it treats 0 as "no seed"),
        trial ``i`` initialises with ``child_training.child_seed(seed, i)``.
      budget: when to stop starting trials (at least one limit).
      directory: Keras Tuner's working directory (the project is ``<directory>/<method>``).
      teacher_model: the trained teacher, required when ``config.trial.distill``.
      teacher_accuracy: the teacher's validation accuracy (A_teacher of ``n2n``).
      overwrite: start over instead of resuming.
      strategy: a single-process `tf.distribute.Strategy` (e.g. mirrored) each trial trains under.
        Across machines, use Keras Tuner's own distributed mode (different trials per worker).

    Returns:
      The trials and the budget spent (a worker of a distributed search gets no trials).
    """
    if method not in TUNER_METHODS:
        raise ValueError(f"method must be one of {', '.join(TUNER_METHODS)}, got {method!r}")
    if not isinstance(search, data.SearchSplits):
        raise TypeError(f"run_tuner takes data.SearchSplits (Splits.for_search()), got {type(search).__name__}")
    if not budget.limited:
        raise ValueError("a search needs a budget: a wall-time, child-epoch or trial limit")
    if config.trial.distill and teacher_model is None:
        raise ValueError("distilled trials need the trained teacher (teacher_model)")
    info = search.info
    role = tuner_role()
    hypermodel = ChildHyperModel(teacher_spec, info.input_shape, info.num_classes, width_grid=config.width_grid,
                                 per_unit_widths=config.per_unit_widths, tune_kernels=config.tune_kernels,
                                 bn_momentum=config.trial.bn_momentum)
    tuner_seed = seed + 1
    oracle = _make_oracle(method, config, budget, tuner_seed)
    runner = _TrialRunner(hypermodel, search, data_config, config, seed=seed, teacher_model=teacher_model,
                          teacher_accuracy=teacher_accuracy, save_weights=method == HYPERBAND, strategy=strategy)
    logging.info("%s search (%s, tuner seed %d) over %d hyperparameters; budget %s", method, role, tuner_seed,
                 len(hypermodel.width_names) + len(hypermodel.removable) + len(hypermodel.kernel_options),
                 budget.to_dict())
    # Keras Tuner prints ("Reloading Tuner from ...", retry notices): keep stdout for results.
    with contextlib.redirect_stdout(sys.stderr), _without_trial_tracebacks():
        tuner = _ChildTuner(oracle, hypermodel, runner, directory=directory, project_name=method,
                            overwrite=overwrite)
        tuner.search(verbose=0)
    if role == "worker":
        return TunerOutcome(method, config.objective, tuner_seed, role, (), 0.0, 0, 0.0, budget)
    trials = tuple(_trial_record(trial, hypermodel)
                   for trial in sorted(oracle.trials.values(), key=lambda t: int(t.trial_id)))
    return TunerOutcome(method, config.objective, tuner_seed, role, trials, oracle.search_seconds(),
                        sum(record["child_epochs"] for record in trials),
                        sum(record["train_seconds"] or 0.0 for record in trials), budget)


@contextlib.contextmanager
def _without_trial_tracebacks():
    """Keras Tuner prints the traceback of every failed trial (its DEBUG switch, on by default); an
    invalid configuration is an expected, cheap failure, and the record keeps the message."""
    from keras_tuner.src import config as keras_tuner_config  # pylint: disable=import-outside-toplevel
    previous = getattr(keras_tuner_config, "DEBUG", None)
    keras_tuner_config.DEBUG = False
    try:
        yield
    finally:
        keras_tuner_config.DEBUG = previous


def _finite(value: Optional[float]) -> Optional[float]:
    return float(value) if value is not None and math.isfinite(value) else None


def _trial_record(trial, hypermodel: ChildHyperModel) -> dict:
    values = dict(trial.hyperparameters.values)
    try:
        spec = hypermodel.spec_from_values(values)
    except InvalidChildError:
        spec = None
    child_epochs = int(_metric(trial, "child_epochs") or 0)
    initial_epoch = int(_metric(trial, "initial_epoch") or 0)
    message = (trial.message or "").strip().splitlines()
    record = {"trial_id": trial.trial_id, "status": trial.status, "score": _finite(_metric(trial, SCORE)),
              "val_accuracy": _finite(_metric(trial, "val_accuracy")), "child_epochs": child_epochs,
              "initial_epoch": initial_epoch, "epochs": initial_epoch + child_epochs,
              "train_seconds": _finite(_metric(trial, "train_seconds")), "hyperparameters": values,
              "spec": None, "spec_hash": None, "params": None, "flops": None, "ratio": None,
              "message": message[-1] if message else ""}
    if spec is not None:
        params = spec.count_params(hypermodel.input_shape, hypermodel.num_classes)
        record.update(spec=spec.to_dict(), spec_hash=spec.hash, params=params,
                      flops=spec.count_flops(hypermodel.input_shape, hypermodel.num_classes),
                      ratio=hypermodel.teacher_params / params)
    return record


def top_distinct(trials: Sequence[Mapping], k: int) -> List[archspec.ArchSpec]:
    """The `k` best distinct networks of a search, by objective (ties: earlier trial).

    Completed trials only; two trials with the same spec hash (a dead width
    hyperparameter, or a Hyperband trial continued) count once, at their best.
    """
    completed = [record for record in trials
                 if record["status"] == trial_lib.TrialStatus.COMPLETED and record["score"] is not None
                 and record["spec"] is not None]
    completed.sort(key=lambda record: (-record["score"], int(record["trial_id"])))
    specs = finalists.distinct(archspec.ArchSpec.from_dict(record["spec"]) for record in completed)
    return specs[:k]


# -- uniform width scaling ------------------------------------------------------------------------
MIN_ALPHA = 2.0 ** -12


@dataclasses.dataclass(frozen=True)
class UniformScaling:
    """The teacher with every width times `alpha`.

    Attributes:
      alpha: the multiplier (`sampler.apply_choices` with one number for every unit).
      spec: the scaled network.
      params: its exact parameter count.
      ratio: teacher params / params.
      target_ratio: the ratio asked for.
      reached: whether ``ratio >= target_ratio`` (False: even the narrowest widths
        of the search space do not get there; `spec` is then the narrowest).
    """

    alpha: float
    spec: archspec.ArchSpec
    params: int
    ratio: float
    target_ratio: float
    reached: bool


def uniform_width_scaling(teacher: archspec.ArchSpec, input_shape: Sequence[int], num_classes: int, *,
                          target_ratio: float, space: Optional[search_space.SearchSpace] = None,
                          steps: int = 40) -> UniformScaling:
    """The largest alpha whose uniformly scaled teacher is at least `target_ratio` times smaller.

    Widths are ``space.snap_width(width * alpha)``, never above the teacher's (the
    sampler's width mapping, identity blocks following their input), so the
    parameter count is a non-increasing step function of alpha; bisection on
    log2(alpha) over [2^-12, 1] finds the step.
    """
    if not target_ratio >= 1:
        raise ValueError(f"target_ratio must be >= 1, got {target_ratio}")
    teacher_params = teacher.count_params(input_shape, num_classes)
    target = teacher_params / target_ratio

    def scaled(alpha):
        spec = sampler.apply_choices(teacher, width_multipliers=alpha, space=space, input_shape=input_shape)
        return spec, spec.count_params(input_shape, num_classes)

    def result(alpha, spec, params):
        ratio = teacher_params / params
        return UniformScaling(alpha, spec, params, ratio, target_ratio, ratio >= target_ratio * (1 - 1e-12))

    spec, params = scaled(1.0)
    if params <= target:
        return result(1.0, spec, params)
    low_spec, low_params = scaled(MIN_ALPHA)
    if low_params > target:
        return result(MIN_ALPHA, low_spec, low_params)
    low, high = math.log2(MIN_ALPHA), 0.0  # params(2^low) <= target < params(2^high)
    for _ in range(steps):
        middle = 0.5 * (low + high)
        middle_spec, middle_params = scaled(2.0 ** middle)
        if middle_params <= target:
            low, low_spec, low_params = middle, middle_spec, middle_params
        else:
            high = middle
    return result(2.0 ** low, low_spec, low_params)


# -- a baseline end to end --------------------------------------------------------------------------
FINALISTS_DIR = "finalists"
TUNER_DIR = "tuner"


def run_baseline(config: BaselineConfig, teacher_spec: archspec.ArchSpec, splits: data.Splits,
                 data_config: data.DataConfig, *, seed: int, teacher_metrics: Mapping[str, Any], directory: str,
                 teacher_model: Optional[keras.Model] = None, search: Optional[data.SearchSplits] = None,
                 search_data_config: Optional[data.DataConfig] = None,
                 overwrite: bool = False, strategy: Optional[tf.distribute.Strategy] = None) -> Optional[dict]:
    """Search (or scale), train the finalists, choose; returns the result (module docstring schema).

    Resumable: the search resumes from ``<directory>/tuner``, and each finished
    finalist is stored in ``<directory>/finalists/<spec hash>.json`` and not
    trained again.

    Args:
      config: the baseline.
      teacher_spec: the teacher's architecture.
      splits: all three splits (finalists train on train, are chosen on validation,
        reported on test).
      data_config: the finalists' pipelines.
      seed: the run seed.
      teacher_metrics: the teacher stage's metrics (`teacher.train_or_load`):
        ``params``, ``flops``, ``val_accuracy``, ``test_accuracy``.
      directory: where the tuner's project and the finalists are kept.
      teacher_model: the trained teacher (needed when trials or finalists distil, or finalists inherit its weights).
      search, search_data_config: the trials' data (default: ``splits.for_search()``
        and `data_config`), e.g. a proxy subset of the training split.
      overwrite: start the search over.
      strategy: the `tf.distribute.Strategy` trials and finalists train under (see `run_tuner`).

    Returns:
      The result dict, or None for a worker of a distributed search.

    Raises:
      ValueError: no trial completed (the budget is too small), or no finalist trained.
    """
    info = splits.info
    finalists.check_teacher(config.finalist, teacher_model, strategy)  # before the search, not after it
    teacher_accuracy = float(teacher_metrics["val_accuracy"])
    outcome = None
    scaling = None
    pruned = None
    if config.method == L1_PRUNE:
        if teacher_model is None:
            raise ValueError("l1_prune prunes the trained teacher: it needs teacher_model")
        if config.finalist.init != "inherit":
            logging.warning("l1_prune with finalist init %r trains the pruned structure from scratch, not the "
                            "pruned teacher (Li et al. fine-tune it: --finalist_init=inherit)", config.finalist.init)
        pruned = pruning_lib.prune(teacher_model, search or splits.for_search(), search_data_config or data_config,
                               target_ratio=config.tuner.target_ratio, config=config.pruning,
                               bn_momentum=config.finalist.bn_momentum)
        candidates = [pruned.spec]
    elif config.method == UNIFORM:
        scaling = uniform_width_scaling(teacher_spec, info.input_shape, info.num_classes,
                                        target_ratio=config.tuner.target_ratio)
        logging.info("uniform width scaling: alpha %.4f, %d params (%.1fx)%s", scaling.alpha, scaling.params,
                     scaling.ratio, "" if scaling.reached else " (target not reached)")
        candidates = [scaling.spec]
    else:
        outcome = run_tuner(config.method, teacher_spec, search or splits.for_search(),
                            search_data_config or data_config, config.tuner, seed=seed, budget=config.budget,
                            directory=os.path.join(directory, TUNER_DIR), teacher_model=teacher_model,
                            teacher_accuracy=teacher_accuracy, overwrite=overwrite, strategy=strategy)
        if outcome.role == "worker":
            return None
        candidates = top_distinct(outcome.trials, config.num_finalists)
        if not candidates:
            raise ValueError(f"no trial of the {config.method} search completed ({len(outcome.trials)} trials); "
                             "raise the budget")
    results = _train_finalists_resumable(candidates, splits, data_config, config.finalist, seed=seed,
                                         teacher_model=teacher_model,
                                         directory=os.path.join(directory, FINALISTS_DIR), strategy=strategy)
    chosen = finalists.choose(results, teacher_accuracy=teacher_accuracy,
                              max_accuracy_drop=config.max_accuracy_drop)
    return _result(config, seed, teacher_spec, info, teacher_metrics, outcome, scaling, results, chosen, pruned)


def _train_finalists_resumable(specs, splits, data_config, config, *, seed, teacher_model, directory,
                               strategy=None):
    stored = {}
    for spec in specs:
        path = os.path.join(directory, f"{spec.hash}.json")
        if tf.io.gfile.exists(path):
            result = finalists.FinalistResult.from_dict(rundir.read_json(path))
            if result.status != finalists.FAILED:  # a failure (e.g. a missing teacher) is tried again
                stored[spec.hash] = result
    todo = [spec for spec in specs if spec.hash not in stored]
    if stored:
        logging.info("finalists: %d of %d already trained", len(stored), len(specs))
    tf.io.gfile.makedirs(directory)

    def save(result):
        rundir.write_json(os.path.join(directory, f"{result.spec.hash}.json"), result.to_dict())

    trained = finalists.train_finalists(todo, splits, data_config, config, seed=seed, teacher_model=teacher_model,
                                        on_result=save, strategy=strategy)
    by_hash = {**stored, **{result.spec.hash: result for result in trained}}
    return [by_hash[spec.hash] for spec in specs]


def _finalist_record(result: finalists.FinalistResult, teacher_params: int) -> dict:
    record = result.to_dict()
    record["ratio"] = teacher_params / result.params
    return record


def _result(config: BaselineConfig, seed, teacher_spec, info, teacher_metrics, outcome: Optional[TunerOutcome],
            scaling: Optional[UniformScaling], results, chosen, pruned: Optional[pruning_lib.Pruning] = None) -> dict:
    teacher_params = teacher_spec.count_params(info.input_shape, info.num_classes)
    teacher_accuracy = float(teacher_metrics["val_accuracy"])
    chosen_record = _finalist_record(chosen, teacher_params)
    chosen_record["within_drop"] = finalists.within_drop(chosen, teacher_accuracy=teacher_accuracy,
                                                         max_accuracy_drop=config.max_accuracy_drop)
    if outcome is not None:
        budget = outcome.budget_dict()
    else:
        budget = {"wall_seconds": 0.0, "child_epochs": 0, "trials": 0, "trial_seconds": 0.0, "wall_limit": None,
                  "epoch_limit": None, "trial_limit": None}
    if pruned is not None:
        budget["wall_seconds"] = pruned.seconds
        budget["evaluations"] = pruned.evaluations
    budget["finalist_epochs"] = sum(result.epochs for result in results)
    budget["finalist_seconds"] = sum(result.train_seconds for result in results)
    out = {
        "schema_version": SCHEMA_VERSION,
        "method": config.method,
        "seed": seed,
        "tuner_seed": outcome.tuner_seed if outcome is not None else None,
        "objective": outcome.objective if outcome is not None else None,
        "objective_config": None if outcome is None else {
            "tradeoff": config.tuner.tradeoff, "target_ratio": config.tuner.target_ratio,
            "teacher_accuracy": teacher_accuracy},
        "teacher": {"spec_hash": teacher_spec.hash, "params": teacher_params,
                    "flops": teacher_spec.count_flops(info.input_shape, info.num_classes),
                    "val_accuracy": teacher_accuracy, "test_accuracy": float(teacher_metrics["test_accuracy"])},
        "chosen": chosen_record,
        "selection": {"rule": SELECTION_RULE, "split": "validation", "max_accuracy_drop": config.max_accuracy_drop,
                      "teacher_val_accuracy": teacher_accuracy},
        "finalists": [_finalist_record(result, teacher_params) for result in results],
        "trials": list(outcome.trials) if outcome is not None else [],
        "budget": budget,
    }
    if scaling is not None:
        out["uniform"] = {"alpha": scaling.alpha, "target_ratio": scaling.target_ratio, "reached": scaling.reached}
    if pruned is not None:
        out["pruning"] = pruned.to_dict()
    return out
