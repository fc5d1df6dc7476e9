"""Children that start from the teacher's weights.

A child of the sampler is the teacher with units removed, widths shrunk and
kernels shrunk (`sampler`). Every weight it keeps can come from the teacher:

* **Alignment.** `align(teacher, child)` pairs each child unit with the teacher
  unit it came from: the longest order-preserving matching of units of the same
  kind whose stride and padding are equal and whose width and kernel are not
  larger than the teacher's. Ties go to the earliest teacher unit, so a child that
  lost one of two equal convolutions keeps the first (the one that sees the input).
  The alignment works for any child spec, also one the decoder made: a unit with no
  partner is initialised fresh.
* **Narrowed layers** keep the teacher's most important output filters (`importance`:
  ``l1``, the L1 norm of each filter, as in Li et al. 2017; or ``bn_scale``, the
  absolute batch-norm gamma after it, as in network slimming; or ``first``, the
  first filters, for a `supernet` whose filters are already in importance order), in
  the teacher's order, with the matching bias and batch-norm entries. The next layer keeps the
  matching input channels.
* **Shrunk kernels** keep the centre of the teacher's kernel.
* **Removed units.** The layers around a removed unit keep their weights. The
  layer after it now sees other features than in the teacher (its input "source"
  changed); the documented fallback is *positional*: it keeps its teacher weights
  for the first input channels, as far as the shapes allow, and is initialised
  fresh when the child gives it more input channels than the teacher layer had (a
  wider map than it was trained on). The same holds after a ``flatten`` whose map
  size changed (fresh: the flattened features mean other things).
* **Residual blocks.** Mid widths keep the most important filters of the block's
  convolutions. An identity block's output channels are its input channels (the
  shortcut adds them position by position); a projection block chooses its outputs
  by the importance of its last convolution. A block the sampler switched from an
  identity to a projection shortcut gets a fresh projection (the teacher has none).
* **The classifier head** keeps every class; its inputs follow the last layer.

`inherit` returns an `InheritReport`: how many weight tensors came from the
teacher as aligned, positional or fresh, so that callers and tests can see it.

`recalibrate_batch_norm` recomputes batch-norm statistics on training batches
(the mean of the per-batch statistics, in training mode, as in slimmable networks
and EagleEye's adaptive BN): narrowing the layers before a batch norm changes the
distribution it sees, so the teacher's moving statistics no longer fit.

The teacher's tensors are read by the layer names `keras_builder` gives. A loaded
teacher with other names (a user's .keras file, parsed to a spec) is first copied
into the builder's model of its spec, tensor by tensor in order (`canonical_weights`).
"""

import dataclasses
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from acompress import archspec
from acompress import keras_builder
from acompress import keras_parser
from acompress import sampler

IMPORTANCES = ("l1", "bn_scale", "first")
INPUT = -1  # the source of the input image


# -- alignment (pure Python) -------------------------------------------------------
def _compatible(child: archspec.Layer, teacher: archspec.Layer) -> bool:
    if child.kind != teacher.kind:
        return False
    if child.kind in ("conv", "sepconv") + archspec.BLOCKS:
        return (child.stride == teacher.stride and child.padding == teacher.padding
                and child.kernel <= teacher.kernel and child.filters <= teacher.filters)
    if child.kind == "dwconv":
        return child.stride == teacher.stride and child.padding == teacher.padding and child.kernel <= teacher.kernel
    if child.kind == "inverted":
        return (child.stride == teacher.stride and child.activation == teacher.activation
                and child.kernel <= teacher.kernel and child.filters <= teacher.filters
                and (child.expansion == teacher.expansion or 1 < child.expansion < teacher.expansion))
    if child.kind == "dense":
        return child.filters <= teacher.filters
    return child == teacher  # pools, transitions, leading bn/act/dropout


def align(teacher: archspec.ArchSpec, child: archspec.ArchSpec) -> Tuple[Optional[int], ...]:
    """For each unit of `child` (`sampler.units`), the teacher unit it inherits from, or None."""
    child_units, teacher_units = sampler.units(child), sampler.units(teacher)
    n, m = len(child_units), len(teacher_units)
    best = np.zeros((n + 1, m + 1), np.int64)  # best[i, j]: matches of child[i:] with teacher[j:]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            options = [best[i + 1, j], best[i, j + 1]]
            if _compatible(child_units[i].primary, teacher_units[j].primary):
                options.append(best[i + 1, j + 1] + 1)
            best[i, j] = max(options)
    out: List[Optional[int]] = []
    i = j = 0
    while i < n:
        if j < m and _compatible(child_units[i].primary, teacher_units[j].primary) \
                and best[i, j] == best[i + 1, j + 1] + 1:
            out.append(j)
            i, j = i + 1, j + 1
        elif j < m and best[i, j] == best[i, j + 1]:
            j += 1
        else:
            out.append(None)
            i += 1
    return tuple(out)


# -- the teacher's tensors ---------------------------------------------------------
def _weighted_layers(model: keras.Model) -> List[keras.layers.Layer]:
    return [layer for layer in model.layers if layer.weights]


def canonical_weights(model: keras.Model, spec: archspec.ArchSpec, input_shape: Sequence[int],
                      num_classes: int, *, parsed: Optional[keras_parser.Parsed] = None
                      ) -> Dict[str, List[np.ndarray]]:
    """The teacher's tensors keyed by `keras_builder` layer names.

    A model made by `keras_builder.build_model` is read by name. Any other model whose
    spec is `spec` (a parsed .keras teacher, `parsed` if already at hand) is matched
    with the builder's model of `spec` by what each layer does (`Parsed.weighted_layers`),
    and the copy must compute what the model computes (its input preprocessing, if
    any, applied to the copy's input).

    Raises:
      ValueError: the model's weighted layers do not line up with the spec's.
    """
    wanted = keras_builder.weighted_layer_names(spec)
    names = {layer.name for layer in model.layers}
    if all(name in names for name in wanted):
        return {name: [np.asarray(w) for w in model.get_layer(name).get_weights()] for name in wanted}
    return canonical_model(model, spec, input_shape, num_classes, parsed=parsed)[1]


def canonical_model(model: keras.Model, spec: archspec.ArchSpec, input_shape: Sequence[int], num_classes: int,
                    *, parsed: Optional[keras_parser.Parsed] = None
                    ) -> Tuple[keras.Model, Dict[str, List[np.ndarray]]]:
    """(the builder's model of `spec` holding `model`'s weights, those weights by layer name).

    The layers are paired by their roles in the parse (`Parsed.weighted_layers`; `parsed` is
    computed when not given). The returned model takes the inputs after the teacher's
    preprocessing (the package's normalised data), so it is the teacher's body; see
    `canonical_weights`.
    """
    parsed = parsed or keras_parser.parse(model)
    epsilon = parsed.bn_epsilon or 1e-3
    wanted = keras_builder.weighted_layer_names(spec)
    reference = keras_builder.build_model(spec, input_shape, num_classes, name="canonical", bn_epsilon=epsilon)
    given = parsed.weighted_layers
    if len(given) != len(wanted):
        raise ValueError(f"model {model.name!r} has {len(given)} layers with weights, its spec {len(wanted)}")
    out = {}
    for mine_name, theirs in zip(wanted, given):
        mine = reference.get_layer(mine_name)
        tensors = [np.asarray(w) for w in theirs.get_weights()]
        shapes = [tuple(w.shape) for w in mine.get_weights()]
        if [t.shape for t in tensors] != shapes:
            raise ValueError(f"layer {theirs.name!r} of {model.name!r} has weights {[t.shape for t in tensors]}, "
                             f"the spec's {mine.name!r} {shapes}")
        mine.set_weights(tensors)
        out[mine_name] = tensors
    # A last check that the copy computes what the model computes.
    x = np.random.default_rng(0).normal(size=(4, *input_shape)).astype(np.float32)
    x_body = x
    if parsed.preprocessing is not None:
        x_body = ((x - np.asarray(parsed.preprocessing.mean, np.float32))
                  / np.asarray(parsed.preprocessing.std, np.float32))
    difference = float(np.max(np.abs(np.asarray(model(x, training=False), np.float32)
                                     - np.asarray(reference(x_body, training=False), np.float32))))
    if not difference <= 1e-3:
        raise ValueError(f"cannot line up the layers of {model.name!r} with its spec (the copy's outputs differ by "
                         f"{difference:.3g}), so children cannot inherit its weights; give the teacher layer names "
                         f"as acompress.keras_builder makes them, or use --proxy_init=scratch --finalist_init=scratch")
    return reference, out


def source(teacher: keras.Model, input_shape: Sequence[int], num_classes: int
           ) -> Tuple[archspec.ArchSpec, Dict[str, List[np.ndarray]]]:
    """(spec, `canonical_weights`) of a trained teacher model: what `inherit` takes."""
    parsed = keras_parser.parse_fixed(teacher)
    return parsed.spec, canonical_weights(teacher, parsed.spec, input_shape, num_classes, parsed=parsed)


# -- inheritance -------------------------------------------------------------------
@dataclasses.dataclass
class InheritReport:
    """How a child's weight tensors were set.

    Attributes:
      aligned: layers whose tensors are slices of the matching teacher layer, with the
        input channels the child actually receives.
      positional: layers that kept teacher tensors by position after a removed unit
        (the documented fallback).
      fresh: layers left at their random initialisation (no teacher partner, or shapes
        that do not fit).
    """

    aligned: int = 0
    positional: int = 0
    fresh: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class _Channels:
    """The feature map between layers: which teacher unit made it, and which of its channels."""

    source: Optional[int]  # teacher unit index, INPUT, or None (fresh features)
    index: np.ndarray      # the teacher's channel index of each child channel


def l1_norms(kernel: np.ndarray) -> np.ndarray:
    """The L1 norm of each output filter of a kernel (..., out), as Li et al. 2017 rank them."""
    return np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)


def _top(scores: np.ndarray, count: int) -> np.ndarray:
    """The `count` highest-scoring positions, in increasing order (ties: the earlier)."""
    order = np.argsort(-scores, kind="stable")[:count]
    return np.sort(order)


def _crop(kernel: np.ndarray, size: int) -> np.ndarray:
    """The centre `size` x `size` of a (k, k, in, out) kernel."""
    offset = (kernel.shape[0] - size) // 2
    return kernel[offset:offset + size, offset:offset + size]


class _Transfer:
    """Walks a child's units, filling `self.weights` (child layer name -> tensors)."""

    def __init__(self, child: archspec.ArchSpec, teacher: archspec.ArchSpec, tensors, input_shape, importance):
        if importance not in IMPORTANCES:
            raise ValueError(f"importance must be one of {IMPORTANCES}, got {importance!r}")
        self.child, self.teacher, self.tensors, self.importance = child, teacher, tensors, importance
        self.child_shapes = child.output_shapes(input_shape)
        self.teacher_shapes = teacher.output_shapes(input_shape)
        self.teacher_units = sampler.units(teacher)
        self.input_shape = tuple(input_shape)
        self.weights: Dict[str, List[np.ndarray]] = {}
        self.report = InheritReport()
        # The source of the features entering each teacher unit.
        # An identity block keeps its input's channel positions (the shortcut adds them one to one), so
        # it does not start a new source: a child without it still feeds the next layer aligned.
        residual = set(sampler.residual_units(teacher, self.input_shape[-1]))
        self.teacher_residual = [unit.index in residual for unit in self.teacher_units]
        self.child_residual = set(sampler.residual_units(child, self.input_shape[-1]))
        self.teacher_source, source = [], INPUT
        for unit in self.teacher_units:
            self.teacher_source.append(source)
            if unit.primary.out_filters is not None and unit.index not in residual:
                source = unit.index

    # The inputs a teacher layer gets in the child: aligned, positional or None (fresh).
    def _inputs(self, channels: _Channels, expected_source: int, teacher_inputs: int):
        if channels.source is not None and channels.source == expected_source:
            return channels.index, "aligned"
        if len(channels.index) <= teacher_inputs:
            return np.arange(len(channels.index)), "positional"
        return None, "fresh"

    def _in_channels(self, shapes, unit: sampler.Unit) -> int:
        return int(self._map_before(shapes, unit)[-1])

    def _count(self, how: str, layers: int) -> None:
        setattr(self.report, how, getattr(self.report, how) + layers)

    def _scores(self, kernel: np.ndarray, bn_name: Optional[str]) -> np.ndarray:
        if self.importance == "bn_scale" and bn_name is not None:
            return np.abs(self.tensors[bn_name][0])
        if self.importance == "first":  # a supernet's order: its first filters are the ones trained to stand alone
            return -np.arange(kernel.shape[-1], dtype=np.float64)
        return l1_norms(kernel)

    def _conv(self, child_name, teacher_name, size, inputs, outputs, use_bias):
        tensors = self.tensors[teacher_name]
        kernel = _crop(tensors[0], size)[:, :, inputs][..., outputs]
        out = [kernel]
        if use_bias:
            out.append(tensors[1][outputs])
        self.weights[child_name] = out

    def _depthwise(self, child_name, teacher_name, size, channels, use_bias):
        """A depthwise kernel (k, k, C, 1) keeps the given channels (and their biases)."""
        tensors = self.tensors[teacher_name]
        self.weights[child_name] = [_crop(tensors[0], size)[:, :, channels]] + (
            [tensors[1][channels]] if use_bias else [])

    def _bn(self, child_name, teacher_name, outputs):
        self.weights[child_name] = [t[outputs] for t in self.tensors[teacher_name]]

    def run(self) -> Tuple[Dict[str, List[np.ndarray]], InheritReport]:
        channels = _Channels(INPUT, np.arange(self.input_shape[-1]))
        for unit, partner in zip(sampler.units(self.child), align(self.teacher, self.child)):
            channels = self._unit(unit, None if partner is None else self.teacher_units[partner], channels)
        self._head(channels)
        return self.weights, self.report

    def _unit(self, unit: sampler.Unit, teacher_unit: Optional[sampler.Unit], channels: _Channels) -> _Channels:
        layer = unit.primary
        if teacher_unit is None:
            self._count("fresh", self._weighted_count(unit))
            if layer.out_filters is not None:
                return _Channels(None, np.arange(layer.out_filters))
            if layer.kind == "flatten":  # the next layer sees H * W * C features the teacher did not
                return _Channels(None, np.arange(int(np.prod(self._map_before(self.child_shapes, unit)))))
            if layer.kind in archspec.TRANSITIONS:
                return _Channels(None, channels.index)
            return channels
        if layer.kind in ("conv", "dense", "sepconv"):
            return self._conv_or_dense(unit, teacher_unit, channels)
        if layer.kind == "dwconv":
            return self._dwconv(unit, teacher_unit, channels)
        if layer.kind in archspec.BLOCKS:
            return self._block(unit, teacher_unit, channels)
        if layer.kind == "inverted":
            return self._inverted(unit, teacher_unit, channels)
        if layer.kind == "flatten":
            return self._flatten(unit, teacher_unit, channels)
        if layer.kind == "bn":  # a leading batch norm over the input channels
            self._bn(f"l{unit.start}_bn", f"l{teacher_unit.start}_bn", channels.index)
            self._count("aligned", 1)
        return channels  # pools, gap, gmp, leading act / dropout: no weights, same channels

    def _weighted_count(self, unit: sampler.Unit) -> int:
        layers = self.child.layers[unit.start:unit.stop]
        count = sum(1 for layer in layers if layer.kind in ("conv", "dense", "bn", "dwconv", "sepconv"))
        block = unit.primary
        if block.kind in archspec.BLOCKS:
            count += (4 if block.kind == "basic" else 6) + (2 if block.shortcut == "projection" else 0)
        if block.kind == "inverted":
            count += 4 + (2 if block.expansion > 1 else 0)
        return count

    def _bn_after(self, spec: archspec.ArchSpec, unit: sampler.Unit) -> Optional[str]:
        for position in range(unit.start + 1, unit.stop):
            if spec.layers[position].kind == "bn":
                return f"l{position}_bn"
        return None

    def _conv_or_dense(self, unit, teacher_unit, channels: _Channels) -> _Channels:
        layer, teacher_layer = unit.primary, teacher_unit.primary
        suffix = layer.kind
        child_name, teacher_name = f"l{unit.start}_{suffix}", f"l{teacher_unit.start}_{suffix}"
        teacher_bn = self._bn_after(self.teacher, teacher_unit)
        # A separable convolution's pointwise kernel (1, 1, in, out) chooses its filters.
        teacher_kernel = self.tensors[teacher_name][1 if layer.kind == "sepconv" else 0]
        inputs, how = self._inputs(channels, self.teacher_source[teacher_unit.index], teacher_kernel.shape[-2])
        if inputs is None or layer.use_bias != teacher_layer.use_bias:
            self._count("fresh", self._weighted_count(unit))
            return _Channels(None, np.arange(layer.filters))
        outputs = _top(self._scores(teacher_kernel, teacher_bn), layer.filters)
        if layer.kind == "conv":
            self._conv(child_name, teacher_name, layer.kernel, inputs, outputs, layer.use_bias)
        elif layer.kind == "sepconv":
            depthwise, pointwise = self.tensors[teacher_name][:2]
            self.weights[child_name] = [_crop(depthwise, layer.kernel)[:, :, inputs],
                                        pointwise[:, :, inputs][..., outputs]] + (
                [self.tensors[teacher_name][2][outputs]] if layer.use_bias else [])
        else:
            kernel = teacher_kernel[inputs][:, outputs]
            self.weights[child_name] = [kernel] + ([self.tensors[teacher_name][1][outputs]] if layer.use_bias else [])
        self._count(how, 1)
        self._bn_after_unit(unit, teacher_unit, outputs, how)
        return _Channels(teacher_unit.index, outputs)

    def _bn_after_unit(self, unit, teacher_unit, kept: np.ndarray, how: str) -> None:
        """The batch norm of a unit keeps the teacher's entries of the channels the unit kept."""
        child_bn, teacher_bn = self._bn_after(self.child, unit), self._bn_after(self.teacher, teacher_unit)
        if child_bn is None:
            return
        if teacher_bn is None:
            self._count("fresh", 1)
            return
        self._bn(child_bn, teacher_bn, kept)
        self._count(how, 1)

    def _map_before(self, shapes, unit) -> Tuple[int, ...]:
        return tuple(shapes[unit.start - 1]) if unit.start else self.input_shape

    def _flatten(self, unit, teacher_unit, channels: _Channels) -> _Channels:
        child_map = self._map_before(self.child_shapes, unit)
        teacher_map = self._map_before(self.teacher_shapes, teacher_unit)
        if channels.source is None or tuple(child_map[:2]) != tuple(teacher_map[:2]):
            return _Channels(None, np.arange(int(np.prod(child_map))))
        positions = int(child_map[0] * child_map[1])
        index = (np.arange(positions)[:, None] * teacher_map[2] + channels.index[None, :]).ravel()
        return _Channels(channels.source, index)

    def _block(self, unit, teacher_unit, channels: _Channels) -> _Channels:
        layer, teacher_layer = unit.primary, teacher_unit.primary
        child_prefix, teacher_prefix = f"l{unit.start}_block", f"l{teacher_unit.start}_block"
        first = self.tensors[f"{teacher_prefix}_conv1"][0]
        inputs, how = self._inputs(channels, self.teacher_source[teacher_unit.index], first.shape[-2])
        if inputs is None:
            self._count("fresh", self._weighted_count(unit))
            return _Channels(None, np.arange(layer.out_filters))
        kernels = [size for size, _, _ in archspec.block_convs(layer)]
        widths = [filters for _, _, filters in archspec.block_convs(layer)]
        bias = layer.kind == "bottleneck_v1"
        last = self.tensors[f"{teacher_prefix}_conv{len(kernels)}"][0]
        outputs = self._block_outputs(unit, teacher_unit, inputs, last)
        if outputs is None:
            return _Channels(None, np.arange(layer.out_filters))
        current, layers = inputs, 0
        for number, size in enumerate(kernels, start=1):
            conv = self.tensors[f"{teacher_prefix}_conv{number}"][0]
            kept = _top(self._scores(conv, f"{teacher_prefix}_bn{number}"), widths[number - 1]) \
                if number < len(kernels) else outputs
            self._conv(f"{child_prefix}_conv{number}", f"{teacher_prefix}_conv{number}", size, current, kept, bias)
            self._bn(f"{child_prefix}_bn{number}", f"{teacher_prefix}_bn{number}", kept)
            current, layers = kept, layers + 2
        self._count(how, layers)
        if layer.shortcut == "projection":
            if teacher_layer.shortcut == "projection":
                self._conv(f"{child_prefix}_proj_conv", f"{teacher_prefix}_proj_conv", 1, inputs, outputs, bias)
                self._bn(f"{child_prefix}_proj_bn", f"{teacher_prefix}_proj_bn", outputs)
                self._count(how, 2)
            else:
                self._count("fresh", 2)
        return self._block_channels(unit, teacher_unit, channels, how, outputs)

    def _block_outputs(self, unit, teacher_unit, inputs, last) -> Optional[np.ndarray]:
        """The teacher channels a block's last convolution keeps; None (block fresh) when a residual
        child block cannot keep its input's positions."""
        if unit.index in self.child_residual:
            if not self.teacher_residual[teacher_unit.index] or inputs.max(initial=0) >= last.shape[-1]:
                self._count("fresh", self._weighted_count(unit))
                return None
            return inputs
        return _top(self._scores(last, None), unit.primary.out_filters)

    def _block_channels(self, unit, teacher_unit, channels: _Channels, how: str, outputs) -> _Channels:
        if unit.index in self.child_residual:
            # The same positions as its input (aligned only if the input was).
            return _Channels(channels.source if how == "aligned" else None, outputs)
        # A teacher identity block's outputs are its stage's channel positions.
        source = (self.teacher_source[teacher_unit.index] if self.teacher_residual[teacher_unit.index]
                  else teacher_unit.index)
        return _Channels(source, outputs)

    def _dwconv(self, unit, teacher_unit, channels: _Channels) -> _Channels:
        """A depthwise convolution keeps its input's channels: it and its batch norm take those."""
        layer = unit.primary
        teacher_name = f"l{teacher_unit.start}_dwconv"
        inputs, how = self._inputs(channels, self.teacher_source[teacher_unit.index],
                                   self.tensors[teacher_name][0].shape[-2])
        if inputs is None or layer.use_bias != teacher_unit.primary.use_bias:
            self._count("fresh", self._weighted_count(unit))
            return _Channels(None, np.arange(len(channels.index)))
        self._depthwise(f"l{unit.start}_dwconv", teacher_name, layer.kernel, inputs, layer.use_bias)
        self._count(how, 1)
        self._bn_after_unit(unit, teacher_unit, inputs, how)
        return _Channels(channels.source if how == "aligned" else None, inputs)

    def _inverted(self, unit, teacher_unit, channels: _Channels) -> _Channels:
        """An inverted residual block: the most important expanded channels, then the block's outputs."""
        layer, teacher_layer = unit.primary, teacher_unit.primary
        child_prefix, teacher_prefix = f"l{unit.start}_block", f"l{teacher_unit.start}_block"
        teacher_in = self._in_channels(self.teacher_shapes, teacher_unit)
        inputs, how = self._inputs(channels, self.teacher_source[teacher_unit.index], teacher_in)
        if inputs is None or (layer.expansion > 1) != (teacher_layer.expansion > 1):
            self._count("fresh", self._weighted_count(unit))
            return _Channels(None, np.arange(layer.filters))
        project = self.tensors[f"{teacher_prefix}_project"][0]
        outputs = self._block_outputs(unit, teacher_unit, inputs, project)
        if outputs is None:
            return _Channels(None, np.arange(layer.filters))
        wide, layers = inputs, 0
        if layer.expansion > 1:
            expand = self.tensors[f"{teacher_prefix}_expand"][0]
            wide = _top(self._scores(expand, f"{teacher_prefix}_expand_bn"),
                        archspec.inverted_width(layer, len(inputs)))
            self._conv(f"{child_prefix}_expand", f"{teacher_prefix}_expand", 1, inputs, wide, False)
            self._bn(f"{child_prefix}_expand_bn", f"{teacher_prefix}_expand_bn", wide)
            layers += 2
        self._depthwise(f"{child_prefix}_dwconv", f"{teacher_prefix}_dwconv", layer.kernel, wide, False)
        self._bn(f"{child_prefix}_dw_bn", f"{teacher_prefix}_dw_bn", wide)
        self._conv(f"{child_prefix}_project", f"{teacher_prefix}_project", 1, wide, outputs, False)
        self._bn(f"{child_prefix}_project_bn", f"{teacher_prefix}_project_bn", outputs)
        self._count(how, layers + 4)
        return self._block_channels(unit, teacher_unit, channels, how, outputs)

    def _head(self, channels: _Channels) -> None:
        teacher_kernel, teacher_bias = self.tensors[keras_builder.LOGITS_NAME]
        last = INPUT  # the source of the features the teacher's head sees
        for unit, residual in zip(self.teacher_units, self.teacher_residual):
            if unit.primary.out_filters is not None and not residual:
                last = unit.index
        inputs, how = self._inputs(channels, last, teacher_kernel.shape[0])
        if inputs is None:
            self._count("fresh", 1)
            return
        self.weights[keras_builder.LOGITS_NAME] = [teacher_kernel[inputs], teacher_bias]
        self._count(how, 1)


def inherit(child_model: keras.Model, child: archspec.ArchSpec, teacher: archspec.ArchSpec,
            teacher_tensors: Dict[str, List[np.ndarray]], input_shape: Sequence[int], *,
            importance: str = "l1") -> InheritReport:
    """Sets `child_model`'s weights (built by `keras_builder.build_model(child, ...)`) from the teacher's.

    Args:
      child_model: the child, freshly built; layers without a teacher partner keep their
        initialisation.
      child, teacher: the two specs.
      teacher_tensors: `canonical_weights` of the trained teacher.
      input_shape: the data's (height, width, channels).
      importance: how narrowed layers choose the teacher filters they keep (`IMPORTANCES`).
    """
    weights, report = _Transfer(child, teacher, teacher_tensors, input_shape, importance).run()
    for name, tensors in weights.items():
        child_model.get_layer(name).set_weights(tensors)
    return report


# -- batch-norm recalibration ---------------------------------------------------------
def _batch_norms(models: Iterable[keras.Model]) -> List[keras.layers.BatchNormalization]:
    return [layer for model in models for layer in model._flatten_layers()  # pylint: disable=protected-access
            if isinstance(layer, keras.layers.BatchNormalization)]


def recalibrate_batch_norm(models: Sequence[keras.Model], batches: Iterable, max_batches: int) -> int:
    """Sets every batch norm's moving statistics to the mean of its batch statistics.

    The models run in training mode (each batch norm normalises with the batch's own
    statistics, as in training) over at most `max_batches` of `batches` ((x, y) pairs;
    y is ignored); each batch norm then keeps the average of the means and variances it
    saw. Several models (a packed group) share one traced forward pass.

    Returns:
      The number of batches used.
    """
    norms = _batch_norms(models)
    if not norms or max_batches < 1:
        return 0
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.momentum = 0.0  # the moving statistics become the last batch's

    @tf.function
    def forward(x):
        for model in models:
            model(x, training=True)

    sums = [np.zeros(norm.moving_mean.shape, np.float64) for norm in norms]
    squares = [np.zeros(norm.moving_variance.shape, np.float64) for norm in norms]
    used = 0
    try:
        for x, _ in batches:
            if used == max_batches:
                break
            forward(x)
            for k, norm in enumerate(norms):
                sums[k] += np.asarray(norm.moving_mean, np.float64)
                squares[k] += np.asarray(norm.moving_variance, np.float64)
            used += 1
        if used:
            for k, norm in enumerate(norms):
                norm.moving_mean.assign((sums[k] / used).astype(np.float32))
                norm.moving_variance.assign((squares[k] / used).astype(np.float32))
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
    return used
