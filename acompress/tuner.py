"""Keras Tuner searches over the corpus sampler's child space, on a budget.

The latent search is judged against searches that see the **same children** and
spend the **same budget**. `run_tuner` runs one of them: Keras Tuner's
RandomSearch (``random``), Hyperband (``hyperband``) or BayesianOptimization
(``bayesian``) oracle proposes children through `ChildHyperModel`; each trial
trains its child for a short proxy budget on the search splits (train /
validation: `data.Splits.for_search()`, the test split is never touched during a
search) and scores it with a named objective. The search stops starting trials
once a wall-time, child-epoch or trial budget (`Budget`) is spent. `top_distinct`
lists the best *distinct* networks it found; `baselines.run_baseline` retrains
them as finalists and chooses one.

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

Trial records
-------------
`TunerOutcome.trials`, by trial id (the ``trials`` of ``result.json``, see
`baselines`): ``{trial_id, status, score, val_accuracy, params, flops, ratio,
spec, spec_hash, child_epochs, initial_epoch, epochs, train_seconds,
hyperparameters, message}`` (``spec`` null for an invalid configuration;
``epochs`` is the network's cumulative epochs for Hyperband).
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
from acompress import sampler
from acompress import search_space
from acompress import training

RANDOM, HYPERBAND, BAYESIAN = "random", "hyperband", "bayesian"
TUNER_METHODS = (RANDOM, HYPERBAND, BAYESIAN)
LOG_TRADEOFF, TARGET, N2N = "log_tradeoff", "target", "n2n"
OBJECTIVES = (LOG_TRADEOFF, TARGET, N2N)
SCORE = "score"  # the Keras Tuner objective every trial reports (maximised)
WEIGHTS_FILE = "child.weights.h5"  # a Hyperband trial's weights, for the trials that continue it


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
      target_ratio: the compression ratio ``target`` asks for; also the ratio the
        ``uniform`` and ``l1_prune`` baselines compress the teacher to.
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
      trials: trial records (module docstring, "Trial records"), by trial id.
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
