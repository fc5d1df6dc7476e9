"""Baselines end to end: a Keras Tuner search, uniform width scaling or L1-norm filter pruning,
then finalists and the choice.

The latent search is judged against these methods (``BaselineConfig.method``):

* ``random``, ``hyperband``, ``bayesian``: a budgeted Keras Tuner search over the
  corpus sampler's child space (`acompress.tuner`: the child space, the
  objectives, the budget, resuming and distribution). The top `num_finalists`
  *distinct* networks by objective (`tuner.top_distinct`) are then retrained for
  the full budget (`finalists.train_finalists`) and one is chosen
  (`finalists.choose`: fewest parameters within `max_accuracy_drop` of the
  teacher, on validation accuracy).
* ``uniform``: every width of the teacher times one ``alpha``, the largest alpha
  whose network is at least `target_ratio` times smaller
  (`uniform.uniform_width_scaling`), trained as the single finalist. No search, no budget.
* ``l1_prune``: L1-norm filter pruning of the trained teacher (Li et al., 2017) to
  `target_ratio`, per-layer rates from a sensitivity analysis on the validation split
  (`acompress.pruning`), fine-tuned as the single finalist. Its budget is the
  sensitivity analysis: ``budget.evaluations`` pruned networks scored without training.

`run_baseline` runs any of them, resumably, and returns the result below.

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

import dataclasses
import os
from typing import Any, Mapping, Optional, Sequence, Tuple

from absl import logging
import keras
import tensorflow as tf

from acompress import archspec
from acompress import data
from acompress import finalists
from acompress import pruning as pruning_lib
from acompress import rundir
from acompress import tuner as tuner_lib
from acompress import uniform

SCHEMA_VERSION = 1
UNIFORM, L1_PRUNE = "uniform", "l1_prune"
METHODS = tuner_lib.TUNER_METHODS + (UNIFORM, L1_PRUNE)
SELECTION_RULE = ("fewest parameters among finalists with val_accuracy >= teacher val_accuracy - "
                  "max_accuracy_drop; if none, the most accurate finalist")
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

    method: str = tuner_lib.RANDOM
    tuner: tuner_lib.TunerConfig = dataclasses.field(default_factory=tuner_lib.TunerConfig)
    budget: tuner_lib.Budget = dataclasses.field(default_factory=tuner_lib.Budget)
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
        if self.method in tuner_lib.TUNER_METHODS and not self.budget.limited:
            raise ValueError(f"a {self.method} search needs a budget: a wall-time, child-epoch or trial limit")

    def to_dict(self) -> dict:
        return {"method": self.method, "tuner": self.tuner.to_dict(), "budget": self.budget.to_dict(),
                "finalist": self.finalist.to_dict(), "num_finalists": self.num_finalists,
                "max_accuracy_drop": self.max_accuracy_drop,
                # Only l1_prune reads it (and run directories of the other methods resume as before).
                **({"pruning": self.pruning.to_dict()} if self.method == L1_PRUNE else {})}


# -- a baseline end to end --------------------------------------------------------------------------
FINALISTS_DIR = "finalists"
TUNER_DIR = "tuner"


@dataclasses.dataclass(frozen=True)
class _Proposal:
    """What a method proposes for finalist training, and how it found it (one of the last three is set,
    or none of them)."""

    candidates: Tuple[archspec.ArchSpec, ...]
    outcome: Optional[tuner_lib.TunerOutcome] = None  # a search
    scaling: Optional[uniform.UniformScaling] = None  # uniform width scaling
    pruned: Optional[pruning_lib.Pruning] = None  # L1 filter pruning


def run_baseline(config: BaselineConfig, teacher_spec: archspec.ArchSpec, splits: data.Splits,
                 data_config: data.DataConfig, *, seed: int, teacher_metrics: Mapping[str, Any], directory: str,
                 teacher_model: Optional[keras.Model] = None, search: Optional[data.SearchSplits] = None,
                 search_data_config: Optional[data.DataConfig] = None,
                 overwrite: bool = False, strategy: Optional[tf.distribute.Strategy] = None) -> Optional[dict]:
    """Search (or scale, or prune), train the finalists, choose; returns the result (module docstring schema).

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
      strategy: the `tf.distribute.Strategy` trials and finalists train under (see `tuner.run_tuner`).

    Returns:
      The result dict, or None for a worker of a distributed search.

    Raises:
      ValueError: no trial completed (the budget is too small), or no finalist trained.
    """
    finalists.check_teacher(config.finalist, teacher_model, strategy)  # before the search, not after it
    teacher_accuracy = float(teacher_metrics["val_accuracy"])
    if config.method == L1_PRUNE:
        proposal = _prune(config, teacher_model, search or splits.for_search(), search_data_config or data_config)
    elif config.method == UNIFORM:
        proposal = _scale(config, teacher_spec, splits.info)
    else:
        proposal = _tune(config, teacher_spec, search or splits.for_search(), search_data_config or data_config,
                         seed=seed, directory=os.path.join(directory, TUNER_DIR), teacher_model=teacher_model,
                         teacher_accuracy=teacher_accuracy, overwrite=overwrite, strategy=strategy)
        if proposal is None:
            return None
    results = _train_finalists_resumable(list(proposal.candidates), splits, data_config, config.finalist, seed=seed,
                                         teacher_model=teacher_model,
                                         directory=os.path.join(directory, FINALISTS_DIR), strategy=strategy)
    chosen = finalists.choose(results, teacher_accuracy=teacher_accuracy,
                              max_accuracy_drop=config.max_accuracy_drop)
    return _result(config, seed, teacher_spec, splits.info, teacher_metrics, proposal, results, chosen)


def _prune(config: BaselineConfig, teacher_model: Optional[keras.Model], search: data.SearchSplits,
           data_config: data.DataConfig) -> _Proposal:
    """``l1_prune``: the trained teacher pruned to the target ratio (`pruning.prune`), the single candidate."""
    if teacher_model is None:
        raise ValueError("l1_prune prunes the trained teacher: it needs teacher_model")
    if config.finalist.init != "inherit":
        logging.warning("l1_prune with finalist init %r trains the pruned structure from scratch, not the "
                        "pruned teacher (Li et al. fine-tune it: --finalist_init=inherit)", config.finalist.init)
    pruned = pruning_lib.prune(teacher_model, search, data_config, target_ratio=config.tuner.target_ratio,
                               config=config.pruning, bn_momentum=config.finalist.bn_momentum)
    return _Proposal((pruned.spec,), pruned=pruned)


def _scale(config: BaselineConfig, teacher_spec: archspec.ArchSpec, info: data.DatasetInfo) -> _Proposal:
    """``uniform``: the teacher scaled to the target ratio (`uniform.uniform_width_scaling`), the single candidate."""
    scaling = uniform.uniform_width_scaling(teacher_spec, info.input_shape, info.num_classes,
                                            target_ratio=config.tuner.target_ratio)
    logging.info("uniform width scaling: alpha %.4f, %d params (%.1fx)%s", scaling.alpha, scaling.params,
                 scaling.ratio, "" if scaling.reached else " (target not reached)")
    return _Proposal((scaling.spec,), scaling=scaling)


def _tune(config: BaselineConfig, teacher_spec: archspec.ArchSpec, search: data.SearchSplits,
          data_config: data.DataConfig, **run_tuner_args) -> Optional[_Proposal]:
    """A Keras Tuner search (`tuner.run_tuner`); its best distinct networks are the candidates.

    None for a worker of a distributed search (the chief proposes). ValueError if no trial completed.
    """
    outcome = tuner_lib.run_tuner(config.method, teacher_spec, search, data_config, config.tuner,
                                  budget=config.budget, **run_tuner_args)
    if outcome.role == "worker":
        return None
    candidates = tuner_lib.top_distinct(outcome.trials, config.num_finalists)
    if not candidates:
        raise ValueError(f"no trial of the {config.method} search completed ({len(outcome.trials)} trials); "
                         "raise the budget")
    return _Proposal(tuple(candidates), outcome=outcome)
def _train_finalists_resumable(specs, splits, data_config, config, *, seed, teacher_model, directory,
                               strategy=None):
    """`finalists.train_finalists` over `specs`, each result stored in ``<directory>/<spec hash>.json``;
    a stored result (other than a failure) is read back instead of trained again. In `specs` order."""
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


def _result(config: BaselineConfig, seed, teacher_spec, info, teacher_metrics, proposal: _Proposal,
            results: Sequence[finalists.FinalistResult], chosen: finalists.FinalistResult) -> dict:
    """The result dict of the module docstring's schema."""
    outcome, scaling, pruned = proposal.outcome, proposal.scaling, proposal.pruned
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
