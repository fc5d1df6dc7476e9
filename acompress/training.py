"""Training and evaluation of one network: the teacher, a child or a finalist.

The same code trains every network, so a teacher, its children and the finalists
are comparable. Training sees only the train split and reports on the split it is
given for validation; the test split is evaluated once, by the caller.
"""

import dataclasses
import math
import time
from typing import Dict, Optional, Sequence

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from acompress import distribution
from acompress import progress

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How one network is trained.

    Attributes:
      epochs: passes over the training data.
      learning_rate: peak learning rate.
      optimizer: "adam" or "sgd" (momentum 0.9, Nesterov).
      schedule: "constant", or "cosine" decay to 0 over all steps (suits short proxies).
      weight_decay: decoupled weight decay (AdamW / SGDW); 0 disables it.
      label_smoothing: applied to the one-hot targets.
    """

    epochs: int = 40
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    schedule: str = "constant"
    weight_decay: float = 0.0
    label_smoothing: float = 0.0

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    rate = config.learning_rate
    if config.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(config.learning_rate, config.epochs * steps_per_epoch)
    decay = config.weight_decay or None
    if config.optimizer == "adam":
        if decay:
            return keras.optimizers.AdamW(learning_rate=rate, weight_decay=decay)
        return keras.optimizers.Adam(learning_rate=rate)
    return keras.optimizers.SGD(learning_rate=rate, momentum=0.9, nesterov=True, weight_decay=decay)


def compile_model(model: keras.Model, config: TrainConfig, steps_per_epoch: int) -> keras.Model:
    """Compiles `model` (softmax outputs, integer labels) for `config`."""
    if config.label_smoothing:
        num_classes = model.output_shape[-1]
        loss = _smoothed_sparse_loss(num_classes, config.label_smoothing)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
    model.compile(optimizer=distribution.loss_scaled(make_optimizer(config, steps_per_epoch)), loss=loss,
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return model


def _smoothed_sparse_loss(num_classes: int, smoothing: float):
    inner = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)

    def loss(y_true, y_pred):
        labels = tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), num_classes)
        return inner(labels, y_pred)

    return loss


def steps_per_epoch(dataset: tf.data.Dataset) -> int:
    steps = int(dataset.cardinality())
    if steps < 1:
        raise ValueError("the training dataset must have a known, non-zero number of batches")
    return steps


class _StopOnNaN(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and remembers where."""

    def __init__(self):
        super().__init__()
        self.diverged_at = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged_at = batch
            self.model.stop_training = True


class EpochLog(keras.callbacks.Callback):
    """Logs one line per epoch (losses, accuracies, elapsed time, ETA): progress on long trainings."""

    def __init__(self, label: str):
        super().__init__()
        self.label = label
        self._start = None

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        total = self.params.get("epochs") or done
        elapsed = time.perf_counter() - self._start
        metrics = " ".join(f"{key} {float(value):.4f}" for key, value in sorted((logs or {}).items())
                           if key != "learning_rate")
        logging.info("%s: epoch %d/%d %s elapsed %s ETA %s", self.label, done, total, metrics,
                     progress.format_seconds(elapsed), progress.format_seconds(elapsed / done * (total - done)))


def fit(model: keras.Model, train: tf.data.Dataset, validation: Optional[tf.data.Dataset],
        config: TrainConfig, *, callbacks: Sequence[keras.callbacks.Callback] = (),
        verbose: int = 0, strategy: Optional[tf.distribute.Strategy] = None) -> Dict:
    """Compiles and trains `model`; returns a summary dict.

    With a `strategy` (see `acompress.distribution`), `model` must have been built in its
    scope; it is compiled there, and the batches (global batch size) are split across replicas.

    The summary holds the per-epoch history, wall time, the final validation
    loss/accuracy (if `validation` is given), and `diverged: True` with the epoch
    if the loss became NaN or infinite (training stops there).
    """
    with distribution.scope(strategy):
        compile_model(model, config, steps_per_epoch(train))
    guard = _StopOnNaN()
    train = distribution.shard_by_data(train, strategy)
    if validation is not None:
        validation = distribution.shard_by_data(validation, strategy)
    start = time.perf_counter()
    history = model.fit(train, validation_data=validation, epochs=config.epochs, shuffle=False,
                        callbacks=[guard, *callbacks], verbose=verbose)
    seconds = time.perf_counter() - start
    epochs_run = len(history.history.get("loss", []))
    summary = {
        "epochs": epochs_run,
        "train_seconds": seconds,
        "history": {key: [float(v) for v in values] for key, values in history.history.items()},
        "diverged": guard.diverged_at is not None,
    }
    if guard.diverged_at is not None:
        summary["diverged_epoch"] = epochs_run
        logging.warning("training diverged (non-finite loss) in epoch %d", epochs_run)
    if validation is not None and not summary["diverged"]:
        summary.update({f"val_{k}": v for k, v in evaluate(model, validation).items()})
    return summary


def evaluate(model: keras.Model, dataset: tf.data.Dataset) -> Dict[str, float]:
    """Loss and accuracy of a compiled `model` on `dataset`."""
    results = model.evaluate(dataset, verbose=0, return_dict=True)
    return {key: float(value) for key, value in results.items()}


def accuracy(model: keras.Model, dataset: tf.data.Dataset) -> float:
    """Top-1 accuracy of `model` on `dataset` (compiled or not)."""
    correct = total = 0
    for x, y in dataset:
        predictions = np.argmax(model(x, training=False), axis=-1)
        correct += int(np.sum(predictions == np.reshape(y.numpy(), [-1])))
        total += int(predictions.shape[0])
    return correct / total if total else float("nan")
