"""Reads a Keras CNN classifier back into an `archspec.ArchSpec`.

`parse_model` accepts Sequential and functional models (nested single-input
models are inlined) with one image input in channels-last layout and one output.
It walks the graph backwards from the output, so only layers that feed the output
count, and it never looks at layer names.

Layers understood, and the spec layers they become:

* ``InputLayer``: the (height, width, channels) input; nothing in the spec.
* ``Conv2D`` -> ``conv`` (square kernel and stride, ``same``/``valid`` padding, no
  dilation, one group), ``Dense`` -> ``dense`` (on a flat input). A fused activation
  becomes a following ``act`` layer; ``linear`` adds nothing.
* ``BatchNormalization`` over the channel axis with ``center`` and ``scale`` ->
  ``bn`` (momentum and epsilon are training details and are not kept).
* ``Activation`` (relu, relu6, elu, selu, gelu, swish/silu, tanh, sigmoid; linear is
  skipped) and ``ReLU`` (default arguments -> relu, ``max_value=6`` -> relu6) -> ``act``.
* ``MaxPooling2D``/``AveragePooling2D`` -> ``maxpool``/``avgpool``;
  ``GlobalAveragePooling2D``/``GlobalMaxPooling2D`` (``keepdims=False``) ->
  ``gap``/``gmp``; ``Flatten`` -> ``flatten``; ``Dropout`` -> ``dropout`` (rate 0 is
  skipped: it does nothing).
* ``DepthwiseConv2D`` -> ``dwconv`` and ``SeparableConv2D`` -> ``sepconv`` (depth
  multiplier 1, no dilation).
* ``ZeroPadding2D`` must be followed by a ``valid`` convolution or pooling, which it
  joins: when it pads exactly as TensorFlow's ``same`` does for that input size
  (MobileNetV2's ``correct_pad`` before a strided depthwise convolution) a
  convolution becomes ``padding="same"``; otherwise an equal padding p on every
  side becomes ``padding=p`` (ResNet50's stem). Other paddings are refused.
* ``Add`` of two branches followed by a ReLU -> a ``basic``, ``bottleneck`` or
  ``bottleneck_v1`` block; ``Add`` of MobileNetV2's linear bottleneck and its input
  (no ReLU after it) -> an ``inverted`` block. The same inverted block without the
  ``Add`` (a strided one, or one that changes the width) is recognised from its
  layers: [conv1x1(e)-BN-act]-depthwise(k, s, same)-BN-act-conv1x1-BN not followed
  by an activation, with ``e`` a multiple of the input channels.
* ``Rescaling`` and ``Normalization`` layers at the very start of the model are its
  input preprocessing, not part of the spec: `parse` returns them as one
  per-channel affine map (`Parsed.preprocessing`), which the package applies to
  the data instead (and puts back in front of exported networks). Anywhere else
  they are refused.

Residual blocks are found without names. Walking back from an ``Add``, each of
its two inputs is followed through single-input layers until a layer with several
inputs (or the model input) stops it; the first tensor on the first chain that also
lies on the second is the fork, the block's input. The layers between the fork and
each ``Add`` input are converted like any other layers and compared with the
templates that `archspec` documents: the longer branch must be conv(k, s)-BN-ReLU-
conv(k)-BN (basic) or conv1x1(f)-BN-ReLU-conv(k, s)(f)-BN-ReLU-conv1x1(4f)-BN
(bottleneck), all convolutions without bias and with ``same`` padding (``valid``
is accepted for 1x1 ones, where it is the same thing); the other branch must be
empty (identity) or a 1x1 stride-s convolution without bias to the block's output
width plus batch norm (projection). The ``Add`` must be followed by a ReLU, which
the block absorbs.

A ``bottleneck_v1`` block is ResNet v1's as ``keras.applications`` builds it:
conv1x1(f, s)-BN-ReLU-conv(k)(f)-BN-ReLU-conv1x1(4f)-BN with biases, the projection
shortcut a 1x1 stride-s convolution with bias plus batch norm.

The classifier head is removed: the model must end in ``Dense(num_classes)`` with
a bias and either a softmax (fused, or as a following ``Activation("softmax")`` or
``Softmax`` layer) or no activation (a logits model). Anything else raises
`UnsupportedModelError`, a ``ValueError`` whose message names the layer, its type
and what is supported. As a last check, when the input shape is known every spec
layer's exact parameter count must equal that of the Keras layers it came from.
"""

import dataclasses
import math
import os
from typing import List, Optional, Sequence, Tuple

import keras
import numpy as np

from acompress import archspec
from acompress import keras_builder

SUPPORTED_LAYERS = ("InputLayer, Conv2D, DepthwiseConv2D, SeparableConv2D, Dense, BatchNormalization, "
                    "Activation, ReLU, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D, "
                    "Flatten, Dropout, ZeroPadding2D before a 'valid' convolution or pooling, Rescaling and "
                    "Normalization as the model's first layers, and Add inside basic/bottleneck/bottleneck_v1/"
                    "inverted residual blocks")
BLOCK_TEMPLATES = ("a basic block conv(k,s)-BN-ReLU-conv(k)-BN or a bottleneck block "
                   "conv1x1(f)-BN-ReLU-conv(k,s)(f)-BN-ReLU-conv1x1(4f)-BN (convolutions without bias, "
                   "'same' padding), or Keras' ResNet v1 bottleneck conv1x1(f,s)-BN-ReLU-conv(k)(f)-BN-ReLU-"
                   "conv1x1(4f)-BN (convolutions with bias), added to an identity shortcut or a projection "
                   "shortcut (1x1 stride-s convolution, then BatchNormalization), then ReLU; or MobileNetV2's "
                   "inverted residual [conv1x1(e)-BN-act]-DepthwiseConv2D(k)-BN-act-conv1x1(c)-BN added to "
                   "its c-channel input, with no activation after the Add")
HEAD = ("a final Dense(num_classes) with bias and a softmax (fused, or as a following Activation('softmax') "
        "or Softmax layer) or no activation")

# Keras' serialized activation name -> archspec activation.
_ACTIVATIONS = {name: name for name in archspec.ACTIVATIONS}
_ACTIVATIONS["silu"] = "swish"
_ACTIVATIONS["hard_silu"] = "hard_swish"


class UnsupportedModelError(ValueError):
    """A Keras model that cannot be written as an ArchSpec.

    Attributes:
      layer_name: name of the offending layer (or model), if any.
      layer_type: its class name, if any.
    """

    def __init__(self, message: str, layer_name: Optional[str] = None, layer_type: Optional[str] = None):
        self.layer_name = layer_name
        self.layer_type = layer_type
        if layer_name is not None:
            message = f"layer {layer_name!r} ({layer_type}): {message}"
        super().__init__(message)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """A model's input preprocessing (its leading Rescaling/Normalization layers) as one
    per-channel map ``(x - mean) / std``: the form `data.DataConfig.normalise` takes."""

    mean: Tuple[float, ...]
    std: Tuple[float, ...]

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}


@dataclasses.dataclass(frozen=True)
class Parsed:
    """What `parse` reads from a Keras classifier.

    Attributes:
      spec: the body's architecture (the head is implicit).
      input_shape: (height, width, channels), or None when not fully defined.
      num_classes: units of the classifier head.
      preprocessing: the leading Rescaling/Normalization layers as one affine map, or None.
      preprocessing_layers: those layers' names, in order.
      bn_epsilon: the epsilon every batch norm of the model uses, or None (no batch norm, or several).
      weighted_layers: the model's layers with weights (nested models' too), in the order in which
        `keras_builder` makes the spec's (spec layer by spec layer; in a block the main path,
        then the shortcut), so weights can be copied between the two one to one.
    """

    spec: archspec.ArchSpec
    input_shape: Optional[Tuple[int, int, int]]
    num_classes: int
    preprocessing: Optional[Preprocessing] = None
    preprocessing_layers: Tuple[str, ...] = ()
    bn_epsilon: Optional[float] = None
    weighted_layers: Tuple[keras.layers.Layer, ...] = ()


def parse(model: keras.Model) -> Parsed:
    """Everything this package reads from a Keras classifier (see `Parsed`).

    Raises:
      UnsupportedModelError: the model uses a layer, setting or topology that the
        spec cannot express; the message names the layer.
    """
    return _parse(model)


def parse_model(model: keras.Model) -> archspec.ArchSpec:
    """The ArchSpec of a Keras classifier (its body; the head is implicit).

    Raises:
      UnsupportedModelError: the model uses a layer, setting or topology that the
        spec cannot express; the message names the layer.
    """
    return _parse(model).spec


def describe_model(model: keras.Model) -> Tuple[archspec.ArchSpec, Tuple[int, int, int], int]:
    """(spec, input_shape, num_classes) of a Keras classifier with a fixed input size.

    Raises:
      UnsupportedModelError: as `parse_model`, or the input height/width is not fixed.
    """
    parsed = parse_fixed(model)
    return parsed.spec, parsed.input_shape, parsed.num_classes


def parse_fixed(model: keras.Model) -> Parsed:
    """`parse`, for a classifier whose input size must be fixed (``Parsed.input_shape`` is set).

    Raises:
      UnsupportedModelError: as `parse`, or the input height/width is not fixed.
    """
    parsed = _parse(model)
    if parsed.input_shape is None:
        layer, _ = keras_builder.producer(model.inputs[0])
        raise UnsupportedModelError(f"input shape {tuple(model.inputs[0].shape[1:])} is not fully defined; "
                                    "supported: a fixed (height, width, channels) input", layer.name,
                                    type(layer).__name__)
    return parsed


def load_keras_model(path, custom_objects: Optional[dict] = None) -> keras.Model:
    """Loads a ``.keras`` (or legacy ``.h5``) model with ``safe_mode=True``, uncompiled.

    Raises:
      FileNotFoundError: nothing exists at `path` (the message names it).
      ValueError: the file exists but Keras cannot read it (the message names it and
        gives Keras' reason).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no Keras model at {path!r}: the file does not exist")
    try:
        return keras.saving.load_model(path, custom_objects=custom_objects, compile=False, safe_mode=True)
    except Exception as error:  # pylint: disable=broad-except  # Keras raises many types here.
        raise ValueError(f"cannot load a Keras model from {path!r} (expected a .keras or .h5 file "
                         f"saved by model.save): {type(error).__name__}: {error}") from error


# -- graph walking -------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Step:
    """One call of a single-input layer in the walked graph."""

    layer: keras.layers.Layer
    input: object  # the KerasTensor it was called on


@dataclasses.dataclass(frozen=True)
class _Block:
    """An Add and the steps of its two branches, from the fork to the Add (forward order)."""

    add: keras.layers.Layer
    fork: object  # the KerasTensor both branches start from
    branches: Tuple[List[_Step], List[_Step]]


def _type(operation) -> str:
    return type(operation).__name__


def _unsupported(operation, problem: str) -> UnsupportedModelError:
    return UnsupportedModelError(problem, operation.name, _type(operation))


def _model_io(model):
    """The single input and output tensors of a Sequential or functional model."""
    try:
        inputs, outputs = model.inputs, model.outputs
    except AttributeError:
        inputs = outputs = None
    if not inputs or not outputs:
        raise UnsupportedModelError("the model has no symbolic inputs/outputs (a subclassed model, or a "
                                    "Sequential model without an Input); supported: Sequential and functional "
                                    "models built on a keras.Input", model.name, _type(model))
    if len(inputs) != 1:
        names = ", ".join(f"{keras_builder.producer(t)[0].name!r}" for t in inputs)
        raise UnsupportedModelError(f"the model has {len(inputs)} inputs ({names}); supported: one image input",
                                    model.name, _type(model))
    if len(outputs) != 1:
        raise UnsupportedModelError(f"the model has {len(outputs)} outputs; supported: one classifier output",
                                    model.name, _type(model))
    return inputs[0], outputs[0]


def _walk(model) -> list:
    """The layers (and _Blocks) from the model's input to its output, in forward order."""
    _, output = _model_io(model)
    backward = []
    tensor = output
    while True:
        operation, inputs = keras_builder.producer(tensor)
        if isinstance(operation, keras.layers.InputLayer):
            return backward[::-1]
        if isinstance(operation, keras.Model):
            backward.extend(reversed(_walk(operation)))  # a nested model: inline its layers
            tensor = inputs[0]
            continue
        if isinstance(operation, keras.layers.Add):
            block = _find_block(operation, inputs)
            backward.append(block)
            tensor = block.fork
            continue
        if len(inputs) != 1:
            raise _unsupported(operation, f"it combines {len(inputs)} tensors; supported: {SUPPORTED_LAYERS} "
                                          "(the only layer with several inputs is Add in a residual block)")
        backward.append(_Step(operation, inputs[0]))
        tensor = inputs[0]


def _chain(tensor):
    """Tensors and layers going back from `tensor` through single-input layers.

    Returns (tensors, steps): tensors[0] is `tensor`, steps[i] produced tensors[i]
    from tensors[i + 1]; the chain stops at the model input or a multi-input layer.
    """
    tensors, steps = [tensor], []
    while True:
        operation, inputs = keras_builder.producer(tensor)
        if (isinstance(operation, (keras.layers.InputLayer, keras.Model, keras.layers.Add))
                or len(inputs) != 1):
            return tensors, steps
        steps.append(_Step(operation, inputs[0]))
        tensor = inputs[0]
        tensors.append(tensor)


def _find_block(add, inputs) -> _Block:
    if len(inputs) != 2:
        raise _unsupported(add, f"it adds {len(inputs)} tensors; supported: {BLOCK_TEMPLATES}")
    (tensors_a, layers_a), (tensors_b, layers_b) = _chain(inputs[0]), _chain(inputs[1])
    on_b = {id(t): i for i, t in enumerate(tensors_b)}
    for i, tensor in enumerate(tensors_a):
        if id(tensor) in on_b:
            j = on_b[id(tensor)]
            return _Block(add, tensor, (layers_a[:i][::-1], layers_b[:j][::-1]))
    raise _unsupported(add, "its two inputs do not branch from one tensor through single-input layers; "
                            f"supported: {BLOCK_TEMPLATES}")


# -- layer conversion ----------------------------------------------------------
def _square(operation, value, what: str) -> int:
    value = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(value) != 2 or value[0] != value[1]:
        raise _unsupported(operation, f"{what} {value} is not square; supported: equal height and width")
    return int(value[0])


def _channels_last(operation) -> None:
    data_format = getattr(operation, "data_format", "channels_last")
    if data_format != "channels_last":
        raise _unsupported(operation, f"data_format {data_format!r}; supported: channels_last")


def _rank(tensor) -> int:
    return len(tensor.shape)


def _activation(operation, function) -> Optional[str]:
    """The archspec activation of a Keras activation function; None for linear."""
    name = keras_builder.activation_name(function)
    if name == "linear":
        return None
    if not isinstance(name, str) or name not in _ACTIVATIONS:
        raise _unsupported(operation, f"activation {name!r}; supported: linear, "
                                      f"{', '.join(archspec.ACTIVATIONS)} (swish is Keras' silu)")
    return _ACTIVATIONS[name]


def _with_activation(operation, layer: archspec.Layer) -> List[archspec.Layer]:
    activation = _activation(operation, operation.activation)
    return [layer] if activation is None else [layer, archspec.act(activation)]


def _padding(operation) -> str:
    padding = operation.padding.lower()
    if padding not in archspec.PADDINGS:
        raise _unsupported(operation, f"padding {padding!r}; supported: {', '.join(archspec.PADDINGS)}")
    return padding


def _window_settings(operation) -> Tuple[int, int, str]:
    """(kernel, stride, padding) of a convolution; refuses what the spec cannot say."""
    _channels_last(operation)
    if tuple(operation.dilation_rate) != (1, 1):
        raise _unsupported(operation, f"dilation_rate {tuple(operation.dilation_rate)}; supported: dilation_rate=1")
    if getattr(operation, "depth_multiplier", 1) != 1:
        raise _unsupported(operation, f"depth_multiplier={operation.depth_multiplier}; supported: 1")
    return (_square(operation, operation.kernel_size, "kernel_size"),
            _square(operation, operation.strides, "strides"), _padding(operation))


def _conv2d(operation, rank: int) -> List[archspec.Layer]:
    kernel, stride, padding = _window_settings(operation)
    if operation.groups != 1:
        raise _unsupported(operation, f"groups={operation.groups}; supported: groups=1")
    return _with_activation(operation, archspec.conv(operation.filters, kernel, stride, padding,
                                                     bool(operation.use_bias)))


def _depthwise(operation, rank: int) -> List[archspec.Layer]:
    kernel, stride, padding = _window_settings(operation)
    return _with_activation(operation, archspec.dwconv(kernel, stride, padding, bool(operation.use_bias)))


def _separable(operation, rank: int) -> List[archspec.Layer]:
    kernel, stride, padding = _window_settings(operation)
    return _with_activation(operation, archspec.sepconv(operation.filters, kernel, stride, padding,
                                                        bool(operation.use_bias)))


def _preprocessing_elsewhere(operation, rank: int) -> List[archspec.Layer]:
    raise _unsupported(operation, "Rescaling and Normalization are supported only as the model's first layers "
                                  "(its input preprocessing), not between other layers")


def _padding_alone(operation, rank: int) -> List[archspec.Layer]:
    raise _unsupported(operation, "ZeroPadding2D is supported only right before a Conv2D, DepthwiseConv2D, "
                                  "SeparableConv2D, MaxPooling2D or AveragePooling2D with padding='valid'")


def _dense(operation, rank: int) -> List[archspec.Layer]:
    if rank != 2:
        raise _unsupported(operation, f"it is applied to a rank-{rank} tensor; supported: Dense on a flat "
                                      "input (after Flatten or global pooling)")
    return _with_activation(operation, archspec.dense(operation.units, bool(operation.use_bias)))


def _batch_norm(operation, rank: int) -> List[archspec.Layer]:
    if operation.axis not in (-1, rank - 1):
        raise _unsupported(operation, f"axis={operation.axis}; supported: the channel axis (-1)")
    if not (operation.center and operation.scale):
        raise _unsupported(operation, f"center={operation.center}, scale={operation.scale}; "
                                      "supported: center=True and scale=True")
    return [archspec.bn()]


def _activation_layer(operation, rank: int) -> List[archspec.Layer]:
    activation = _activation(operation, operation.activation)
    return [] if activation is None else [archspec.act(activation)]


def _relu(operation, rank: int) -> List[archspec.Layer]:
    settings = (operation.max_value, float(operation.negative_slope), float(operation.threshold))
    if settings == (None, 0.0, 0.0):
        return [archspec.act("relu")]
    if settings[0] is not None and float(settings[0]) == 6.0 and settings[1:] == (0.0, 0.0):
        return [archspec.act("relu6")]
    raise _unsupported(operation, f"max_value={operation.max_value}, negative_slope="
                                  f"{operation.negative_slope}, threshold={operation.threshold}; supported: "
                                  "ReLU() (relu) and ReLU(max_value=6) (relu6)")


def _pooling(make):
    def convert(operation, rank: int) -> List[archspec.Layer]:
        _channels_last(operation)
        return [make(_square(operation, operation.pool_size, "pool_size"),
                     _square(operation, operation.strides, "strides"), _padding(operation))]
    return convert


def _global_pooling(make):
    def convert(operation, rank: int) -> List[archspec.Layer]:
        _channels_last(operation)
        if operation.keepdims:
            raise _unsupported(operation, "keepdims=True; supported: keepdims=False")
        return [make()]
    return convert


def _flatten(operation, rank: int) -> List[archspec.Layer]:
    if rank != 4:
        raise _unsupported(operation, f"it flattens a rank-{rank} tensor; supported: Flatten of the "
                                      "(batch, height, width, channels) feature map, once")
    _channels_last(operation)
    return [archspec.flatten()]


def _dropout(operation, rank: int) -> List[archspec.Layer]:
    if operation.noise_shape is not None:
        raise _unsupported(operation, f"noise_shape={operation.noise_shape}; supported: None")
    rate = float(operation.rate)
    return [] if rate == 0.0 else [archspec.dropout(rate)]


# Keras layer type -> converter(operation, input rank) -> the spec layers it becomes (none for identities).
_CONVERTERS = {
    keras.layers.Conv2D: _conv2d,
    keras.layers.DepthwiseConv2D: _depthwise,
    keras.layers.SeparableConv2D: _separable,
    keras.layers.Rescaling: _preprocessing_elsewhere,
    keras.layers.Normalization: _preprocessing_elsewhere,
    keras.layers.ZeroPadding2D: _padding_alone,
    keras.layers.Dense: _dense,
    keras.layers.BatchNormalization: _batch_norm,
    keras.layers.Activation: _activation_layer,
    keras.layers.ReLU: _relu,
    keras.layers.MaxPooling2D: _pooling(archspec.maxpool),
    keras.layers.AveragePooling2D: _pooling(archspec.avgpool),
    keras.layers.GlobalAveragePooling2D: _global_pooling(archspec.gap),
    keras.layers.GlobalMaxPooling2D: _global_pooling(archspec.gmp),
    keras.layers.Flatten: _flatten,
    keras.layers.Dropout: _dropout,
}


_WINDOW_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D,
                 keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)
_PREPROCESSING_TYPES = (keras.layers.Rescaling, keras.layers.Normalization)


def _convert(operation, input_tensor) -> List[archspec.Layer]:
    """The spec layers one Keras layer becomes (none for identity layers)."""
    converter = _CONVERTERS.get(type(operation))
    if converter is None:
        raise _unsupported(operation, f"this layer type is not supported; supported: {SUPPORTED_LAYERS}")
    return converter(operation, _rank(input_tensor))


def _same_pads(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    """(before, after) zero padding of TensorFlow's 'same' window along one axis."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _padded(pad_step: _Step, following: Optional[_Step]) -> List[archspec.Layer]:
    """The spec layers of a ZeroPadding2D and the valid window it feeds (see the module docstring)."""
    pad = pad_step.layer
    _channels_last(pad)
    if (following is None or type(following.layer) not in _WINDOW_TYPES
            or following.layer.padding.lower() != "valid"):
        return _padding_alone(pad, 4)
    (top, bottom), (left, right) = (tuple(int(v) for v in side) for side in pad.padding)
    converted = _convert(following.layer, following.input)
    window = converted[0]
    height, width = pad_step.input.shape[1:3]
    if top == bottom == left == right:
        padding = "valid" if top == 0 else top
    else:
        padding = None
    if (window.kind in ("conv", "dwconv", "sepconv") and isinstance(height, int) and isinstance(width, int)
            and (top, bottom) == _same_pads(height, window.kernel, window.stride)
            and (left, right) == _same_pads(width, window.kernel, window.stride)):
        padding = "same"
    if padding is None:
        raise _unsupported(pad, f"padding {((top, bottom), (left, right))} before {following.layer.name!r}; "
                                "supported: the same padding on every side, or exactly TensorFlow's 'same' "
                                "padding before a convolution")
    return [window.replace(padding=padding)] + converted[1:]


def _convert_steps(steps: Sequence[_Step]) -> Tuple[List[archspec.Layer], List[List[keras.layers.Layer]]]:
    """Spec layers for a run of single-input layers, and the Keras layers each came from."""
    layers: List[archspec.Layer] = []
    sources: List[List[keras.layers.Layer]] = []
    position = 0
    while position < len(steps):
        step = steps[position]
        if type(step.layer) is keras.layers.ZeroPadding2D:  # pylint: disable=unidiomatic-typecheck
            following = steps[position + 1] if position + 1 < len(steps) else None
            converted, used = _padded(step, following), [step.layer, following.layer]
            position += 2
        else:
            converted, used = _convert(step.layer, step.input), [step.layer]
            position += 1
        layers.extend(converted)
        sources.extend([used] * len(converted))
    return layers, sources


def _match_block(block: _Block) -> Tuple[archspec.Layer, bool, int]:
    """(the block spec layer that a found block is, whether a ReLU after the Add belongs to it,
    which of the block's two branches is the main path)."""
    channels = block.fork.shape[-1]
    converted = []
    for branch in block.branches:
        layers = _convert_steps(branch)[0]
        # A 1x1 convolution computes the same thing with 'valid' or 'same' padding.
        converted.append([layer.replace(padding="same") if layer.kind == "conv" and layer.kernel == 1
                          else layer for layer in layers])
    for main_index, (main, shortcut) in enumerate((converted, converted[::-1])):
        inverted = _inverted_template(main, channels)
        if inverted is not None and not shortcut and inverted.has_residual(channels):
            return inverted, False, main_index
        for candidate in (_basic_template(main), _bottleneck_template(main), _bottleneck_v1_template(main)):
            if candidate is None:
                continue
            bias = candidate.kind == "bottleneck_v1"
            expected_shortcut = ([] if shortcut == [] else
                                 [archspec.conv(candidate.out_filters, 1, candidate.stride, "same", bias),
                                  archspec.bn()])
            if shortcut != expected_shortcut:
                continue
            if not shortcut:
                if candidate.stride != 1 or channels != candidate.out_filters:
                    continue
                return candidate.replace(shortcut="identity"), True, main_index
            return candidate.replace(shortcut="projection"), True, main_index
    names = [", ".join(f"{_type(step.layer)} {step.layer.name!r}" for step in branch) or "identity"
             for branch in block.branches]
    raise _unsupported(block.add, f"its branches [{names[0]}] and [{names[1]}] match no residual block; "
                                  f"supported: {BLOCK_TEMPLATES}")


def _basic_template(layers: List[archspec.Layer]) -> Optional[archspec.Layer]:
    if len(layers) != 5 or layers[0].kind != "conv":
        return None
    first = layers[0]
    block = archspec.Layer("basic", kernel=first.kernel, stride=first.stride, filters=first.filters,
                           shortcut="projection")
    expected = [archspec.conv(first.filters, first.kernel, first.stride, "same", False), archspec.bn(),
                archspec.act("relu"), archspec.conv(first.filters, first.kernel, 1, "same", False), archspec.bn()]
    return block if layers == expected else None


def _bottleneck_template(layers: List[archspec.Layer]) -> Optional[archspec.Layer]:
    if len(layers) != 8 or layers[3].kind != "conv":
        return None
    middle = layers[3]
    f = middle.filters
    block = archspec.Layer("bottleneck", kernel=middle.kernel, stride=middle.stride, filters=f,
                           shortcut="projection")
    expected = [archspec.conv(f, 1, 1, "same", False), archspec.bn(), archspec.act("relu"),
                archspec.conv(f, middle.kernel, middle.stride, "same", False), archspec.bn(), archspec.act("relu"),
                archspec.conv(block.out_filters, 1, 1, "same", False), archspec.bn()]
    return block if layers == expected else None


def _bottleneck_v1_template(layers: List[archspec.Layer]) -> Optional[archspec.Layer]:
    if len(layers) != 8 or layers[0].kind != "conv" or layers[3].kind != "conv":
        return None
    first, middle = layers[0], layers[3]
    f = first.filters
    block = archspec.Layer("bottleneck_v1", kernel=middle.kernel, stride=first.stride, filters=f,
                           shortcut="projection")
    expected = [archspec.conv(f, 1, first.stride, "same", True), archspec.bn(), archspec.act("relu"),
                archspec.conv(f, middle.kernel, 1, "same", True), archspec.bn(), archspec.act("relu"),
                archspec.conv(block.out_filters, 1, 1, "same", True), archspec.bn()]
    return block if layers == expected else None


def _inverted_template(layers: Sequence[archspec.Layer], channels: Optional[int]) -> Optional[archspec.Layer]:
    """The inverted block that `layers` spell out on a `channels`-channel input, or None."""
    layers = list(layers)
    if len(layers) not in (5, 8) or layers[-5].kind != "dwconv" or layers[-3].kind != "act" \
            or layers[-2].kind != "conv" or not isinstance(channels, int):
        return None
    depthwise, activation, project = layers[-5], layers[-3].activation, layers[-2]
    expansion = 1
    if len(layers) == 8:
        wide = layers[0].filters if layers[0].kind == "conv" else None
        if wide is None or wide % channels or wide // channels < 2:
            return None
        expansion = wide // channels
    block = archspec.inverted(project.filters, expansion, depthwise.stride, depthwise.kernel, activation)
    expected = [archspec.dwconv(depthwise.kernel, depthwise.stride, "same", False), archspec.bn(),
                archspec.act(activation), archspec.conv(project.filters, 1, 1, "same", False), archspec.bn()]
    if expansion > 1:
        expected = [archspec.conv(expansion * channels, 1, 1, "same", False), archspec.bn(),
                    archspec.act(activation)] + expected
    one_by_one = [layer.replace(padding="same") if layer.kind == "conv" and layer.kernel == 1 else layer
                  for layer in layers]
    return block if one_by_one == expected else None


def _fuse_inverted(layers: List[archspec.Layer], sources: List[List[keras.layers.Layer]], channels: int):
    """Joins the layers of inverted blocks without a residual (strided, or changing the width) into
    `inverted` layers: MobileNetV2's linear bottleneck, so a following activation stops the match."""
    out_layers, out_sources = [], []
    position = 0
    while position < len(layers):
        for length in (8, 5):
            run = layers[position:position + length]
            block = _inverted_template(run, channels) if len(run) == length else None
            following = layers[position + length] if position + length < len(layers) else None
            if block is not None and not block.has_residual(channels) and (
                    following is None or following.kind != "act"):
                out_layers.append(block)
                out_sources.append([op for ops in sources[position:position + length] for op in ops])
                position += length
                channels = block.filters
                break
        else:
            layer = layers[position]
            out_layers.append(layer)
            out_sources.append(sources[position])
            if layer.out_filters is not None:
                channels = layer.out_filters
            position += 1
    return out_layers, out_sources


def _preprocessing(layers: Sequence[keras.layers.Layer], channels: int) -> Preprocessing:
    """Leading Rescaling/Normalization layers as one per-channel affine map ``(x - mean) / std``."""
    scale, shift = np.ones(channels), np.zeros(channels)  # the map so far: x * scale + shift

    def per_channel(layer, value, what):
        value = np.asarray(keras.ops.convert_to_numpy(value), np.float64).ravel()
        if value.size not in (1, channels):
            raise _unsupported(layer, f"{what} has {value.size} values for {channels} channels; supported: one "
                                      "value, or one per channel")
        return np.broadcast_to(value, (channels,))

    for layer in layers:
        if isinstance(layer, keras.layers.Rescaling):
            factor, offset = per_channel(layer, layer.scale, "scale"), per_channel(layer, layer.offset, "offset")
            scale, shift = scale * factor, shift * factor + offset
            continue
        if layer.invert:
            raise _unsupported(layer, "invert=True; supported: a Normalization that standardises its input")
        if tuple(layer.axis) not in ((-1,), (3,)):
            raise _unsupported(layer, f"axis={layer.axis}; supported: the channel axis (-1)")
        if layer.mean is None:
            raise _unsupported(layer, "the layer has no mean and variance yet (call adapt() or give them)")
        mean = per_channel(layer, layer.mean, "mean")
        std = np.maximum(np.sqrt(per_channel(layer, layer.variance, "variance")), keras.backend.epsilon())
        scale, shift = scale / std, (shift - mean) / std
    if not np.all(scale > 0):
        raise _unsupported(layers[0], f"the preprocessing scales a channel by {scale.min():.3g}; supported: "
                                      "positive scales")
    return Preprocessing(mean=tuple(float(v) for v in -shift / scale), std=tuple(float(v) for v in 1.0 / scale))


# -- the whole model -----------------------------------------------------------
def _is_softmax(layer) -> bool:
    if type(layer) is keras.layers.Softmax:  # pylint: disable=unidiomatic-typecheck
        if layer.axis not in (-1, 1):
            raise _unsupported(layer, f"axis={layer.axis}; supported: softmax over the last axis")
        return True
    return (type(layer) is keras.layers.Activation  # pylint: disable=unidiomatic-typecheck
            and keras_builder.activation_name(layer.activation) == "softmax")


def _split_head(items: list) -> Tuple[list, keras.layers.Dense]:
    """Removes the classifier head from the walked items; returns (body, head Dense)."""
    if not items:
        raise UnsupportedModelError(f"the model has no layers; supported: {HEAD}")
    body, last = items[:-1], items[-1]
    separate_softmax = isinstance(last, _Step) and _is_softmax(last.layer)
    if separate_softmax:
        if not body:
            raise _unsupported(last.layer, f"nothing precedes the softmax; supported: {HEAD}")
        body, last = body[:-1], body[-1]
    culprit = last.add if isinstance(last, _Block) else last.layer
    if type(culprit) is not keras.layers.Dense:  # pylint: disable=unidiomatic-typecheck
        raise _unsupported(culprit, f"the model does not end in a classifier head; supported: {HEAD}")
    head = culprit
    activation = keras_builder.activation_name(head.activation)
    if activation not in (("linear",) if separate_softmax else ("linear", "softmax")):
        raise _unsupported(head, f"the classifier head has activation {activation!r}; supported: {HEAD}")
    if not head.use_bias:
        raise _unsupported(head, f"the classifier head has no bias; supported: {HEAD}")
    if head.units < 2:
        raise _unsupported(head, f"the classifier head has {head.units} unit; supported: {HEAD} with "
                                 "num_classes >= 2")
    if _rank(last.input) != 2:
        raise _unsupported(head, f"the classifier head is applied to a rank-{_rank(last.input)} tensor; "
                                 "supported: a flat input (after Flatten or global pooling)")
    return body, head


def _check_shared(items: list) -> None:
    """A layer with weights called twice would share them; a spec cannot say that."""
    seen = set()
    for item in items:
        steps = [step for branch in item.branches for step in branch] if isinstance(item, _Block) else [item]
        for step in steps:
            if id(step.layer) in seen and step.layer.weights:
                raise _unsupported(step.layer, "it is called more than once (shared weights); supported: "
                                               "each layer with weights used once")
            seen.add(id(step.layer))


def _to_layers(body: list) -> Tuple[List[archspec.Layer], List[List[keras.layers.Layer]]]:
    """Spec layers for the body items, and the Keras layers each one came from."""
    layers: List[archspec.Layer] = []
    sources: List[List[keras.layers.Layer]] = []
    position = 0
    while position < len(body):
        item = body[position]
        if isinstance(item, _Block):
            block_layer, absorbs_relu, main = _match_block(item)
            # The main path first, then the shortcut: the order of the builder's layers.
            used = [step.layer for branch in (item.branches[main], item.branches[1 - main]) for step in branch]
            used.append(item.add)
            position += 1
            if absorbs_relu:
                following = body[position] if position < len(body) else None
                if not isinstance(following, _Step) or _convert(following.layer, following.input) != [archspec.act()]:
                    raise _unsupported(item.add, f"the residual Add is not followed by a ReLU; supported: "
                                                 f"{BLOCK_TEMPLATES}")
                used.append(following.layer)
                position += 1
            layers.append(block_layer)
            sources.append(used)
            continue
        end = position
        while end < len(body) and isinstance(body[end], _Step):
            end += 1
        run_layers, run_sources = _convert_steps(body[position:end])
        layers.extend(run_layers)
        sources.extend(run_sources)
        position = end
    return layers, sources


def _parse(model) -> Parsed:
    input_tensor, _ = _model_io(model)
    input_layer, _ = keras_builder.producer(input_tensor)
    if _rank(input_tensor) != 4:
        raise UnsupportedModelError(f"input shape {tuple(input_tensor.shape[1:])}; supported: an image input "
                                    "(height, width, channels)", input_layer.name, _type(input_layer))
    items = _walk(model)
    _check_shared(items)
    prefix = []
    while items and isinstance(items[0], _Step) and type(items[0].layer) in _PREPROCESSING_TYPES:
        prefix.append(items.pop(0).layer)
    body, head = _split_head(items)
    layers, sources = _to_layers(body)
    channels = input_tensor.shape[-1]
    if isinstance(channels, int):
        layers, sources = _fuse_inverted(layers, sources, channels)
    try:
        spec = archspec.ArchSpec(layers)
    except archspec.SpecError as error:
        culprit = sources[error.layer_index][0] if error.layer_index is not None else head
        raise _unsupported(culprit, f"the layers do not fit the spec grammar ({error}); supported: spatial "
                                    "layers, then exactly one Flatten/GlobalAveragePooling2D/GlobalMaxPooling2D, "
                                    "then flat layers") from error
    preprocessing = _preprocessing(prefix, int(channels)) if prefix else None
    epsilons = {float(op.epsilon) for ops in sources for op in ops if isinstance(op, keras.layers.BatchNormalization)}
    weighted, seen = [], set()
    for op in [op for ops in sources for op in ops] + [head]:
        if op.weights and id(op) not in seen:
            seen.add(id(op))
            weighted.append(op)
    parsed = Parsed(spec, None, head.units, preprocessing, tuple(layer.name for layer in prefix),
                    epsilons.pop() if len(epsilons) == 1 else None, tuple(weighted))
    input_shape = tuple(input_tensor.shape[1:])
    if not all(isinstance(d, int) for d in input_shape):
        return parsed
    _check_params(spec, input_shape, sources)
    return dataclasses.replace(parsed, input_shape=input_shape)


def _check_params(spec: archspec.ArchSpec, input_shape: Sequence[int],
                  sources: List[List[keras.layers.Layer]]) -> None:
    """Every spec layer's parameter count equals that of the Keras layers it came from."""
    counted = set()
    for index, (expected, ops) in enumerate(zip(spec.layer_params(input_shape), sources)):
        fresh = [op for op in ops if id(op) not in counted]  # a fused conv + act is one Keras layer
        counted.update(id(op) for op in ops)
        actual = sum(op.count_params() for op in fresh)
        if fresh and actual != expected:
            raise _unsupported(ops[0], f"it has {actual} parameters but spec layer {index} "
                                       f"({spec[index].kind}) has {expected}: a setting the spec does not "
                                       f"model differs (supported: {SUPPORTED_LAYERS})")
