"""Training children fast: a short proxy budget, several children per traced step.

The corpus is the method's whole cost, so this module is built for throughput:

* **Packing.** `pack` children train side by side in one `tf.function` step that
  reads each batch once: one trace, one optimizer and one dispatch per step for the
  whole group, and (with TensorFlow's inter-op threads, see `cpu_threads`) the
  children's independent towers run in parallel. On a 2-core CPU, where training is
  compute-bound, this measured 1.3x the children per minute of one child at a time;
  on a GPU it is also what fills the device. Each child has its own weights, its
  own initialisation seed and its own loss; the losses are summed, so their
  gradients are independent, and one Adam optimizer over all weights is the same
  as one Adam per child: packed and solo results are identical.
* **A short proxy.** A few epochs with a cosine-decayed learning rate (which
  settles faster than a constant rate) rank children almost as well as a long
  training; the benchmark `benchmarks/corpus_benchmark.py` measures the ranking
  (Kendall tau against 40-epoch training).
* **Distillation** (optional): the teacher's logits for each batch are computed
  once per packed step and shared by every child in it.
* **Precision.** Children follow the global dtype policy. Under ``mixed_float16``
  (a GPU's default) they compute in float16 with float32 weights and outputs, and
  the step scales the loss (Keras' dynamic `LossScaleOptimizer`); one scale serves
  the group, so a step one child overflows is skipped for all of them, and packed
  results equal solo ones only in float32.
* **Devices.** Under a `tf.distribute` strategy every replica takes a strided share
  of each global batch, gradients are summed across replicas by the optimizer, and
  batch norm is synchronised (`keras_builder.build_model`), so N replicas train the
  children as one device would, up to floating-point order.

* **Inheritance** (``init="inherit"``): each child starts from the teacher's
  weights (`inheritance`: the most important filters of each narrowed layer, the
  centre of each shrunk kernel), its batch-norm statistics are recalibrated on
  ``recalibrate_batches`` training batches, and it is then fine-tuned for
  ``epochs`` (0: recalibration only). ``init="scratch"`` is the paper's recipe:
  random initialisation, ``epochs`` of training.
* **A supernet** (``init="supernet"``, `supernet`): the teacher is trained once, for
  ``epochs``, so that its sub-networks work on their own; a child is then labelled by
  masking that one network (its batch-norm statistics recalibrated on
  ``recalibrate_batches`` batches) without training or building it. ``teacher`` is then
  the trained supernet model (`supernet.train_or_load`), and a child that is not a
  sub-network of it (a removed layer, a kernel that is not a centre) is ``failed``.

A child whose loss becomes NaN or infinite is frozen from that step on (its
gradients are zeroed) and reported as ``diverged``; a child that cannot be built
or trained is reported as ``failed`` with the reason. Neither stops the others.
"""

import contextlib
import dataclasses
import time
import traceback
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

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
from acompress import supernet as supernet_lib

OK, FAILED, DIVERGED = status_lib.OK, status_lib.FAILED, status_lib.DIVERGED
SCRATCH, INHERIT, SUPERNET = "scratch", "inherit", "supernet"
INITS = (SCRATCH, INHERIT, SUPERNET)
# The fields that only an inherited recipe uses: a scratch corpus' metadata leaves them out.
INHERIT_FIELDS = ("init", "importance", "recalibrate_batches")
# The fields that only a supernet recipe uses: other corpora's metadata leaves them out.
SUPERNET_FIELDS = ("supernet_children",)


@dataclasses.dataclass(frozen=True)
class ProxyConfig:
    """The proxy budget children are trained with.

    Attributes:
      epochs: passes over the (proxy) training data (with ``init="inherit"`` it may be 0:
        the label is the inherited child's accuracy after batch-norm recalibration).
      learning_rate: Adam's peak learning rate.
      schedule: "cosine" (decay to 0 over the budget) or "constant".
      pack: children trained together in one traced step (1 = one at a time).
      distill: train against the teacher's soft targets as well as the labels.
      distill_alpha: weight of the hard-label loss when distilling (1 - alpha on the soft one).
      distill_temperature: softmax temperature of the soft targets.
      bn_momentum: batch norm momentum of the children (0.9 settles within a short proxy;
        Keras' 0.99 does not, see keras_builder).
      graph_optimizer: run TensorFlow's graph optimizer (grappler) on each group's traced
        step. None: only when a GPU is visible. On a CPU its rewrites cost more than they
        save over a proxy's few hundred steps (measured on 2 cores: 56 vs 46 children/min,
        identical accuracies); on a GPU its layout and fusion rewrites matter.
      init: "scratch" (random initialisation, the paper's recipe) or "inherit" (the
        teacher's weights, see `inheritance`; needs the trained teacher).
      importance: how an inherited narrowed layer picks the teacher filters it keeps
        ("l1" or "bn_scale", see `inheritance`).
      recalibrate_batches: training batches the batch-norm statistics of an inherited
        child are recomputed on before fine-tuning (0: keep the teacher's).
      supernet_children: ``init="supernet"``: random children trained beside the whole
        network and the smallest child at every supernet step (the sandwich rule). With that
        init, ``epochs``, ``learning_rate`` and ``schedule`` are the supernet's training, which
        every child shares; no child trains on its own.
    """

    epochs: int = 3
    learning_rate: float = 3e-3
    schedule: str = "cosine"
    pack: int = 8
    distill: bool = False
    distill_alpha: float = 0.5
    distill_temperature: float = 4.0
    bn_momentum: float = 0.9
    graph_optimizer: Optional[bool] = None
    init: str = SCRATCH
    importance: str = "l1"
    recalibrate_batches: int = 0
    supernet_children: int = 2

    def __post_init__(self):
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.importance not in inheritance.IMPORTANCES:
            raise ValueError(f"importance must be one of {inheritance.IMPORTANCES}, got {self.importance!r}")
        if self.recalibrate_batches < 0:
            raise ValueError(f"recalibrate_batches must be >= 0, got {self.recalibrate_batches}")
        if self.epochs < (0 if self.init == INHERIT else 1):
            raise ValueError(f"proxy epochs must be >= 1 from scratch or for a supernet (>= 0 inherited), "
                             f"got {self.epochs}")
        if self.init == SUPERNET:
            if self.recalibrate_batches < 1:
                raise ValueError("supernet labels recalibrate each child's batch norm: recalibrate_batches must be "
                                 f">= 1, got {self.recalibrate_batches}")
            if self.importance != "l1":
                raise ValueError(f"a supernet orders its filters by L1 norm: importance must be 'l1', "
                                 f"got {self.importance!r}")
            if self.distill:
                raise ValueError("a supernet distils its children from the whole network already: distill must be "
                                 "off with init='supernet'")
            if self.supernet_children < 0:
                raise ValueError(f"supernet_children must be >= 0, got {self.supernet_children}")
        if self.pack < 1:
            raise ValueError(f"pack must be >= 1, got {self.pack}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise ValueError(f"distill_alpha must be in [0, 1], got {self.distill_alpha}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not self.distill_temperature > 0:
            raise ValueError(f"distill_temperature must be > 0, got {self.distill_temperature}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def recipe(self) -> dict:
        """The fields that change a label (pinned in a corpus' metadata): all but how children
        are packed and traced. A scratch recipe leaves out the inheritance fields, so corpora
        made before inheritance existed keep their metadata (no ``init``: from scratch)."""
        out = {k: v for k, v in self.to_dict().items() if k not in ("pack", "graph_optimizer")}
        if self.init == SCRATCH:
            for key in INHERIT_FIELDS:
                out.pop(key)
        if self.init != SUPERNET:
            for key in SUPERNET_FIELDS:
                out.pop(key)
        return out

    @property
    def needs_teacher(self) -> bool:
        """Whether training with this config needs the trained teacher (distillation or inheritance)."""
        return self.distill or self.init in (INHERIT, SUPERNET)

    @classmethod
    def from_recipe(cls, recipe: dict, **extra) -> "ProxyConfig":
        """The config a stored recipe describes (`recipe` plus `extra`, e.g. pack)."""
        return cls(**{**recipe, **extra})


def corpus_child_epochs(init: str, epochs: int, supernet_children: int, trainings: int) -> int:
    """What `trainings` labels cost in child-epochs: each trains `epochs` epochs. A supernet's labels train
    nothing: the cost is the supernet's own training, each epoch a pass of the whole network and of
    1 + `supernet_children` children, counted at the teacher's size (the labels' masked forward passes are
    not counted; the wall time covers them)."""
    if init == SUPERNET:
        return epochs * (2 + supernet_children)
    return trainings * epochs


@dataclasses.dataclass(frozen=True)
class ChildResult:
    """What training one child produced.

    `train_seconds` is the child's share of its packed group's wall time (build,
    trace, training and evaluation divided equally among the group).
    """

    index: int
    spec: archspec.ArchSpec
    seed: int
    val_accuracy: float
    epochs: int
    train_seconds: float
    status: str
    reason: str = ""


# Under mixed_float16: a child whose gradients are not finite for this many steps in a row,
# while the loss scale halves at every one, is diverged (2^15 halved 64 times is far below 1).
MAX_OVERFLOW_STEPS = 64


def child_seed(seed: int, index: int, replicate: int = 0) -> int:
    """A per-child seed derived from the run seed, stable across packing and sharding."""
    return int(np.random.SeedSequence([seed, index, replicate]).generate_state(1)[0] % (2 ** 31 - 1)) + 1


class _Data(NamedTuple):
    """What every group trains and is scored on."""

    batches: data.EpochBatches
    validation: tf.data.Dataset
    input_shape: Tuple[int, ...]
    num_classes: int
    parent: Optional["_Parent"] = None


class _Parent(NamedTuple):
    """The teacher children inherit from: its spec and its tensors by builder layer name."""

    spec: archspec.ArchSpec
    tensors: dict


def train_children(specs: Sequence[archspec.ArchSpec], indices: Sequence[int], search: data.SearchSplits,
                   config: ProxyConfig, *, batch_size: int, seed: int, replicate: int = 0,
                   teacher: Optional[keras.Model] = None,
                   on_result: Optional[Callable[[List[ChildResult]], None]] = None,
                   strategy: Optional[tf.distribute.Strategy] = None) -> List[ChildResult]:
    """Trains `specs` in packed groups; returns one ChildResult per spec, in order.

    Every group sees the same batches in the same order (`data.EpochBatches` seeded by
    `seed`), so a child's result depends on its spec, index, replicate and the seed
    only: not on its group, its shard, or on what was trained before it.

    Args:
      specs: the children.
      indices: each child's index in the corpus (initialisation seeds derive from it).
      search: the train/validation data (never the test split); children train on its
        training split and are scored on its validation split.
      config: the proxy budget.
      batch_size: examples per training batch.
      seed: the run seed: batch order, augmentation and initialisations derive from it.
      replicate: 0 for the first training of these children, 1.. for repeats with other seeds.
      teacher: the trained teacher, required when `config.distill` or `config.init` is "inherit".
      on_result: called with each finished group's results (for durable storage and progress).
      strategy: a `tf.distribute.Strategy` to train each group under (None: one device). Every
        replica takes its share of each global batch and the gradients are all-reduced, so the
        children are the same models trained on the same batches, split across devices/workers.
    """
    if len(specs) != len(indices):
        raise ValueError(f"{len(specs)} specs but {len(indices)} indices")
    if config.distill and teacher is None:
        raise ValueError("distillation needs the trained teacher")
    if config.init in (INHERIT, SUPERNET) and teacher is None:
        raise ValueError(f"init={config.init!r} needs the trained teacher")
    if config.init in (INHERIT, SUPERNET) and distribution.replicas(strategy) > 1:
        raise ValueError(f"init={config.init!r} is not supported under a multi-replica strategy yet; "
                         "use init='scratch' (--proxy_init=scratch) there")
    if not isinstance(search, data.SearchSplits):
        raise TypeError(f"train_children takes data.SearchSplits (Splits.for_search()), got {type(search).__name__}")
    if config.init == SUPERNET:
        return _label_by_supernet(specs, indices, search, config, batch_size=batch_size, seed=seed,
                                  replicate=replicate, model=teacher, on_result=on_result)
    info = search.info
    parent = None
    if config.init == INHERIT:
        parent = _Parent(*inheritance.source(teacher, info.input_shape, info.num_classes))
    inputs = _Data(data.EpochBatches(search.x_train, search.y_train, batch_size=batch_size, seed=seed,
                                     augment=info.augment),
                   data.make_dataset(search.x_val, search.y_val, batch_size=max(batch_size, 256), training=False),
                   tuple(info.input_shape), info.num_classes, parent)
    results = []
    for start in range(0, len(specs), config.pack):
        group = [(indices[i], specs[i]) for i in range(start, min(start + config.pack, len(specs)))]
        group_results = _train_group_or_each(group, inputs, config, seed, replicate, teacher, strategy)
        results.extend(group_results)
        if on_result is not None:
            on_result(group_results)
    return results


def _label_by_supernet(specs, indices, search: data.SearchSplits, config: ProxyConfig, *, batch_size: int, seed: int,
                       replicate: int, model: keras.Model, on_result) -> List[ChildResult]:
    """Labels from the trained supernet `model`: masks, recalibrated statistics, no training (`supernet`).

    Replicate r recalibrates on the batches of epoch r, so a second label of a child measures
    how much the statistics' batches move it."""
    info = search.info
    net = supernet_lib.load(model, info.input_shape, info.num_classes)
    labeller = supernet_lib.Labeller(net, search, recalibrate_batches=config.recalibrate_batches,
                                     batch_size=batch_size, seed=seed, epoch=replicate)
    results = []
    for start in range(0, len(specs), config.pack):
        group = []
        for i in range(start, min(start + config.pack, len(specs))):
            began = time.perf_counter()
            index, spec = indices[i], specs[i]
            try:
                accuracy, status, reason = labeller.accuracy(spec), OK, ""
            except supernet_lib.NotASubnetwork as error:
                accuracy, status, reason = float("nan"), FAILED, f"NotASubnetwork: {error}"[:500]
                logging.warning("child %d: %s", index, error)
            group.append(ChildResult(index, spec, child_seed(seed, index, replicate), accuracy, 0,
                                     time.perf_counter() - began, status, reason))
        results.extend(group)
        if on_result is not None:
            on_result(group)
    return results


@contextlib.contextmanager
def _graph_optimizer(enabled: Optional[bool]):
    """Turns grappler off for the block (see ProxyConfig.graph_optimizer), then restores it."""
    if enabled is None:
        enabled = bool(tf.config.list_physical_devices("GPU"))
    previous = tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": not enabled})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": previous})


def _train_group_or_each(group, inputs: _Data, config, seed, replicate, teacher, strategy=None):
    try:
        with _graph_optimizer(config.graph_optimizer):
            return _train_group(group, inputs, config, seed, replicate, teacher, strategy)
    except Exception as error:  # noqa: BLE001 - one bad child must not stop the corpus
        if not distribution.isolatable(error, strategy):
            raise
        if len(group) == 1:
            index, spec = group[0]
            logging.warning("child %d failed: %s", index, error)
            logging.debug("%s", traceback.format_exc())
            return [ChildResult(index, spec, child_seed(seed, index, replicate), float("nan"), 0, 0.0, FAILED,
                                f"{type(error).__name__}: {error}"[:500])]
        logging.warning("packed group of %d failed (%s); training its children one by one", len(group), error)
        return [result for member in group
                for result in _train_group_or_each([member], inputs, config, seed, replicate, teacher, strategy)]


def _build_children(group, inputs: _Data, config, seed, replicate):
    models, seeds = [], []
    for index, spec in group:
        child = child_seed(seed, index, replicate)
        keras.utils.set_random_seed(child)
        model = keras_builder.build_model(spec, inputs.input_shape, inputs.num_classes,
                                          bn_momentum=config.bn_momentum, name=f"child_{index}")
        if inputs.parent is not None:
            inheritance.inherit(model, spec, inputs.parent.spec, inputs.parent.tensors, inputs.input_shape,
                                importance=config.importance)
        models.append(keras_builder.logits_model(model))
        seeds.append(child)
    return models, seeds


def _learning_rate(config: ProxyConfig, total_steps: int):
    if config.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, max(1, total_steps))
    return config.learning_rate


def _all_finite(tensors) -> tf.Tensor:
    return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(t)) for t in tensors]))


def _train_group(group, inputs: _Data, config, seed, replicate, teacher, strategy=None):
    start = time.perf_counter()
    distribution.agree(strategy, f"children {[(index, spec.hash) for index, spec in group]} seed {seed} "
                                 f"replicate {replicate}")
    packed = _PackedGroup(group, inputs, config, seed, replicate, teacher, strategy)
    if inputs.parent is not None and config.recalibrate_batches:
        inheritance.recalibrate_batch_norm(packed.models, inputs.batches.for_epoch(0), config.recalibrate_batches)
    died_in_epoch = packed.train()
    accuracy = packed.validation_accuracy()
    seconds = (time.perf_counter() - start) / len(packed.models)
    results = []
    for k, (index, spec) in enumerate(group):
        if died_in_epoch[k] is None and not all(np.isfinite(w).all() for w in packed.models[k].get_weights()):
            died_in_epoch[k] = config.epochs  # e.g. non-finite batch norm statistics
        if died_in_epoch[k] is None:
            results.append(ChildResult(index, spec, packed.seeds[k], float(accuracy[k]), config.epochs, seconds, OK))
        else:
            results.append(ChildResult(index, spec, packed.seeds[k], float("nan"), died_in_epoch[k], seconds,
                                       DIVERGED, "loss, gradients or weights became NaN or infinite"))
    return results


class _PackedGroup:
    """A group of children trained together: one traced step updates every child on the same batch."""

    def __init__(self, group, inputs: _Data, config, seed, replicate, teacher, strategy):
        self.inputs, self.config, self.strategy = inputs, config, strategy
        with distribution.scope(strategy):
            self.models, self.seeds = _build_children(group, inputs, config, seed, replicate)
            optimizer = keras.optimizers.Adam(
                learning_rate=_learning_rate(config, inputs.batches.steps * config.epochs))
            # Children follow the global dtype policy (precision.apply: mixed_float16 on a GPU). float16
            # needs loss scaling: a dynamic loss scale skips a step whose gradients overflow (on any replica).
            self.scaled = keras.mixed_precision.global_policy().compute_dtype == "float16"
            if self.scaled:
                optimizer = distribution.ReplicaSafeLossScaleOptimizer(optimizer)
            self.optimizer = optimizer
            self.variables = [m.trainable_variables for m in self.models]
            self.flat_variables = [v for vs in self.variables for v in vs]
            if config.epochs:  # a label from recalibration alone trains nothing
                optimizer.build(self.flat_variables)
            replicated = {"trainable": False, "synchronization": tf.VariableSynchronization.ON_WRITE,
                          "aggregation": tf.VariableAggregation.ONLY_FIRST_REPLICA}
            self.alive = tf.Variable(tf.ones([len(self.models)], tf.bool), **replicated)
            # Under loss scaling: steps in a row whose gradients were not finite, per child.
            self.overflow_streak = tf.Variable(tf.zeros([len(self.models)], tf.int32), **replicated)
        self.teacher_logits = keras_builder.logits_model(teacher) if config.distill else None
        self.num_replicas = distribution.replicas(strategy)
        self.hard = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def child_loss(self, y, logits, soft_targets, global_batch):
        temperature = self.config.distill_temperature
        if global_batch is None:  # one replica: the batch mean
            loss = self.hard(y, logits)
            soft = None if soft_targets is None else tf.reduce_mean(
                distillation.kl_per_example(soft_targets, logits, temperature))
        else:  # this replica's share of the global batch mean (the replicas' gradients are summed)
            loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
            loss = loss / global_batch
            soft = None if soft_targets is None else tf.reduce_sum(
                distillation.kl_per_example(soft_targets, logits, temperature)) / global_batch
        if soft is None:
            return loss
        return distillation.combine(loss, soft, self.config.distill_alpha, temperature)

    def replica_step(self, x, y):
        global_batch = None
        if self.num_replicas > 1:
            # Every replica holds the global batch and trains on its own strided share.
            global_batch = tf.cast(tf.shape(x)[0], tf.float32)
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            x, y = x[replica::self.num_replicas], y[replica::self.num_replicas]
        soft_targets = None
        if self.teacher_logits is not None:
            soft_targets = distillation.soft_targets(self.teacher_logits(x, training=False),
                                                     self.config.distill_temperature)
        with tf.GradientTape() as tape:
            losses = [self.child_loss(y, tf.cast(m(x, training=True), tf.float32), soft_targets, global_batch)
                      for m in self.models]
            total = tf.add_n(losses)
            if self.scaled:
                total = self.optimizer.scale_loss(total)
        gradients = tape.gradient(total, self.flat_variables)
        per_child = self._mark_the_dead(losses, gradients)
        masked = [tf.where(self.alive[child], gradient, tf.zeros_like(gradient))
                  for child, child_gradients in enumerate(per_child) for gradient in child_gradients]
        self.optimizer.apply(masked, self.flat_variables)  # sums the replicas' gradients under a strategy
        return tf.stack(losses)

    def _mark_the_dead(self, losses, gradients):
        """Updates `alive`; returns the gradients split per child.

        A child stays alive while its loss and all its gradients are finite (on every
        replica); a dead child's gradients are zeroed, so it cannot disturb the optimizer.
        Under loss scaling, gradients that overflow are the scale's business (the step is
        skipped and the scale halved): there a child dies when its loss does, or when its
        gradients stay non-finite for MAX_OVERFLOW_STEPS steps in a row (no scale helps it).
        """
        loss_finite, gradients_finite, per_child, position = [], [], [], 0
        for child, child_vars in enumerate(self.variables):
            child_gradients = gradients[position:position + len(child_vars)]
            position += len(child_vars)
            loss_finite.append(tf.math.is_finite(losses[child]))
            gradients_finite.append(_all_finite(child_gradients))
            per_child.append(child_gradients)
        loss_finite, gradients_finite = tf.stack(loss_finite), tf.stack(gradients_finite)
        if self.num_replicas > 1:  # one verdict for every replica: finite only where finite on all of them
            context = tf.distribute.get_replica_context()
            loss_finite, gradients_finite = [
                tf.equal(context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.logical_not(f), tf.int32)), 0)
                for f in (loss_finite, gradients_finite)]
        if self.scaled:
            streak = tf.where(gradients_finite, tf.zeros_like(self.overflow_streak), self.overflow_streak + 1)
            self.overflow_streak.assign(streak)
            finite = tf.logical_and(loss_finite, streak < MAX_OVERFLOW_STEPS)
        else:
            finite = tf.logical_and(loss_finite, gradients_finite)
        self.alive.assign(tf.logical_and(self.alive, finite))
        return per_child

    def train(self) -> List[Optional[int]]:
        """Trains every child for the config's epochs; the epoch each one died in (None: alive)."""
        strategy = self.strategy

        # One trace per group: the signature leaves the batch size open, so the last,
        # smaller batch of an epoch does not trace the step again.
        @tf.function(input_signature=list(self.inputs.batches.element_spec))
        def train_step(x, y):
            if strategy is None:
                return self.replica_step(x, y)
            return strategy.run(self.replica_step, args=(x, y))

        died_in_epoch = [None] * len(self.models)
        for epoch in range(self.config.epochs):
            for x, y in self.inputs.batches.for_epoch(epoch):
                train_step(x, y)
            for k, is_alive in enumerate(self.alive.numpy()):
                if not is_alive and died_in_epoch[k] is None:
                    died_in_epoch[k] = epoch + 1
        return died_in_epoch

    def validation_accuracy(self) -> np.ndarray:
        """Every child's accuracy on the validation pipeline, in one traced pass per batch."""
        models = self.models

        @tf.function(input_signature=_batch_signature(self.inputs.validation))
        def correct_counts(x, y):
            y = tf.cast(tf.reshape(y, [-1]), tf.int64)
            return tf.stack([tf.reduce_sum(tf.cast(tf.equal(tf.argmax(m(x, training=False), -1), y), tf.int64))
                             for m in models])

        correct = np.zeros(len(models), np.int64)
        total = 0
        for x, y in self.inputs.validation:
            correct += correct_counts(x, y).numpy()
            total += int(tf.shape(x)[0])
        return correct / total


def _batch_signature(dataset: tf.data.Dataset):
    """The (x, y) TensorSpecs of a batched dataset with the batch dimension left open."""
    return [tf.TensorSpec([None, *spec.shape[1:]], spec.dtype) for spec in dataset.element_spec]
