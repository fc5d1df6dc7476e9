"""Distribution strategies for every trainer: one device, all local GPUs, or many workers.

``--strategy`` picks one of `STRATEGIES`:

- ``default``: TensorFlow's default strategy (one device; nothing changes).
- ``mirrored``: `tf.distribute.MirroredStrategy` over all local GPUs (one replica per GPU; on a
  machine without GPUs, one CPU replica).
- ``multi_worker``: `tf.distribute.MultiWorkerMirroredStrategy` configured from ``TF_CONFIG``
  (every worker runs the same command; gradients are all-reduced every step, so the workers
  train one model together).

Batch sizes stay global: ``--batch_size 64`` on two workers gives each 32 examples a step.

Outputs of a multi-worker run: the chief (task ``chief``, or ``worker`` 0 when the cluster has no
chief) writes to the output directory; every other worker writes the same files (its models are
the same, its batch-norm statistics its own) to ``<output_dir>.workers/<task>_<index>/`` (beside
the output directory, so the chief's ``--overwrite`` never deletes a worker's files under it), so a restarted cluster resumes each worker from its own state. Before every training
the workers compare what they are about to train (`agree`): workers whose directories are at
different stages (a kill that landed between two workers' writes) stop with `WorkerMismatchError`
instead of deadlocking in a collective.

What differs from one device, by design: a shuffled pipeline is rewritten by the strategy, so
the same seed draws another (still seeded) batch order; under ``multi_worker`` a child group or
finalist whose training raises a TensorFlow error stops the run (one device records it as failed
and goes on, but a worker cannot leave a collective its peers are in); the embedding's masked
accuracy loss averages over each replica's labelled records, close to but not exactly the global
mean; mixed_float16 loss scaling takes one skip decision for all replicas
(`ReplicaSafeLossScaleOptimizer`).

Keras 3.15's ``Model.fit`` does not run under MultiWorkerMirroredStrategy as shipped
(keras-team/keras#20585): it reduces a distributed *input batch* eagerly to build the model, and
reduces scalar logs along axis 0. `make_strategy("multi_worker")` installs two narrow
compatibility shims for exactly those two spots (`_install_keras_multi_worker_shims`); they change
nothing for the other strategies.
"""

import contextlib
import hashlib
import json
import os
from typing import Mapping, Optional

from absl import logging
import keras
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")
WORKERS_SUFFIX = ".workers"


class DistributionError(ValueError):
    """A strategy that cannot be set up as asked (bad name, missing or malformed TF_CONFIG)."""


class WorkerMismatchError(RuntimeError):
    """The workers of a multi-worker run are about to train different things."""


def parse_tf_config(environ: Optional[Mapping[str, str]] = None) -> dict:
    """The ``TF_CONFIG`` of a multi-worker run, checked: cluster, task type and index.

    Raises:
      DistributionError: it is missing, not JSON, or names a task the cluster does not have.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get("TF_CONFIG")
    if not raw:
        raise DistributionError("--strategy=multi_worker needs TF_CONFIG, e.g. "
                                '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
                                '"task": {"type": "worker", "index": 0}}')
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise DistributionError(f"TF_CONFIG is not JSON: {error}") from None
    if not isinstance(config, dict):
        raise DistributionError(f"TF_CONFIG must be a JSON object, got {type(config).__name__}")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise DistributionError("TF_CONFIG has no cluster (a mapping of task type to addresses)")
    for kind, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(isinstance(a, str) and ":" in a for a in addresses):
            raise DistributionError(f"TF_CONFIG cluster[{kind!r}] must be a list of 'host:port' strings")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise DistributionError("TF_CONFIG has no task ({'type': ..., 'index': ...})")
    kind, index = task["type"], task["index"]
    if kind not in cluster:
        raise DistributionError(f"TF_CONFIG task type {kind!r} is not in the cluster ({', '.join(cluster)})")
    if not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise DistributionError(f"TF_CONFIG task index {index!r} is out of range for {len(cluster[kind])} "
                                f"{kind!r} task(s)")
    if set(cluster) - {"chief", "worker"}:
        raise DistributionError("MultiWorkerMirroredStrategy takes 'chief' and 'worker' tasks only, got "
                                f"{', '.join(sorted(cluster))}")
    return config


def make_strategy(name: str = "default", *, environ: Optional[Mapping[str, str]] = None
                  ) -> Optional[tf.distribute.Strategy]:
    """The strategy for `name` (None for "default": trainers then run as they always do).

    Call it at program start, before TensorFlow runs any op (MultiWorkerMirroredStrategy
    must configure the runtime first).
    """
    if name not in STRATEGIES:
        raise DistributionError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}")
    if name == "default":
        return None
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        strategy = tf.distribute.MirroredStrategy([d.name for d in gpus] or None)
    else:
        parse_tf_config(environ)
        _install_keras_multi_worker_shims()
        # Each worker runs the latent search and the embedding's fine-tuning itself and must reach
        # the same decisions: GPU kernels are not deterministic unless asked to be.
        tf.config.experimental.enable_op_determinism()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    logging.info("strategy %s: %d replica(s) in sync", name, strategy.num_replicas_in_sync)
    return strategy


def replicas(strategy: Optional[tf.distribute.Strategy]) -> int:
    return 1 if strategy is None else int(strategy.num_replicas_in_sync)


def task(strategy: Optional[tf.distribute.Strategy]) -> Optional[tuple]:
    """(task type, index) of this process in a multi-worker run, else None."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return None
    return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy: Optional[tf.distribute.Strategy]) -> bool:
    """Whether this process writes the run's outputs (always, outside a multi-worker run)."""
    where = task(strategy)
    if where is None:
        return True
    kind, index = where
    if kind == "chief":
        return True
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    return kind == "worker" and index == 0 and "chief" not in cluster


def output_dir_for(output_dir: str, strategy: Optional[tf.distribute.Strategy]) -> str:
    """Where this process writes: `output_dir` for the chief, its own sub-directory for other workers."""
    if is_chief(strategy):
        return output_dir
    kind, index = task(strategy)
    return os.path.join(output_dir.rstrip("/") + WORKERS_SUFFIX, f"{kind}_{index}")


def describe(strategy: Optional[tf.distribute.Strategy], name: str) -> dict:
    """What config.json records about the strategy."""
    entry = {"name": name, "replicas": replicas(strategy)}
    where = task(strategy)
    if where is not None:
        entry["task"] = {"type": where[0], "index": where[1]}
        entry["chief"] = is_chief(strategy)
    return entry


def scope(strategy: Optional[tf.distribute.Strategy]):
    """`strategy.scope()`, or a no-op for the default strategy: build and compile models inside it."""
    return contextlib.nullcontext() if strategy is None else strategy.scope()


def isolatable(error: BaseException, strategy: Optional[tf.distribute.Strategy]) -> bool:
    """Whether a trainer may record `error` as one network's failure and go on.

    Not a WorkerMismatchError, and not a TensorFlow error in a multi-worker run: there a
    failed collective leaves the other workers waiting for this one, so the run must stop.
    """
    if isinstance(error, WorkerMismatchError):
        return False
    return task(strategy) is None or not isinstance(error, tf.errors.OpError)


def shard_by_data(dataset: tf.data.Dataset, strategy: Optional[tf.distribute.Strategy]) -> tf.data.Dataset:
    """Tells tf.data to split in-memory data by element across workers (there are no files to split)."""
    if strategy is None or task(strategy) is None:
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def agree(strategy: Optional[tf.distribute.Strategy], what: str) -> None:
    """Checks that every worker is about to do `what` (a description of the next training).

    Outside a multi-worker run it does nothing. Inside, the replicas sum a 32-bit fingerprint
    of `what`; a replica whose own fingerprint times the replica count differs from the sum
    sees a mismatch, and a second sum tells every replica whether any saw one, so all of
    them raise WorkerMismatchError together instead of leaving the others waiting.
    """
    if strategy is None or task(strategy) is None:
        return
    fingerprint = int.from_bytes(hashlib.sha256(what.encode()).digest()[:4], "big")
    count = strategy.num_replicas_in_sync
    own = tf.constant(fingerprint, tf.int64)
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(own)), axis=None)
    differs = tf.cast(tf.not_equal(total, own * count), tf.int64)
    mismatches = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(differs)), axis=None)
    if int(mismatches):
        raise WorkerMismatchError(
            f"the workers disagree about the next training ({what[:120]!r} here): their output directories "
            "are at different stages; rerun every worker with --overwrite")


@keras.saving.register_keras_serializable(package="acompress")
class ReplicaSafeLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Keras' dynamic loss scaling, with one skip decision for all replicas.

    Keras 3.15's `LossScaleOptimizer` decides whether a step overflowed from the first
    local replica's gradients before they are summed: another replica's overflow is then
    summed into the weights (mirrored), or workers decide differently and wait on each other
    forever (multi-worker). Here every replica learns whether any replica's gradients are
    non-finite (one all-reduce of a flag) and, if so, passes non-finite gradients on, so all
    of them skip the step and halve the scale together. On one replica it is Keras' own.
    """

    def apply(self, grads, trainable_variables=None):
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            local = tf.cast(tf.logical_not(self.check_finite(grads)), tf.int32)
            overflow = context.all_reduce(tf.distribute.ReduceOp.SUM, local) > 0
            grads = [None if g is None else tf.where(overflow, tf.fill(tf.shape(g), tf.constant(float("nan"), g.dtype)),
                                                     g) for g in grads]
        return super().apply(grads, trainable_variables)


def loss_scaled(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """`optimizer` wrapped for the global dtype policy: under mixed_float16 with more than one
    replica in sync, in a ReplicaSafeLossScaleOptimizer (`Model.compile` leaves an optimizer that
    already scales alone); otherwise unchanged (`Model.compile` adds Keras' own loss scaling
    where the policy needs it)."""
    if keras.mixed_precision.global_policy().compute_dtype != "float16" or \
            tf.distribute.get_strategy().num_replicas_in_sync < 2:
        return optimizer
    return ReplicaSafeLossScaleOptimizer(optimizer)


_SHIMS_INSTALLED = False


def _install_keras_multi_worker_shims() -> None:
    """Lets Keras 3.15's `Model.fit`/`evaluate` run under MultiWorkerMirroredStrategy.

    Two spots fail as shipped (keras-team/keras#20585), both outside the training step:
    1. `TensorFlowTrainer._maybe_symbolic_build` reduces a distributed input batch with an
       eager cross-worker MEAN just to learn its shapes (the eager collective rejects it).
       The shim builds from the dataset's element spec instead, without reading a batch.
    2. `reduce_per_replica` reduces scalar logs (loss, metrics) with MEAN along axis 0,
       which scalars do not have. The shim reduces scalars with axis=None.
    Idempotent; only MultiWorkerMirroredStrategy reaches either change.
    """
    global _SHIMS_INSTALLED
    if _SHIMS_INSTALLED:
        return
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build
    original_reduce = tf_trainer.reduce_per_replica

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if (iterator is None or self._distribute_strategy is None
                or not tf_trainer._collective_all_reduce_multi_worker(self._distribute_strategy)):
            return original_build(self, iterator=iterator, data_batch=data_batch)
        spec = iterator.data_adapter.get_tf_dataset().element_spec
        batch = tf.nest.map_structure(lambda s: tf.zeros([1 if d is None else d for d in s.shape], s.dtype), spec)
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=batch)

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            def reduce(value):
                local = strategy.experimental_local_results(value)[0]  # a PerReplica has no shape itself
                return strategy.reduce("MEAN", value, axis=None if local.shape.rank == 0 else 0)

            return tf.nest.map_structure(reduce, values)
        return original_reduce(values, strategy, reduction)

    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica
    _SHIMS_INSTALLED = True

