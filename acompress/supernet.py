"""The teacher as a weight-sharing supernet: one training, then a label per child without training it.

Every child of the teacher that keeps its layers (narrower layers, smaller kernels:
the ``teacher`` and ``widths`` search skeletons, ``--p_remove=0`` in the corpus) is a
*sub-network* of the teacher: the same weights with channels and kernel taps masked
out. This module makes that literal, in the spirit of slimmable networks and
once-for-all (Yu et al. 2019; Cai et al. 2020):

* **Ordering.** `ordered` permutes the teacher's filters, layer by layer, into
  decreasing L1 norm (Li et al. 2017), with the matching batch-norm entries and the
  next layer's input channels, so the network computes exactly what it computed.
  A child of width k then keeps a layer's first k filters: the ones L1 inheritance
  would keep from the teacher.
* **Masks.** `Supernet.masks(child)` turns a child spec into one 0/1 channel mask per
  convolution and dense layer (its first k channels) and one kernel mask per
  convolution (the centre k x k taps, only for stride-1 ``same`` convolutions, where
  the centre of a larger kernel computes what the smaller kernel computes). A masked
  forward pass computes what the child built by `keras_builder` computes with the
  same weights: masked channels are zero after the convolution, its batch norm and its
  activation, so the next layer never sees them. A spec that is not such a child
  raises `NotASubnetwork`.
* **Training** (`train`): the sandwich rule with in-place distillation. Each step
  trains the whole network on the labels and, on the same batch, the smallest child
  and ``children_per_step`` random children of a given pool (the corpus' own children)
  against the whole network's predictions. Batch norm normalises with batch statistics
  throughout (each child needs its own statistics, computed when it is labelled).
* **Labels** (`Labeller`): a child's batch-norm statistics are those of the first
  ``recalibrate_batches`` training batches, pooled into one pass (each batch norm
  normalising with them, as in training; `inheritance.recalibrate_batch_norm` averages
  per-batch statistics instead), then its accuracy is counted on the validation split. Both passes are traced once for every child (the
  masks are inputs), so a label costs two forward passes and no graph build.

The trained supernet is a `keras_builder` model of the teacher's spec (filters in
the order above): children can inherit from it like from the teacher, keeping the
first filters of each layer (`inheritance` importance ``"first"``).

Plain convolutional teachers only (conv, batch norm, activation, pooling, flatten,
dense, dropout); a teacher with depthwise, separable or residual blocks raises
`UnsupportedTeacher`.
"""

import dataclasses
import hashlib
import json
import math
import os
import time
from typing import Callable, List, Optional, Sequence, Tuple

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from acompress import archspec
from acompress import data
from acompress import inheritance
from acompress import keras_builder
from acompress import progress

SUPPORTED = ("conv", "bn", "act", "maxpool", "avgpool", "gap", "gmp", "flatten", "dense", "dropout")
MODEL_FILE = "supernet.keras"
INFO_FILE = "supernet.json"


class UnsupportedTeacher(ValueError):
    """The teacher has layers a masked supernet cannot represent."""


class NotASubnetwork(ValueError):
    """A child spec that is not the teacher with narrower layers and smaller kernels."""


def check_teacher(spec: archspec.ArchSpec) -> None:
    """Raises `UnsupportedTeacher` naming the first layer a supernet cannot mask."""
    for index, layer in enumerate(spec):
        if layer.kind not in SUPPORTED:
            raise UnsupportedTeacher(
                f"supernet labels support plain convolutional teachers ({', '.join(SUPPORTED)}); layer {index} of "
                f"the teacher is {layer.kind!r}; use --proxy_init=inherit or --proxy_init=scratch")


# -- ordering ------------------------------------------------------------------------

def ordered(spec: archspec.ArchSpec, tensors: dict, input_shape: Sequence[int]) -> dict:
    """The tensors with every layer's filters in decreasing L1 norm.

    Function-preserving: the permuted network computes what the teacher computes. Ties keep
    the teacher's order. `tensors` are `inheritance.canonical_weights` (builder layer names).
    """
    check_teacher(spec)
    shapes = spec.output_shapes(input_shape)
    out = {name: [np.array(t) for t in value] for name, value in tensors.items()}
    # Which teacher feature each position of what flows between layers holds: channels of a map,
    # or after a flatten the (h, w, c) features.
    current = np.arange(input_shape[-1])
    for index, layer in enumerate(spec):
        name = f"l{index}_{layer.kind}"
        if layer.kind in ("conv", "dense"):
            kernel = out[name][0]
            kernel = kernel[..., current, :] if layer.kind == "conv" else kernel[current]
            order = np.argsort(-inheritance.l1_norms(kernel), kind="stable")
            out[name][0] = kernel[..., order]
            if layer.use_bias:
                out[name][1] = out[name][1][order]
            current = order
        elif layer.kind == "bn":
            out[name] = [t[current] for t in out[name]]
        elif layer.kind == "flatten":
            height, width, channels = shapes[index - 1] if index else tuple(input_shape)
            current = (np.arange(height * width)[:, None] * channels + current[None, :]).ravel()
    head = keras_builder.LOGITS_NAME
    out[head][0] = out[head][0][current]
    return out


# -- masks ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Masks:
    """One child as masks: a 0/1 vector per convolution/dense layer and a k x k tap mask per convolution."""

    channels: Tuple[np.ndarray, ...]
    kernels: Tuple[np.ndarray, ...]


def _same_except_size(child: archspec.Layer, teacher: archspec.Layer) -> bool:
    a, b = child.to_dict(), teacher.to_dict()
    for key in ("filters", "kernel"):
        a.pop(key, None)
        b.pop(key, None)
    return a == b


class Supernet:
    """The masked forward passes of a plain teacher (`keras_builder` model, filters `ordered`)."""

    def __init__(self, model: keras.Model, spec: archspec.ArchSpec, input_shape: Sequence[int], num_classes: int):
        check_teacher(spec)
        self.model, self.spec = model, spec
        self.input_shape, self.num_classes = tuple(input_shape), int(num_classes)
        self.widths = [layer.filters for layer in spec if layer.kind in ("conv", "dense")]
        self.kernel_sizes = [layer.kernel for layer in spec if layer.kind == "conv"]
        names = {layer.name for layer in model.layers}
        self._layers = [self._keras_layers(index, layer, names) for index, layer in enumerate(spec)]
        self._head = model.get_layer(keras_builder.LOGITS_NAME)
        # The channels each batch norm normalises (those of the convolution or dense layer before it).
        self.norm_widths, channels = [], self.input_shape[-1]
        for layer in spec:
            if layer.kind in ("conv", "dense"):
                channels = layer.filters
            elif layer.kind == "bn":
                self.norm_widths.append(channels)
        self.variables = list(model.trainable_variables)

    def _keras_layers(self, index: int, layer: archspec.Layer, names):
        pad = self.model.get_layer(f"l{index}_pad") if f"l{index}_pad" in names else None
        kind = layer.kind
        name = f"l{index}_{layer.activation}" if kind == "act" else f"l{index}_{kind}"
        return pad, self.model.get_layer(name)

    # -- masks of a child
    def masks(self, child: archspec.ArchSpec) -> Masks:
        """The child as masks; raises `NotASubnetwork` when it is not one."""
        if len(child) != len(self.spec):
            raise NotASubnetwork(f"the child has {len(child)} layers, the teacher {len(self.spec)}: "
                                 "a supernet label needs every layer kept (--p_remove=0, --search_skeleton=teacher|widths)")
        channels, kernels = [], []
        for index, (mine, theirs) in enumerate(zip(child, self.spec)):
            if mine.kind != theirs.kind or not _same_except_size(mine, theirs):
                raise NotASubnetwork(f"layer {index} of the child ({mine.kind}) differs from the teacher's "
                                     f"({theirs.kind}) by more than its width and kernel")
            if theirs.kind in ("conv", "dense"):
                if not 1 <= mine.filters <= theirs.filters:
                    raise NotASubnetwork(f"layer {index} of the child has {mine.filters} filters, the teacher "
                                         f"{theirs.filters}")
                vector = np.zeros(theirs.filters, np.float32)
                vector[:mine.filters] = 1.0
                channels.append(vector)
            if theirs.kind == "conv":
                big, small = theirs.kernel, mine.kernel
                if small != big and (small > big or (big - small) % 2 or theirs.stride != 1
                                     or theirs.padding != "same"):
                    raise NotASubnetwork(f"layer {index}: a {small}x{small} kernel is not the centre of the "
                                         f"teacher's {big}x{big} (stride {theirs.stride}, padding {theirs.padding!r})")
                taps = np.zeros((big, big, 1, 1), np.float32)
                offset = (big - small) // 2
                taps[offset:offset + small, offset:offset + small] = 1.0
                kernels.append(taps)
        return Masks(tuple(channels), tuple(kernels))

    def full_masks(self) -> Masks:
        return self.masks(self.spec)

    def signature(self, batch: Optional[int] = None):
        """TensorSpecs of the masks (with a leading child axis of `batch` when given)."""
        lead = () if batch is None else (batch,)
        channels = [tf.TensorSpec((*lead, width), tf.float32) for width in self.widths]
        kernels = [tf.TensorSpec((*lead, size, size, 1, 1), tf.float32) for size in self.kernel_sizes]
        return channels, kernels

    # -- the masked forward pass
    def forward(self, x, channels, kernels, *, training: bool, stats=None, collect: bool = False):
        """Logits of the masked network (and, with `collect`, each batch norm's batch (mean, variance)).

        Batch norm uses the batch's statistics when `stats` is None, else `stats[k]` (mean, variance)
        for the k-th batch norm. Dropout is active only while `training`.
        """
        x = tf.cast(x, tf.float32)
        mask, collected, conv_index, mask_index, norm_index = None, [], 0, 0, 0
        for (pad, layer), spec_layer in zip(self._layers, self.spec):
            kind = spec_layer.kind
            if pad is not None:
                x = pad(x)
            if kind == "conv":
                kernel = layer.kernel * kernels[conv_index]
                padding = "SAME" if layer.padding == "same" else "VALID"
                x = tf.nn.conv2d(x, kernel, strides=spec_layer.stride, padding=padding)
                if layer.use_bias:
                    x = x + layer.bias
                mask = channels[mask_index]
                conv_index, mask_index = conv_index + 1, mask_index + 1
            elif kind == "dense":
                x = tf.matmul(x, layer.kernel)
                if layer.use_bias:
                    x = x + layer.bias
                mask = channels[mask_index]
                mask_index += 1
            elif kind == "bn":
                if stats is None:
                    mean, variance = tf.nn.moments(x, axes=list(range(len(x.shape) - 1)))
                    if collect:
                        collected.append((mean, variance))
                else:
                    mean, variance = stats[norm_index]
                x = tf.nn.batch_normalization(x, mean, variance, layer.beta, layer.gamma, layer.epsilon)
                norm_index += 1
            elif kind == "dropout":
                if training and spec_layer.rate:
                    x = tf.nn.dropout(x, spec_layer.rate)
                continue
            elif kind == "flatten":
                x = layer(x)
                if mask is not None:
                    # Flattening (h, w, c) repeats the channel mask at every position.
                    mask = tf.tile(mask, [x.shape[-1] // mask.shape[-1]])
                continue
            else:
                x = layer(x)
            if mask is not None:
                x = x * mask
        logits = tf.matmul(x, self._head.kernel) + self._head.bias
        return (logits, collected) if collect else logits


# -- training ------------------------------------------------------------------------

def smallest(pool: Sequence[archspec.ArchSpec]) -> archspec.ArchSpec:
    """The elementwise-smallest child of `pool` (each layer at its narrowest width and kernel in the pool)."""
    layers = []
    for position in range(len(pool[0])):
        options = [child[position] for child in pool]
        layer = options[0]
        if layer.kind in ("conv", "dense"):
            layer = layer.replace(filters=min(o.filters for o in options))
        if layer.kind == "conv":
            layer = layer.replace(kernel=min(o.kernel for o in options))
        layers.append(layer)
    return archspec.ArchSpec(layers)


def _stack(masks: Sequence[Masks]) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    channels = [np.stack([m.channels[k] for m in masks]) for k in range(len(masks[0].channels))]
    kernels = [np.stack([m.kernels[k] for m in masks]) for k in range(len(masks[0].kernels))]
    return channels, kernels


def train(net: Supernet, pool: Sequence[archspec.ArchSpec], search: data.SearchSplits, *, epochs: int,
          learning_rate: float, schedule: str, children_per_step: int, batch_size: int, seed: int,
          on_epoch: Optional[Callable[[int, float], None]] = None) -> dict:
    """Trains `net` in place by the sandwich rule (module doc); returns its metrics.

    `pool` is the children the random draws come from (their sub-networks are what gets trained);
    those that are not sub-networks of the teacher are skipped, with a count in the metrics.
    """
    subnetworks, usable = [], []
    for child in pool:
        try:
            usable.append(net.masks(child))
        except NotASubnetwork:
            continue
        subnetworks.append(child)
    if not usable:
        raise NotASubnetwork("none of the pool's children is a sub-network of the teacher")
    small = net.masks(smallest(subnetworks))
    full = net.full_masks()
    batches = data.EpochBatches(search.x_train, search.y_train, batch_size=batch_size, seed=seed,
                                augment=search.info.augment)
    total = max(1, epochs * batches.steps)
    if schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, total)
    else:
        rate = learning_rate
    optimizer = keras.optimizers.Adam(rate)
    count = 1 + children_per_step  # the smallest child and the random ones
    channel_spec, kernel_spec = net.signature(count)
    full_channels = [tf.constant(c) for c in full.channels]
    full_kernels = [tf.constant(k) for k in full.kernels]
    variables = net.variables

    @tf.function(input_signature=[tf.TensorSpec([None, *net.input_shape], tf.float32),
                                  tf.TensorSpec([None], tf.int32), channel_spec, kernel_spec], autograph=False)
    def step(x, y, channels, kernels):
        with tf.GradientTape() as tape:
            logits = net.forward(x, full_channels, full_kernels, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
            soft = tf.stop_gradient(tf.nn.softmax(logits))
            for i in range(count):
                child = net.forward(x, [c[i] for c in channels], [k[i] for k in kernels], training=True)
                loss += tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(soft, child))
        gradients = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        return loss

    rng = np.random.default_rng([seed, 7919])
    start = time.perf_counter()
    bar = progress.Progress(total=total, label="supernet steps", unit="steps")
    losses = []
    for epoch in range(epochs):
        epoch_losses = []
        for x, y in batches.for_epoch(epoch):
            drawn = [small] + [usable[i] for i in rng.integers(len(usable), size=children_per_step)]
            channels, kernels = _stack(drawn)
            epoch_losses.append(float(step(x, y, channels, kernels)))
            bar.update(1)
        losses.append(float(np.mean(epoch_losses)))
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"the supernet's loss became {losses[-1]} in epoch {epoch + 1}; "
                                     "lower --proxy_learning_rate")
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    bar.close()
    return {"epochs": epochs, "steps": epochs * batches.steps, "train_seconds": time.perf_counter() - start,
            "loss_per_epoch": losses, "pool": len(pool), "pool_subnetworks": len(usable),
            "children_per_step": children_per_step, "learning_rate": learning_rate, "schedule": schedule}


# -- labels ----------------------------------------------------------------------------

class Labeller:
    """Validation accuracies of children of a supernet: recalibrated statistics, one trace for all."""

    def __init__(self, net: Supernet, search: data.SearchSplits, *, recalibrate_batches: int, batch_size: int,
                 seed: int, epoch: int = 0):
        if recalibrate_batches < 1:
            raise ValueError("supernet labels need recalibrate_batches >= 1 (each child's batch-norm statistics)")
        self.net = net
        batches = data.EpochBatches(search.x_train, search.y_train, batch_size=batch_size, seed=seed,
                                    augment=search.info.augment)
        # The first batches of `epoch` (the training order children see), as one batch: every child's statistics
        # come from them in one pass (the pooled statistics of those batches, not the mean of each batch's).
        calibration = [x for x, _ in batches.for_epoch(epoch).take(recalibrate_batches)]
        self._calibration = tf.concat(calibration, axis=0)
        self._validation = list(data.make_dataset(search.x_val, search.y_val, batch_size=max(batch_size, 256),
                                                  training=False))
        self._count = len(search.y_val)
        channel_spec, kernel_spec = net.signature()
        image = tf.TensorSpec([None, *net.input_shape], tf.float32)
        stat_spec = [(tf.TensorSpec([width], tf.float32), tf.TensorSpec([width], tf.float32))
                     for width in net.norm_widths]

        # The passes unroll Python loops over the spec: no autograph needed.
        @tf.function(input_signature=[image, channel_spec, kernel_spec], autograph=False)
        def statistics(x, channels, kernels):
            return net.forward(x, channels, kernels, training=False, collect=True)[1]

        @tf.function(input_signature=[image, tf.TensorSpec([None], tf.int32), channel_spec, kernel_spec, stat_spec],
                     autograph=False)
        def correct(x, y, channels, kernels, stats):
            logits = net.forward(x, channels, kernels, training=False, stats=stats)
            return tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y), tf.int32))

        self._statistics, self._correct = statistics, correct

    def accuracy(self, child: archspec.ArchSpec) -> float:
        """The child's validation accuracy (raises `NotASubnetwork`)."""
        masks = self.net.masks(child)
        channels = [tf.constant(c) for c in masks.channels]
        kernels = [tf.constant(k) for k in masks.kernels]
        stats = self._statistics(self._calibration, channels, kernels)
        right = sum(int(self._correct(x, y, channels, kernels, stats)) for x, y in self._validation)
        return right / self._count


# -- the supernet of a run -------------------------------------------------------------

def from_teacher(teacher_model: keras.Model, input_shape: Sequence[int], num_classes: int,
                 bn_momentum: float = 0.9) -> Supernet:
    """A supernet holding the teacher's weights, filters `ordered` (not trained yet)."""
    spec, tensors = inheritance.source(teacher_model, input_shape, num_classes)
    tensors = ordered(spec, tensors, input_shape)  # refuses an unsupported teacher first
    model = keras_builder.build_model(spec, input_shape, num_classes, bn_momentum=bn_momentum, name="supernet")
    for name, value in tensors.items():
        model.get_layer(name).set_weights(value)
    return Supernet(model, spec, input_shape, num_classes)


def load(model: keras.Model, input_shape: Sequence[int], num_classes: int) -> Supernet:
    """The `Supernet` of a trained supernet model (what `train_or_load` returns, or its saved file)."""
    spec = inheritance.source(model, input_shape, num_classes)[0]
    return Supernet(model, spec, input_shape, num_classes)


def corpus_supernet_dir(corpus_dir: str) -> str:
    """Where a supernet corpus keeps the supernet its labels came from."""
    return os.path.join(corpus_dir, "supernet")


def load_trained(directory: str) -> keras.Model:
    """The trained supernet model `train_or_load` saved in `directory`."""
    path = os.path.join(directory, MODEL_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no trained supernet in {directory} (the corpus' labels came from one): "
                                "run the corpus stage again to make it")
    return keras.models.load_model(path)


def _fingerprint(model: keras.Model) -> str:
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(np.asarray(weight, np.float32)).tobytes())
    return digest.hexdigest()[:16]


def train_or_load(directory: str, teacher_model: keras.Model, pool: Sequence[archspec.ArchSpec],
                  search: data.SearchSplits, *, epochs: int, learning_rate: float, schedule: str,
                  children_per_step: int, recalibrate_batches: int, batch_size: int, seed: int) -> keras.Model:
    """The run's trained supernet model: loaded from `directory` when it was made from this teacher with
    these settings, else trained (and saved there). Its batch-norm moving statistics are the whole
    network's, recalibrated, so it also works as a plain teacher-shaped model."""
    info = search.info
    key = {"teacher": _fingerprint(teacher_model), "epochs": epochs, "learning_rate": learning_rate,
           "schedule": schedule, "children_per_step": children_per_step, "batch_size": batch_size, "seed": seed,
           "pool": hashlib.sha256("".join(c.hash for c in pool).encode()).hexdigest()[:16]}
    model_path, info_path = os.path.join(directory, MODEL_FILE), os.path.join(directory, INFO_FILE)
    if os.path.exists(info_path) and os.path.exists(model_path):
        with open(info_path) as f:
            stored = json.load(f)
        if stored.get("key") == key:
            logging.info("supernet: loaded from %s", directory)
            return keras.models.load_model(model_path)
        logging.info("supernet: %s was made with other settings; training again", directory)
    net = from_teacher(teacher_model, info.input_shape, info.num_classes)
    logging.info("supernet: training %d epoch(s), sandwich of the whole network, the smallest child and %d "
                 "random children per step", epochs, children_per_step)
    metrics = train(net, pool, search, epochs=epochs, learning_rate=learning_rate, schedule=schedule,
                    children_per_step=children_per_step, batch_size=batch_size, seed=seed,
                    on_epoch=lambda epoch, loss: logging.info("supernet epoch %d: loss %.4f", epoch + 1, loss))
    batches = data.EpochBatches(search.x_train, search.y_train, batch_size=batch_size, seed=seed,
                                augment=info.augment)
    inheritance.recalibrate_batch_norm([net.model], batches.for_epoch(0), max(1, recalibrate_batches))
    labeller = Labeller(net, search, recalibrate_batches=max(1, recalibrate_batches), batch_size=batch_size,
                        seed=seed)
    metrics["full_val_accuracy"] = labeller.accuracy(net.spec)
    os.makedirs(directory, exist_ok=True)
    net.model.save(model_path)
    with open(info_path, "w") as f:
        json.dump({"key": key, "metrics": metrics}, f, indent=2, sort_keys=True)
    logging.info("supernet: trained in %.0f s; the whole network's validation accuracy %.4f",
                 metrics["train_seconds"], metrics["full_val_accuracy"])
    return net.model
