"""Training and evaluating the architecture embedding on a corpus.

Data: `corpus.as_dataset` reads the TFRecord part files directly. Records are split
into train / held-out by a salted hash of the architecture's hash, so both trainings
of a replicated child land on the same side, and a corpus that grows keeps its old
records on their old side. Both replicates of a child are training examples (two
noisy labels of one architecture).

Loss: mean token cross-entropy over the F fields (``reconstruction_weight``), plus
squared errors of validation accuracy and log parameters, each divided by the
target's variance on the training split (``accuracy_weight``, ``params_weight``).
The heads predict in real units (the statistics live in the model's `TargetScale`
layers), so dividing by the variance is exactly a regression on normalised targets.

`train` is resumable: Keras' BackupAndRestore keeps the last finished epoch in
``<dir>/backup``, and a finished embedding whose key (corpus, configs, seed) matches
is loaded instead of retrained.
"""

import dataclasses
import hashlib
import json
import math
import os
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from acompress import corpus as corpus_lib
from acompress import distribution
from acompress import embedding as embedding_lib
from acompress import progress
from acompress import ranking
from acompress import rundir
from acompress import sampler
from acompress import tokens as tokens_lib

METRICS_FILE = "metrics.json"
KEY_FILE = "key.json"
BACKUP_DIR = "backup"  # Keras' BackupAndRestore: the last finished epoch while training
_BUCKETS = 10000


@dataclasses.dataclass(frozen=True)
class EmbeddingTrainConfig:
    """How the embedding is trained.

    Attributes:
      epochs: maximum passes over the training records.
      batch_size: records per step.
      learning_rate: AdamW peak rate (cosine decay to 0 over `epochs`).
      weight_decay: AdamW decoupled weight decay.
      reconstruction_weight, accuracy_weight, params_weight: weights of the three losses.
      heldout_fraction: share of architectures held out (by hash) for early stopping and metrics.
      min_steps_per_epoch: an "epoch" is one pass over the training records, or this many
        steps if that is more (small corpora).
      unlabeled_architectures: extra children drawn from the corpus' own sampler (same
        teacher, space and settings, continuing its sequence), never trained: they have
        no accuracy label, but their tokens and exact parameter counts are free, so they
        train the encoder, decoder and size head (the accuracy loss skips them).
        Architectures held out from the corpus are never among them.
      patience: epochs without a better held-out loss before training stops (best weights kept).
      split_salt: salt of the hash split (change it to draw another split).
    """

    epochs: int = 150
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    reconstruction_weight: float = 1.0
    accuracy_weight: float = 0.5
    params_weight: float = 1.0
    heldout_fraction: float = 0.2
    patience: int = 30
    min_steps_per_epoch: int = 20
    unlabeled_architectures: int = 2000
    split_salt: str = "acompress"

    def __post_init__(self):
        if self.unlabeled_architectures < 0:
            raise ValueError(f"unlabeled_architectures must be >= 0, got {self.unlabeled_architectures}")
        for name in ("epochs", "batch_size", "patience", "min_steps_per_epoch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        for name in ("weight_decay", "reconstruction_weight", "accuracy_weight", "params_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- data -----------------------------------------------------------------------------------------

def _heldout_predicate(config: EmbeddingTrainConfig):
    threshold = int(round(config.heldout_fraction * _BUCKETS))
    salt = config.split_salt + ":"

    def is_heldout(example):
        bucket = tf.strings.to_hash_bucket_fast(tf.strings.join([salt, example["spec_hash"]]), _BUCKETS)
        return bucket < threshold

    return is_heldout


def split(dataset: tf.data.Dataset, config: EmbeddingTrainConfig) -> Tuple[tf.data.Dataset, tf.data.Dataset]:
    """(train, held-out) record datasets of a `corpus.as_dataset` stream, split by architecture hash."""
    is_heldout = _heldout_predicate(config)
    return (dataset.filter(lambda example: tf.logical_not(is_heldout(example))), dataset.filter(is_heldout))


def training_pairs(fields: Sequence[str]):
    """Maps a corpus record to (tokens, targets) with the model's output names."""

    def to_pair(example):
        tokens = example["tokens"]
        targets = {f"logits_{field}": tokens[:, column] for column, field in enumerate(fields)}
        targets["accuracy"] = tf.reshape(example["val_accuracy"], [1])
        targets["log_params"] = tf.reshape(tf.math.log(tf.cast(example["params"], tf.float32)), [1])
        return tokens, targets

    return to_pair


def batched(records, fields: Sequence[str], batch_size: int, *, shuffle_seed: Optional[int] = None,
            size: Optional[int] = None) -> tf.data.Dataset:
    """The model's input pipeline: pairs, cached, (shuffled), batched, prefetched.

    `records` is one record dataset or a list of them (concatenated after mapping, so
    their other fields need not agree). `size`: their number of records, when known: it
    sizes the shuffle buffer and tells Keras how many batches an epoch has (a dataset read
    from TFRecords does not know, and Keras then warns that its "input ran out of data").
    """
    parts = [records] if isinstance(records, tf.data.Dataset) else list(records)
    pairs = parts[0].map(training_pairs(fields), num_parallel_calls=tf.data.AUTOTUNE)
    for part in parts[1:]:
        pairs = pairs.concatenate(part.map(training_pairs(fields), num_parallel_calls=tf.data.AUTOTUNE))
    pairs = pairs.cache()
    if size is not None:
        pairs = pairs.apply(tf.data.experimental.assert_cardinality(size))
    if shuffle_seed is not None:
        pairs = pairs.shuffle(max(size or 10000, 1), seed=shuffle_seed, reshuffle_each_iteration=True)
    return pairs.batch(batch_size).prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass
class Records:
    """Corpus records as numpy arrays (for metrics)."""

    tokens: np.ndarray
    val_accuracy: np.ndarray
    params: np.ndarray
    child_index: np.ndarray
    replicate: np.ndarray
    spec_hash: np.ndarray

    def __len__(self) -> int:
        return len(self.val_accuracy)

    @classmethod
    def from_dataset(cls, dataset: tf.data.Dataset, tokens_shape: Sequence[int]) -> "Records":
        columns = {name: [] for name in ("tokens", "val_accuracy", "params", "child_index", "replicate", "spec_hash")}
        for batch in dataset.batch(4096):
            for name in columns:
                columns[name].append(batch[name].numpy())
        empty = {"tokens": np.zeros((0,) + tuple(tokens_shape), np.int32), "spec_hash": np.zeros((0,), object)}
        return cls(**{name: np.concatenate(parts) if parts else empty.get(name, np.zeros((0,)))
                      for name, parts in columns.items()})

    @classmethod
    def empty(cls, tokens_shape: Sequence[int]) -> "Records":
        return cls(np.zeros((0,) + tuple(tokens_shape), np.int32), np.zeros(0, np.float32), np.zeros(0, np.int64),
                   np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, object))

    @classmethod
    def from_corpus(cls, corpus: corpus_lib.Corpus) -> "Records":
        """The corpus' records, as read (select the statuses first, e.g. ``corpus.select(["ok"])``)."""
        return cls(tokens=corpus.tokens, val_accuracy=corpus.val_accuracy.astype(np.float32),
                   params=corpus.params.astype(np.int64), child_index=corpus.child_index.astype(np.int64),
                   replicate=corpus.replicate.astype(np.int64),
                   spec_hash=np.asarray([r.spec_hash.encode() for r in corpus.records], object))

    def select(self, mask) -> "Records":
        return Records(**{field.name: getattr(self, field.name)[mask] for field in dataclasses.fields(self)})

    @classmethod
    def concatenate(cls, parts: Sequence["Records"]) -> "Records":
        return cls(**{field.name: np.concatenate([getattr(part, field.name) for part in parts])
                      for field in dataclasses.fields(cls)})

    def as_dataset(self) -> tf.data.Dataset:
        """The records as a `corpus.as_dataset`-like stream (for fine-tuning from memory)."""
        return tf.data.Dataset.from_tensor_slices({
            "tokens": self.tokens.astype(np.int32), "val_accuracy": self.val_accuracy.astype(np.float32),
            "params": self.params.astype(np.int64), "child_index": self.child_index.astype(np.int64),
            "replicate": self.replicate.astype(np.int64), "spec_hash": self.spec_hash.astype(bytes)})


# -- training -------------------------------------------------------------------------------------

class _ProgressLogger(keras.callbacks.Callback):
    def __init__(self, epochs: int, on_epoch: Optional[Callable[[int, dict], None]] = None):
        super().__init__()
        self._bar = progress.Progress(epochs, "embedding", unit="epochs")
        self._on_epoch = on_epoch

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self._bar.update(1, extra=f"loss {logs.get('loss', float('nan')):.4f} "
                                  f"held-out {logs.get('val_loss', float('nan')):.4f}")
        if self._on_epoch is not None:
            self._on_epoch(epoch, dict(logs))

    def on_train_end(self, logs=None):
        self._bar.close()


@keras.saving.register_keras_serializable(package="acompress")
def labelled_squared_error(y_true, y_pred):
    """Squared error over the records that have a label (NaN = no label), averaged over those records.

    Returned per record (zero for unlabelled ones) and scaled so that Keras' mean over
    the batch equals the mean over the labelled records of the batch.
    """
    y_true = tf.cast(y_true, tf.float32)
    y_pred = tf.cast(y_pred, tf.float32)
    labelled = tf.logical_not(tf.math.is_nan(y_true))
    error = tf.where(labelled, tf.square(tf.where(labelled, y_true, 0.0) - y_pred), 0.0)
    per_record = tf.reduce_mean(error, axis=-1)
    share = tf.reduce_mean(tf.cast(tf.reduce_any(labelled, axis=-1), tf.float32))
    return per_record / tf.maximum(share, 1e-6)


def unlabeled_records(corpus: corpus_lib.Corpus, count: int, exclude: Sequence[bytes] = ()) -> Records:
    """`count` more children from the corpus' own sampler (no accuracy: NaN), minus `exclude` hashes."""
    meta = corpus.meta
    empty_tokens = tuple(meta.tokens_shape)
    if count <= 0:
        return Records.empty(empty_tokens)
    space = meta.search_space
    info = meta.dataset_info
    first = meta.num_children
    children = sampler.sample_children(meta.teacher_spec, input_shape=info["input_shape"],
                                       num_classes=info["num_classes"], count=first + count, seed=meta.seed,
                                       space=space, config=meta.sampler_config)[first:]
    excluded = {h.decode() if isinstance(h, bytes) else str(h) for h in exclude}
    children = [child for child in children if child.hash not in excluded]
    tokenizer = tokens_lib.Tokenizer(space)
    n = len(children)
    return Records(tokens=tokenizer.encode_batch(children).reshape((n,) + empty_tokens).astype(np.int32),
                   val_accuracy=np.full(n, np.nan, np.float32),
                   params=np.asarray([c.count_params(info["input_shape"], info["num_classes"]) for c in children],
                                     np.int64),
                   child_index=np.arange(first, first + n, dtype=np.int64), replicate=np.zeros(n, np.int64),
                   spec_hash=np.asarray([c.hash.encode() for c in children], object))


def steps_per_epoch(num_records: int, config: EmbeddingTrainConfig) -> int:
    """Steps between two held-out evaluations: one pass over the records, but at least `min_steps_per_epoch`
    (a small corpus would otherwise spend most of its time evaluating)."""
    return max(math.ceil(num_records / config.batch_size), config.min_steps_per_epoch)


def compile_model(model: keras.Model, tokenizer: tokens_lib.Tokenizer, targets: embedding_lib.TargetStats,
                  config: EmbeddingTrainConfig, steps_per_epoch: int) -> None:
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate,
                                                      decay_steps=max(1, config.epochs * steps_per_epoch))
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay)
    losses, weights, metrics = {}, {}, {}
    for field in tokenizer.fields:
        losses[f"logits_{field}"] = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        weights[f"logits_{field}"] = config.reconstruction_weight / len(tokenizer.fields)
    losses["accuracy"] = labelled_squared_error
    weights["accuracy"] = config.accuracy_weight / targets.accuracy_std ** 2
    losses["log_params"] = keras.losses.MeanSquaredError()
    weights["log_params"] = config.params_weight / targets.log_params_std ** 2
    metrics["log_params"] = [keras.metrics.MeanAbsoluteError(name="mae")]
    model.compile(optimizer=distribution.loss_scaled(optimizer), loss=losses, loss_weights=weights, metrics=metrics)


def _key(corpus: corpus_lib.Corpus, model_config, train_config, seed: int, precision_policy: str) -> dict:
    return json.loads(rundir.to_json({
        "corpus_records": hashlib.sha256("\n".join(sorted(
            f"{r.spec_hash}:{r.replicate}:{r.child_index}:{r.val_accuracy!r}" for r in corpus.ok())).encode()).hexdigest(),
        "corpus_metadata": {k: v for k, v in corpus.metadata.items() if k not in corpus_lib.UNPINNED_KEYS},
        "model": model_config.to_dict(), "train": train_config.to_dict(), "seed": seed,
        "precision": precision_policy}))


def _discard_unusable_backup(backup_dir: str) -> None:
    """Deletes a BackupAndRestore backup that a run killed while writing it left incomplete.

    Keras writes the backup's weights (latest.weights.h5) and then its epoch
    (training_metadata.json) in place, so kill -9 at the wrong moment leaves a cut-short
    weights file, on which the next fit() fails. Such a backup is dropped (training
    starts over); a complete one is left for BackupAndRestore to resume from.
    """
    weights = os.path.join(backup_dir, "latest.weights.h5")
    metadata = os.path.join(backup_dir, "training_metadata.json")
    if not tf.io.gfile.exists(backup_dir) or "://" in backup_dir:  # h5py reads local files only
        return
    try:
        int(rundir.read_json(metadata)["epoch"])
        import h5py  # pylint: disable=import-outside-toplevel  # Keras' own dependency, only needed here
        with h5py.File(weights, "r") as handle:  # read every array: a truncated file fails here
            handle.visititems(lambda _, item: item[()] if isinstance(item, h5py.Dataset) else None)
    except (OSError, ValueError, KeyError, TypeError, tf.errors.OpError) as error:
        logging.warning("embedding: discarding the incomplete backup in %s (%s: %s); training starts over",
                        backup_dir, type(error).__name__, error)
        tf.io.gfile.rmtree(backup_dir)


def train(corpus: corpus_lib.Corpus, output_dir: str, model_config: embedding_lib.EmbeddingConfig,
          train_config: EmbeddingTrainConfig, *, seed: int, precision_policy: str = "float32",
          on_epoch: Optional[Callable[[int, dict], None]] = None, verbose: int = 0,
          evaluate_after: bool = True,
          strategy: Optional[tf.distribute.Strategy] = None) -> Tuple[embedding_lib.Embedding, dict]:
    """Trains the embedding on the "ok" records of `corpus`; saves it and its metrics in `output_dir`.

    Writes ``embedding.keras`` + ``embedding.json`` (see `embedding.Embedding.save`),
    ``metrics.json`` (see `evaluate`, plus training history and wall time),
    ``tensorboard/`` scalars and ``backup/`` (the last finished epoch while training).
    If `output_dir` already holds an embedding trained with the same key (same corpus
    records, configs, seed and precision), it is loaded and returned instead.

    Args:
      corpus: a `corpus.Corpus` from `corpus.read_corpus` (its shards are read again
        through tf.data, directly).
      output_dir: where everything goes.
      model_config, train_config: the model and its training.
      seed: initialisation and shuffling.
      precision_policy: the Keras dtype policy in force (recorded; set it with `precision.apply`).
      on_epoch: called with (epoch, logs) after every epoch.
      evaluate_after: compute the held-out metrics (`evaluate`) once trained.
      strategy: a `tf.distribute.Strategy` to train under (None: one device); the batch
        size stays global.

    Returns:
      (embedding, metrics dict).
    """
    key = _key(corpus, model_config, train_config, seed, precision_policy)
    finished = _finished(output_dir, key)
    if finished is not None:
        return finished
    tf.io.gfile.makedirs(output_dir)

    tokenizer = tokens_lib.Tokenizer(corpus.meta.search_space)
    records = _training_records(corpus, tokenizer, train_config)
    distribution.agree(strategy, f"embedding {key}")
    keras.utils.set_random_seed(seed)
    steps = steps_per_epoch(records.train_size, train_config)
    with distribution.scope(strategy):
        model = embedding_lib.build_model(tokenizer, model_config, records.targets)
        compile_model(model, tokenizer, records.targets, train_config, steps)
    train_data, heldout_data = _pipelines(records, tokenizer, train_config, seed, strategy)
    callbacks = _callbacks(output_dir, train_config, on_epoch)
    start = time.perf_counter()
    history = model.fit(train_data, validation_data=heldout_data, epochs=train_config.epochs, steps_per_epoch=steps,
                        callbacks=callbacks, verbose=verbose)
    seconds = time.perf_counter() - start
    info = corpus.meta.dataset_info
    embedding = embedding_lib.Embedding(model, tokenizer, input_shape=info["input_shape"],
                                        num_classes=info["num_classes"], targets=records.targets, config=model_config,
                                        extra={"corpus_dir": corpus.corpus_dir,
                                               "teacher_hash": corpus.meta.teacher_hash})
    embedding.save(output_dir)
    metrics = _fit_metrics(history, seconds, records, strategy, precision_policy)
    if evaluate_after:
        metrics.update(evaluate(embedding, records.heldout, train=records.train, seed=seed))
    _mark_finished(output_dir, metrics, key)
    return embedding, metrics


def _finished(output_dir: str, key: dict) -> Optional[Tuple[embedding_lib.Embedding, dict]]:
    """The embedding and metrics `output_dir` holds if they were trained with `key`, else None."""
    key_path = os.path.join(output_dir, KEY_FILE)
    metrics_path = os.path.join(output_dir, METRICS_FILE)
    if all(tf.io.gfile.exists(p) for p in (key_path, metrics_path, os.path.join(output_dir, embedding_lib.MODEL_FILE))):
        if rundir.read_json(key_path) == key:
            logging.info("embedding: reusing %s", output_dir)
            return embedding_lib.Embedding.load(output_dir), rundir.read_json(metrics_path)
    return None


def _mark_finished(output_dir: str, metrics: dict, key: dict) -> None:
    """Writes the metrics, then the key that makes `_finished` reuse the embedding; drops the backup."""
    rundir.write_json(os.path.join(output_dir, METRICS_FILE), metrics)
    rundir.write_json(os.path.join(output_dir, KEY_FILE), key)
    backup_dir = os.path.join(output_dir, BACKUP_DIR)
    if tf.io.gfile.exists(backup_dir):
        tf.io.gfile.rmtree(backup_dir)


@dataclasses.dataclass(frozen=True, eq=False)
class _TrainingRecords:
    """What `train` fits on: the corpus' ok records split by hash (as tf.data for the pipelines and as
    arrays for the statistics and metrics), the unlabelled extra architectures, the target statistics."""

    train_records: tf.data.Dataset
    heldout_records: tf.data.Dataset
    train: Records
    heldout: Records
    extra: Records
    targets: embedding_lib.TargetStats

    @property
    def train_size(self) -> int:
        """Training examples per pass: the labelled ones and the unlabelled extras."""
        return len(self.train) + len(self.extra)


def _training_records(corpus: corpus_lib.Corpus, tokenizer: tokens_lib.Tokenizer,
                      config: EmbeddingTrainConfig) -> _TrainingRecords:
    """Splits the corpus' ok records into train / held-out (`split`) and adds the unlabelled architectures.

    Raises:
      ValueError: fewer than 2 training or 1 held-out records.
    """
    train_records, heldout_records = split(corpus.as_dataset(("ok",)), config)
    train_arrays = Records.from_dataset(train_records, tokenizer.shape)
    heldout_arrays = Records.from_dataset(heldout_records, tokenizer.shape)
    if len(train_arrays) < 2 or len(heldout_arrays) < 1:
        raise ValueError(f"the corpus has {len(train_arrays)} training and {len(heldout_arrays)} held-out ok records "
                         "after the hash split; an embedding needs at least 2 and 1 (generate more children)")
    logging.info("embedding: %d training and %d held-out records (%d architectures held out)", len(train_arrays),
                 len(heldout_arrays), len(set(heldout_arrays.spec_hash.tolist())))
    targets = embedding_lib.TargetStats.from_targets(train_arrays.val_accuracy, train_arrays.params)
    extra = unlabeled_records(corpus, config.unlabeled_architectures, exclude=heldout_arrays.spec_hash)
    if len(extra):
        logging.info("embedding: + %d unlabelled architectures from the corpus' sampler", len(extra))
    return _TrainingRecords(train_records, heldout_records, train_arrays, heldout_arrays, extra, targets)


def _pipelines(records: _TrainingRecords, tokenizer: tokens_lib.Tokenizer, config: EmbeddingTrainConfig, seed: int,
               strategy: Optional[tf.distribute.Strategy]) -> Tuple[tf.data.Dataset, tf.data.Dataset]:
    """(training, held-out) batches for `fit`: the training ones shuffled with `seed` and repeated, both
    sharded for `strategy`."""
    extra = records.extra
    train_data = batched([records.train_records, extra.as_dataset()] if len(extra) else records.train_records,
                         tokenizer.fields, config.batch_size, shuffle_seed=seed, size=records.train_size).repeat()
    heldout_data = batched(records.heldout_records, tokenizer.fields, 1024, size=len(records.heldout))
    return distribution.shard_by_data(train_data, strategy), distribution.shard_by_data(heldout_data, strategy)


def _callbacks(output_dir: str, config: EmbeddingTrainConfig,
               on_epoch: Optional[Callable[[int, dict], None]]) -> list:
    """Backup (resumes a killed run; an incomplete backup is dropped first), early stopping on the held-out
    loss, TensorBoard scalars and progress logging."""
    backup_dir = os.path.join(output_dir, BACKUP_DIR)
    _discard_unusable_backup(backup_dir)
    return [
        keras.callbacks.BackupAndRestore(backup_dir),
        keras.callbacks.EarlyStopping("val_loss", patience=config.patience, restore_best_weights=True),
        keras.callbacks.TensorBoard(os.path.join(output_dir, "tensorboard"), write_graph=False),
        _ProgressLogger(config.epochs, on_epoch),
    ]


def _fit_metrics(history: keras.callbacks.History, seconds: float, records: _TrainingRecords,
                 strategy: Optional[tf.distribute.Strategy], precision_policy: str) -> dict:
    """The training part of metrics.json: wall time, epochs, the best held-out epoch, record counts, history."""
    val_losses = history.history.get("val_loss", [])
    return {"train_seconds": seconds, "epochs_run": len(history.history.get("loss", [])),
            "replicas": distribution.replicas(strategy),
            "best_epoch": int(np.argmin(val_losses)) + 1 if val_losses else None,
            "best_heldout_loss": float(np.min(val_losses)) if val_losses else None,
            "records": {"train": len(records.train), "heldout": len(records.heldout), "unlabeled": len(records.extra)},
            "precision": precision_policy,
            "history": {k: [float(x) for x in v] for k, v in history.history.items()}}


def fine_tune(embedding: embedding_lib.Embedding, records: Records, *, epochs: int, seed: int,
              emphasis: Optional[Records] = None, learning_rate: float = 5e-4) -> dict:
    """Continues training `embedding` (in place) on `records` for `epochs` passes, without early stopping.

    Used by refinement rounds: `records` is the corpus plus newly measured children;
    `emphasis` (the new ones) are repeated so they make up about a quarter of each pass.
    The target statistics stay those the embedding was trained with. It runs on one device
    whatever --strategy says: a few seconds of a small model, where splitting batches would
    cost more in communication than it saves (every worker of a multi-worker run does the same
    fine-tuning from the same state, with the same seed).
    """
    config = EmbeddingTrainConfig(epochs=epochs, learning_rate=learning_rate)
    parts = [records]
    if emphasis is not None and len(emphasis):
        parts += [emphasis] * max(0, len(records) // (3 * len(emphasis)) - 1)
    merged = Records.concatenate(parts)
    keras.utils.set_random_seed(seed)
    steps = steps_per_epoch(len(merged), config)
    compile_model(embedding.model, embedding.tokenizer, embedding.targets, config, steps)
    data = batched(merged.as_dataset(), embedding.tokenizer.fields, config.batch_size, shuffle_seed=seed,
                   size=len(merged)).repeat()
    start = time.perf_counter()
    history = embedding.model.fit(data, epochs=epochs, steps_per_epoch=steps, verbose=0)
    return {"seconds": time.perf_counter() - start, "records": len(merged),
            "final_loss": float(history.history["loss"][-1])}


# -- metrics --------------------------------------------------------------------------------------

def reconstruction(embedding: embedding_lib.Embedding, records: Records) -> dict:
    """Exact (whole architecture) and per-field reconstruction of `records` through z, masked and raw."""
    if not len(records):
        return {"count": 0}
    z = embedding.encode(records.tokens)
    masked = embedding.decode(z)
    raw = embedding.decode_raw(z)
    real = records.tokens[..., 0] != tokens_lib.PAD  # rows that hold a layer
    per_field = {field: float(np.mean((masked[..., column] == records.tokens[..., column])[real]))
                 for column, field in enumerate(embedding.tokenizer.fields)}
    return {"count": int(len(records)),
            "exact": float(np.mean(np.all(masked == records.tokens, axis=(1, 2)))),
            "exact_unmasked": float(np.mean(np.all(raw == records.tokens, axis=(1, 2)))),
            "per_field": per_field}


def validity(embedding: embedding_lib.Embedding, z: np.ndarray, *, scales: Sequence[float] = (0.1, 0.3),
             samples: int = 2, seed: int = 0, fallback: Optional[np.ndarray] = None) -> dict:
    """Validity of decodes from random points near the codes `z` (Gaussian steps of each scale, clipped to the box).

    Reports, per scale: the share of unmasked argmax decodes that are valid, of masked
    decodes (valid by construction, so this should be 1.0), and after the repair pass.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for scale in scales:
        points = np.repeat(z, samples, axis=0)
        points = np.clip(points + rng.normal(0.0, scale, points.shape), -1.0, 1.0).astype(np.float32)
        raw = embedding.decode_raw(points)
        masked = embedding.decode(points)
        check = lambda t: embedding_lib.check_tokens(embedding.tokenizer, t, embedding.input_shape)  # noqa: E731
        raw_ok = [check(t) is None for t in raw]
        masked_ok = [check(t) is None for t in masked]
        repaired_ok = masked_ok
        if fallback is not None and not all(masked_ok):
            repaired = [embedding_lib.repair(embedding.tokenizer, t, embedding.input_shape, fallback) for t in masked]
            repaired_ok = [check(t) is None for t in repaired]
        distinct = len({t.tobytes() for t in masked})
        out[str(scale)] = {"points": int(len(points)), "valid_unmasked": float(np.mean(raw_ok)),
                           "valid_masked": float(np.mean(masked_ok)), "valid_after_repair": float(np.mean(repaired_ok)),
                           "distinct_decodes": distinct}
    return out


def noise_ceiling(records: Records) -> dict:
    """Kendall tau between the two trainings of each replicated child (the best any predictor can hope for)."""
    first = {int(c): float(a) for c, a, r in zip(records.child_index, records.val_accuracy, records.replicate) if r == 0}
    second = {int(c): float(a) for c, a, r in zip(records.child_index, records.val_accuracy, records.replicate) if r == 1}
    children = sorted(set(first) & set(second))
    return {"children": children, "count": len(children),
            "kendall_tau": ranking.kendall_tau([first[c] for c in children], [second[c] for c in children])
            if len(children) >= 2 else None}


def evaluate(embedding: embedding_lib.Embedding, heldout: Records, *, train: Optional[Records] = None,
             seed: int = 0) -> dict:
    """The held-out metrics written to metrics.json (see README, "Embedding metrics")."""
    first = heldout.select(heldout.replicate == 0)
    z = embedding.encode(first.tokens)
    predicted = embedding.predict(z)
    log_params = np.log(first.params.astype(np.float64))
    metrics = {"heldout": {
        "reconstruction": reconstruction(embedding, first),
        "params_head": {"r2_log": ranking.r_squared(predicted["log_params"], log_params),
                        "mae_log": float(np.mean(np.abs(predicted["log_params"] - log_params))),
                        "kendall_tau": ranking.kendall_tau(predicted["log_params"], log_params)},
        "accuracy_head": ranking.summary(predicted["accuracy"], first.val_accuracy, bin_by=log_params),
        "size_only": ranking.summary(log_params, first.val_accuracy, bin_by=log_params),
        "accuracy_mae": float(np.mean(np.abs(predicted["accuracy"] - first.val_accuracy))),
    }}
    ceiling = noise_ceiling(heldout)
    if ceiling["count"] >= 2:
        chosen = np.isin(first.child_index, ceiling["children"])
        metrics["heldout"]["noise_ceiling"] = {
            "count": ceiling["count"], "replicate_tau": ceiling["kendall_tau"],
            "accuracy_head_tau": ranking.kendall_tau(predicted["accuracy"][chosen], first.val_accuracy[chosen]),
            "size_only_tau": ranking.kendall_tau(log_params[chosen], first.val_accuracy[chosen])}
    fallback = train.tokens if train is not None and len(train) else first.tokens
    metrics["heldout"]["validity"] = validity(embedding, z, seed=seed, fallback=fallback)
    if train is not None and len(train):
        all_records = Records.concatenate([train, heldout])
        corpus_ceiling = noise_ceiling(all_records)
        metrics["corpus_noise_ceiling"] = {"count": corpus_ceiling["count"], "kendall_tau": corpus_ceiling["kendall_tau"]}
        train_first = train.select(train.replicate == 0)
        metrics["train"] = {"reconstruction": {k: v for k, v in reconstruction(embedding, train_first).items()
                                               if k != "per_field"},
                            "accuracy_head_tau": ranking.kendall_tau(
                                embedding.predict(embedding.encode(train_first.tokens))["accuracy"],
                                train_first.val_accuracy)}
    return metrics


def headline(metrics: dict) -> Dict[str, Optional[float]]:
    """The few numbers worth a log line."""
    held = metrics.get("heldout", {})
    ceiling = held.get("noise_ceiling", {})
    validity_at = held.get("validity", {})
    return {"exact_reconstruction": held.get("reconstruction", {}).get("exact"),
            "params_r2_log": held.get("params_head", {}).get("r2_log"),
            "accuracy_tau": held.get("accuracy_head", {}).get("kendall_tau"),
            "size_only_tau": held.get("size_only", {}).get("kendall_tau"),
            "accuracy_tau_in_bins": (held.get("accuracy_head", {}).get("binned_tau") or {}).get("mean"),
            "replicate_tau": ceiling.get("replicate_tau"),
            "valid_masked": min((v["valid_masked"] for v in validity_at.values()), default=None)}
