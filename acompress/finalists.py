"""Finalists: a few candidate architectures trained for the full budget, then one chosen.

Every compression method (the latent search, the Keras Tuner baselines, uniform
width scaling) ends the same way, and this module is that ending, so their results
are comparable:

1. `distinct` drops candidates that are the same network (same `spec.hash`).
2. `train_finalists` trains each candidate with the same budget as the teacher
   (`FinalistConfig`, by default 40 epochs of Adam 1e-3 at a constant rate, batch
   norm momentum 0.9), from scratch or from the teacher's weights (``init``;
   `inherited()` is every method's default), optionally distilled from the teacher, scores
   it on the validation split and evaluates it **once** on the test split.
3. `choose` picks the smallest finalist (fewest parameters) whose **validation**
   accuracy is within `max_accuracy_drop` of the teacher's validation accuracy;
   if none is, the most accurate one. Test accuracy is reported, never used to
   choose, so the reported test accuracy of the chosen network is an unbiased
   estimate.

`train_spec` is the one training routine underneath (build from the spec, seed,
optionally distil, fit); the tuner baselines train their trials with it too, on a
shorter budget.

Distillation (``FinalistConfig.distill``): the loss is
``alpha * CE(labels, student) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))``,
the loss the corpus trainer (`child_training`) uses, computed per batch from the
teacher's logits on the same (augmented) batch.
"""

import dataclasses
import math
import time
import traceback
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from acompress import archspec
from acompress import data
from acompress import distillation
from acompress import distribution
from acompress import inheritance
from acompress import keras_builder
from acompress import status as status_lib
from acompress import training

OK, FAILED, DIVERGED = status_lib.OK, status_lib.FAILED, status_lib.DIVERGED


def _default_train() -> training.TrainConfig:
    return training.TrainConfig(epochs=40, learning_rate=1e-3, optimizer="adam", schedule="constant")


def inherited() -> "FinalistConfig":
    """The default finalist procedure of every compression method: the teacher's 40 epochs, starting
    from the teacher's weights. Measured on digits (benchmarks/finalist_benchmark.py, 16 networks at
    10-150x, 2 seeds): +0.52 points of test accuracy over the same 40 epochs from scratch."""
    return FinalistConfig(init="inherit")


@dataclasses.dataclass(frozen=True)
class FinalistConfig:
    """How one finalist (or, with a shorter `train`, one tuner trial) is trained.

    Attributes:
      train: optimizer, schedule and epochs (default: the teacher's 40 epochs, Adam 1e-3, constant).
      distill: train against the teacher's soft targets as well as the labels.
      distill_alpha: weight of the hard-label loss when distilling (1 - alpha on the soft one).
      distill_temperature: softmax temperature of the soft targets.
      bn_momentum: batch norm momentum of the built networks (see keras_builder).
      init: "scratch" (random initialisation) or "inherit": the network starts from the
        teacher's weights (`inheritance`: most important filters by L1 norm, kernel
        centres) with batch-norm statistics recalibrated on `recalibrate_batches`
        training batches, then trains for ``train.epochs`` (a fine-tune).
      recalibrate_batches: see `init`.
    """

    train: training.TrainConfig = dataclasses.field(default_factory=_default_train)
    distill: bool = False
    distill_alpha: float = 0.5
    distill_temperature: float = 4.0
    bn_momentum: float = 0.9
    init: str = "scratch"
    recalibrate_batches: int = 20

    def __post_init__(self):
        if not isinstance(self.train, training.TrainConfig):
            raise TypeError(f"train must be a training.TrainConfig, got {type(self.train).__name__}")
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise ValueError(f"distill_alpha must be in [0, 1], got {self.distill_alpha}")
        if not self.distill_temperature > 0:
            raise ValueError(f"distill_temperature must be > 0, got {self.distill_temperature}")
        if not 0.0 <= self.bn_momentum < 1.0:
            raise ValueError(f"bn_momentum must be in [0, 1), got {self.bn_momentum}")
        if self.init not in ("scratch", "inherit"):
            raise ValueError(f"init must be 'scratch' or 'inherit', got {self.init!r}")
        if self.recalibrate_batches < 0:
            raise ValueError(f"recalibrate_batches must be >= 0, got {self.recalibrate_batches}")
        if self.distill and self.train.label_smoothing:
            raise ValueError("label_smoothing is not supported together with distillation")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping) -> "FinalistConfig":
        values = dict(values)
        values["train"] = training.TrainConfig(**values.get("train", {}))
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class FinalistResult:
    """One trained finalist.

    Attributes:
      spec: its architecture.
      params, flops: exact counts for the data's input shape and classes (head included);
        0 for a spec that does not fit the data (status "failed").
      val_accuracy: accuracy on the validation split (NaN unless status is "ok").
      test_accuracy: accuracy on the test split, evaluated once (NaN unless "ok").
      train_seconds: wall time of building, training and evaluating it.
      epochs: epochs actually trained (fewer than configured if it diverged).
      seed: its initialisation / shuffling seed.
      status: "ok", "diverged" (non-finite loss or weights) or "failed" (an error; see `reason`).
      reason: why it failed or diverged.
      model: the trained Keras model (softmax outputs), kept in memory only; None when
        the result was read back from JSON or training failed.
    """

    spec: archspec.ArchSpec
    params: int
    flops: int
    val_accuracy: float
    test_accuracy: float
    train_seconds: float
    epochs: int
    seed: int
    status: str = OK
    reason: str = ""
    model: Optional[keras.Model] = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == OK and math.isfinite(self.val_accuracy)

    def to_dict(self) -> dict:
        """JSON-ready record (the model is not serialised; NaN accuracies are written as null)."""
        return {"spec": self.spec.to_dict(), "spec_hash": self.spec.hash, "params": int(self.params),
                "flops": int(self.flops), "val_accuracy": _finite_or_none(self.val_accuracy),
                "test_accuracy": _finite_or_none(self.test_accuracy), "train_seconds": float(self.train_seconds),
                "epochs": int(self.epochs), "seed": int(self.seed), "status": self.status, "reason": self.reason}

    @classmethod
    def from_dict(cls, record: Mapping) -> "FinalistResult":
        nan = float("nan")
        return cls(spec=archspec.ArchSpec.from_dict(record["spec"]), params=int(record["params"]),
                   flops=int(record["flops"]),
                   val_accuracy=nan if record["val_accuracy"] is None else float(record["val_accuracy"]),
                   test_accuracy=nan if record["test_accuracy"] is None else float(record["test_accuracy"]),
                   train_seconds=float(record["train_seconds"]), epochs=int(record["epochs"]),
                   seed=int(record["seed"]), status=record["status"], reason=record.get("reason", ""))


def _finite_or_none(value: float) -> Optional[float]:
    return float(value) if value is not None and math.isfinite(value) else None


# -- candidates -----------------------------------------------------------------------
def distinct(specs: Iterable[archspec.ArchSpec]) -> List[archspec.ArchSpec]:
    """`specs` without repeats (same `spec.hash`), first occurrences kept, in order."""
    seen = set()
    out = []
    for spec in specs:
        if spec.hash not in seen:
            seen.add(spec.hash)
            out.append(spec)
    return out


def finalist_seed(seed: int, spec: archspec.ArchSpec) -> int:
    """A finalist's seed: a function of the run seed and its spec only (not of its position)."""
    state = np.random.SeedSequence([int(seed), int(spec.hash, 16)]).generate_state(1)[0]
    return int(state % (2 ** 31 - 1)) + 1


# -- training -------------------------------------------------------------------------
class _Distiller(keras.Model):
    """The student's logits model, trained on the distillation loss (module docstring).

    It outputs logits; the compiled accuracy metric (an argmax) works on them as on
    probabilities. The teacher is held in a closure, not as a tracked layer, so its
    weights are neither trained nor saved with the student.
    """

    def __init__(self, student_logits: keras.Model, teacher_logits: keras.Model, alpha: float,
                 temperature: float, **kwargs):
        super().__init__(name=f"{student_logits.name}_distiller", **kwargs)
        self.student_logits = student_logits
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self._soft_targets = lambda x: distillation.soft_targets(teacher_logits(x, training=False),
                                                                 self.temperature)
        self._hard = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def call(self, x, training=False):
        return self.student_logits(x, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        logits = tf.cast(y_pred, tf.float32)
        hard = self._hard(y, logits)
        if not training:
            return hard
        soft = tf.reduce_mean(distillation.kl_per_example(self._soft_targets(x), logits, self.temperature))
        # Like `hard` (a Keras Loss), this replica's share of the loss: the replicas' gradients are summed.
        soft = soft / tf.cast(tf.distribute.get_strategy().num_replicas_in_sync, soft.dtype)
        return distillation.combine(hard, soft, self.alpha, self.temperature)


def train_spec(spec: archspec.ArchSpec, train: tf.data.Dataset, validation: Optional[tf.data.Dataset],
               info: data.DatasetInfo, config: FinalistConfig, *, seed: int,
               teacher_model: Optional[keras.Model] = None, initial_weights: Optional[str] = None,
               name: Optional[str] = None, strategy: Optional[tf.distribute.Strategy] = None,
               log_epochs: bool = True) -> Tuple[keras.Model, Dict]:
    """Builds `spec`, trains it with `config` and returns (model, summary).

    Args:
      spec: the architecture.
      train: the batched training pipeline.
      validation: the validation pipeline, or None.
      info: the data's info (input shape, classes).
      config: the training recipe; ``config.train.epochs`` epochs are trained.
      seed: initialisation seed (`keras.utils.set_random_seed` is called with it first).
      teacher_model: the trained teacher, required when ``config.distill`` or ``config.init`` is "inherit".
      initial_weights: a ``.weights.h5`` file to start from (e.g. to continue a
        Hyperband trial), or None to start from the seeded initialisation.
      name: the model's name.
      strategy: the `tf.distribute.Strategy` to train under (None: one device).
      log_epochs: log one progress line per epoch (`training.EpochLog`).

    Returns:
      The trained model (softmax outputs) and `training.fit`'s summary: ``epochs``,
      ``train_seconds``, ``history``, ``diverged`` (loss, or any weight, not finite)
      and, with `validation`, ``val_accuracy`` and ``val_loss``.

    Raises:
      ValueError: ``config.distill`` without a teacher.
      archspec.ShapeError: the spec does not fit the data's input shape.
    """
    if (config.distill or config.init == "inherit") and teacher_model is None:
        raise ValueError("distillation and init='inherit' need the trained teacher (teacher_model)")
    distribution.agree(strategy, f"network {spec.hash} seed {seed} {config}")
    keras.utils.set_random_seed(seed)
    with distribution.scope(strategy):
        model = keras_builder.build_model(spec, info.input_shape, info.num_classes, bn_momentum=config.bn_momentum,
                                          name=name)
        if initial_weights is not None:
            model.load_weights(initial_weights)
        elif config.init == "inherit":
            _inherit(model, spec, teacher_model, train, info, config.recalibrate_batches)
        trained = model
        if config.distill:
            trained = _Distiller(keras_builder.logits_model(model), keras_builder.logits_model(teacher_model),
                                 config.distill_alpha, config.distill_temperature)
    summary = training.fit(trained, train, validation, config.train, strategy=strategy,
                           callbacks=[training.EpochLog(model.name)] if log_epochs else ())
    if not summary["diverged"] and not all(np.isfinite(w).all() for w in model.get_weights()):
        summary["diverged"] = True  # e.g. non-finite batch norm statistics
        summary["diverged_epoch"] = summary["epochs"]
    if summary["diverged"]:
        summary.pop("val_accuracy", None)
        summary.pop("val_loss", None)
    return model, summary


def _inherit(model, spec, teacher_model, train: tf.data.Dataset, info: data.DatasetInfo, batches: int) -> None:
    teacher_spec, tensors = inheritance.source(teacher_model, info.input_shape, info.num_classes)
    report = inheritance.inherit(model, spec, teacher_spec, tensors, info.input_shape)
    used = inheritance.recalibrate_batch_norm([model], train, batches)
    logging.info("%s inherits the teacher's weights: %s; batch norm recalibrated on %d batches", model.name,
                 report.to_dict(), used)


def check_teacher(config: FinalistConfig, teacher_model: Optional[keras.Model], strategy=None) -> None:
    """Raises ValueError when `config` needs the trained teacher (distillation, inheritance) and none is
    given, or inherits under a multi-replica strategy (not supported yet)."""
    if (config.distill or config.init == "inherit") and teacher_model is None:
        raise ValueError(f"finalists with distill={config.distill}, init={config.init!r} need the trained teacher "
                         "(teacher_model); use init='scratch' without one")
    if config.init == "inherit" and distribution.replicas(strategy) > 1:
        raise ValueError("inherited finalists are not supported under a multi-replica strategy yet; use "
                         "--finalist_init=scratch (and --proxy_init=scratch) there")


def train_finalists(specs: Sequence[archspec.ArchSpec], splits: data.Splits, data_config: data.DataConfig,
                    config: FinalistConfig, *, seed: int, teacher_model: Optional[keras.Model] = None,
                    on_result: Optional[Callable[[FinalistResult], None]] = None,
                    keep_models: bool = True,
                    strategy: Optional[tf.distribute.Strategy] = None) -> List[FinalistResult]:
    """Trains every spec for the full budget and evaluates it once on the test split.

    Each finalist trains on the training split, is scored on the validation split
    and then on the test split. Its seed comes from `seed` and its spec
    (`finalist_seed`), and its pipelines are rebuilt after seeding, so its result
    does not depend on the other finalists or on their order. A finalist that
    raises is recorded as "failed" with the reason; it never stops the others.

    Args:
      specs: the candidates (duplicates are trained again; see `distinct`).
      splits: all three splits (the test split is read here, once per finalist).
      data_config: batch size, augmentation and the pipelines' seed.
      config: the training recipe.
      seed: the run seed.
      teacher_model: the trained teacher, required when ``config.distill`` or ``config.init`` is "inherit".
      on_result: called with each finished result (durable storage, progress).
      keep_models: keep each trained model in its result (``result.model``).
      strategy: the `tf.distribute.Strategy` to train under (None: one device).

    Returns:
      One FinalistResult per spec, in order.
    """
    check_teacher(config, teacher_model, strategy)
    results = []
    for number, spec in enumerate(specs, start=1):
        result = _train_one(spec, splits, data_config, config, seed, teacher_model, keep_models, strategy)
        logging.info("finalist %d/%d %s: %d params, %s, val %.4f, test %.4f, %.0f s", number, len(specs),
                     spec.hash, result.params, result.status, result.val_accuracy, result.test_accuracy,
                     result.train_seconds)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def _train_one(spec, splits: data.Splits, data_config, config, seed, teacher_model, keep_models, strategy):
    info = splits.info
    own_seed = finalist_seed(seed, spec)
    params = flops = 0  # stay 0 for a spec that does not fit the data
    nan = float("nan")
    start = time.perf_counter()
    try:
        params = spec.count_params(info.input_shape, info.num_classes)
        flops = spec.count_flops(info.input_shape, info.num_classes)
        keras.utils.set_random_seed(own_seed)
        train, validation, test = data.pipelines(splits, data_config)
        model, summary = train_spec(spec, train, None, info, config, seed=own_seed, teacher_model=teacher_model,
                                    name=f"finalist_{spec.hash}", strategy=strategy)
    except Exception as error:  # noqa: BLE001 - one bad finalist must not stop the others
        if not distribution.isolatable(error, strategy):
            raise
        logging.warning("finalist %s failed: %s", spec.hash, error)
        logging.debug("%s", traceback.format_exc())
        return FinalistResult(spec, params, flops, nan, nan, time.perf_counter() - start, 0, own_seed, FAILED,
                              f"{type(error).__name__}: {error}"[:500])
    if summary["diverged"]:
        return FinalistResult(spec, params, flops, nan, nan, time.perf_counter() - start, summary["epochs"],
                              own_seed, DIVERGED, "loss or weights became NaN or infinite",
                              model if keep_models else None)
    val_accuracy = training.accuracy(model, validation)
    test_accuracy = training.accuracy(model, test)
    return FinalistResult(spec, params, flops, val_accuracy, test_accuracy, time.perf_counter() - start,
                          summary["epochs"], own_seed, OK, "", model if keep_models else None)


# -- choosing -------------------------------------------------------------------------
def within_drop(result: FinalistResult, *, teacher_accuracy: float, max_accuracy_drop: float) -> bool:
    """Whether `result`'s validation accuracy is at least ``teacher_accuracy - max_accuracy_drop``."""
    return result.ok and result.val_accuracy >= teacher_accuracy - max_accuracy_drop - 1e-12


def choose(results: Sequence[FinalistResult], *, teacher_accuracy: float,
           max_accuracy_drop: float) -> FinalistResult:
    """The finalist to report: the smallest one that keeps the teacher's accuracy.

    The rule, on the **validation** split only (the test accuracy is reported, never
    used to choose): among the finalists whose validation accuracy is at least
    ``teacher_accuracy - max_accuracy_drop``, the one with the fewest parameters
    (ties: higher validation accuracy, then fewer FLOPs, then spec hash). If none
    qualifies, the most accurate finalist (ties: fewer parameters). Failed or
    diverged finalists are never chosen.

    Args:
      results: the trained finalists.
      teacher_accuracy: the teacher's **validation** accuracy (the same split the
        finalists are judged on).
      max_accuracy_drop: the accuracy the compressed network may lose, as a
        fraction (0.01 = one percentage point).

    Raises:
      ValueError: no finalist trained successfully, or a negative drop.
    """
    if max_accuracy_drop < 0:
        raise ValueError(f"max_accuracy_drop must be >= 0, got {max_accuracy_drop}")
    usable = [result for result in results if result.ok]
    if not usable:
        raise ValueError(f"none of the {len(results)} finalists trained successfully")
    qualifying = [result for result in usable
                  if within_drop(result, teacher_accuracy=teacher_accuracy, max_accuracy_drop=max_accuracy_drop)]
    if qualifying:
        return min(qualifying, key=lambda r: (r.params, -r.val_accuracy, r.flops, r.spec.hash))
    return min(usable, key=lambda r: (-r.val_accuracy, r.params, r.flops, r.spec.hash))
