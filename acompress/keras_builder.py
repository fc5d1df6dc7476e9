"""Builds a Keras classifier from an `archspec.ArchSpec`.

The model is written with the functional API, one Keras layer per spec field
group, exactly as `archspec` documents it:

=============  =============================================================
spec kind      Keras layers (``lI`` is the spec index, used in layer names)
=============  =============================================================
``conv``       ``Conv2D(filters, kernel, strides, padding, use_bias)``
``dwconv``     ``DepthwiseConv2D(kernel, strides, padding, use_bias)``
``sepconv``    ``SeparableConv2D(filters, kernel, strides, padding, use_bias)``
``bn``         ``BatchNormalization(momentum=bn_momentum, epsilon=bn_epsilon)``
``act``        ``Activation(name)`` (``swish`` is stored by Keras as ``silu``)
``maxpool``    ``MaxPooling2D(pool_size=kernel, strides=stride, padding)``
``avgpool``    ``AveragePooling2D(pool_size=kernel, strides=stride, padding)``
``gap``        ``GlobalAveragePooling2D()``
``gmp``        ``GlobalMaxPooling2D()``
``flatten``    ``Flatten()``
``dense``      ``Dense(units, use_bias)``
``dropout``    ``Dropout(rate)``
``basic``      conv(k, s)-BN-ReLU-conv(k)-BN, plus the shortcut, ``Add``, ReLU
``bottleneck`` conv1x1-BN-ReLU-conv(k, s)-BN-ReLU-conv1x1(4f)-BN, plus the
               shortcut, ``Add``, ReLU
``bottleneck_v1`` conv1x1(s)-BN-ReLU-conv(k)-BN-ReLU-conv1x1(4f)-BN, with
               biases, plus the shortcut, ``Add``, ReLU (Keras' ResNet50)
``inverted``   [conv1x1(e)-BN-act]-DepthwiseConv2D(k, s)-BN-act-conv1x1-BN
               [+ ``Add`` with the input] (Keras' MobileNetV2)
=============  =============================================================

An integer padding p is ``ZeroPadding2D(p)`` followed by the layer with
``padding="valid"``. Block convolutions use ``padding="same"`` and no bias (except
``bottleneck_v1``'s); a ``projection`` shortcut is a 1x1 convolution with the
block's stride followed by batch norm.
The classifier head is ``Dense(num_classes, name="logits")`` followed by
``Activation("softmax", dtype="float32", name="probabilities")``: the softmax runs
in float32 so a model built under a mixed-precision policy still outputs float32
probabilities. `logits_model` gives the same network with the logits as output
(for distillation).

Batch norm momentum defaults to 0.9, not Keras' 0.99, on purpose: children are
trained for short proxy budgets, and with momentum 0.99 the moving statistics
have not settled after a few hundred steps, so evaluation in inference mode (which
uses them) is far worse than the training accuracy. Measured in this project: with
0.99, a child trained for 10 epochs on the 8x8 digits data scored near chance on
validation. The moving averages forget their start as momentum**steps, so 0.9
settles within tens of steps where 0.99 needs hundreds.

Layers are named for people (``l3_conv``, ``l5_block_conv1``, ``l5_block_add``);
nothing in the package relies on the names except ``logits`` in `logits_model`,
which also finds the head without it.
"""

import numbers
from typing import List, Optional, Sequence

import keras
import tensorflow as tf

from acompress import archspec

LOGITS_NAME = "logits"
PROBABILITIES_NAME = "probabilities"


def build_model(spec: archspec.ArchSpec, input_shape: Sequence[int], num_classes: int, *,
                bn_momentum: float = 0.9, bn_epsilon: float = 1e-3,
                name: Optional[str] = None, synchronized_bn: Optional[bool] = None) -> keras.Model:
    """Builds the classifier that `spec` describes, for one input shape and class count.

    Args:
      spec: the architecture body; the softmax head is added here.
      input_shape: (height, width, channels) of one example.
      num_classes: units of the classifier head (>= 2).
      bn_momentum: momentum of every batch norm layer (see the module docstring for
        why the default is 0.9).
      bn_epsilon: epsilon of every batch norm layer.
      name: the model's name; defaults to ``arch_<spec hash>``.
      synchronized_bn: batch norm over the global batch (statistics all-reduced across
        replicas), so a model trained on N replicas normalises as on one device and every
        worker ends with the same moving statistics. None: on when built in the scope of a
        strategy with more than one replica (it does nothing on one device).

    Returns:
      A functional `keras.Model` with float32 softmax outputs whose
      ``count_params()`` equals ``spec.count_params(input_shape, num_classes)``.

    Raises:
      archspec.ShapeError: the spec does not fit `input_shape` (checked before any
        Keras layer is made, so the error names the spec layer and field).
      archspec.SpecError: `num_classes` is not an integer >= 2.
    """
    input_shape = tuple(_plain_int(d) for d in input_shape)
    num_classes = _plain_int(num_classes)
    # Validates the input shape and the class count with spec-level errors.
    spec.count_params(input_shape, num_classes)
    if synchronized_bn is None:
        synchronized_bn = tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1
    bn_args = {"momentum": bn_momentum, "epsilon": bn_epsilon}
    if synchronized_bn:
        bn_args["synchronized"] = True
    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    for index, layer in enumerate(spec):
        x = _apply_layer(x, layer, f"l{index}", bn_args)
    x = keras.layers.Dense(num_classes, name=LOGITS_NAME)(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name=PROBABILITIES_NAME)(x)
    return keras.Model(inputs, outputs, name=name or f"arch_{spec.hash}")


def logits_model(model: keras.Model) -> keras.Model:
    """The same network with the classifier's logits (pre-softmax) as its output.

    Works for models from `build_model` (the ``logits`` layer) and for any
    single-output classifier that ends in a Dense layer, with the softmax either
    fused into it or as a following ``Activation("softmax")``/``Softmax`` layer. The
    returned model shares its layers and weights with `model`, except when the
    softmax is fused into the final Dense: then that layer is copied without its
    activation (the weights are copied, not shared). Under a mixed-precision
    policy the logits keep the compute dtype (e.g. float16).

    Raises:
      ValueError: the model has several outputs or does not end in a Dense layer.
    """
    if len(model.outputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(model.outputs)} outputs; expected one")
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    try:
        layer = model.get_layer(LOGITS_NAME)
    except ValueError:
        layer = None
    if isinstance(layer, keras.layers.Dense) and activation_name(layer.activation) == "linear":
        return keras.Model(inputs, layer.output, name=f"{model.name}_logits")
    tensor = model.outputs[0]
    operation, operation_inputs = producer(tensor)
    if _is_softmax_layer(operation):
        tensor = operation_inputs[0]
        operation, operation_inputs = producer(tensor)
    if not isinstance(operation, keras.layers.Dense):
        raise ValueError(f"model {model.name!r} does not end in a Dense classifier layer "
                         f"(its output comes from {operation.name!r}, a {type(operation).__name__})")
    activation = activation_name(operation.activation)
    if activation == "softmax":
        linear = keras.layers.Dense(operation.units, use_bias=operation.use_bias,
                                    name=f"{operation.name}_logits", dtype=operation.dtype_policy)
        tensor = linear(operation_inputs[0])
        linear.set_weights(operation.get_weights())
    elif activation != "linear":
        raise ValueError(f"the final Dense layer {operation.name!r} of model {model.name!r} has activation "
                         f"{activation!r}; expected softmax or none")
    return keras.Model(inputs, tensor, name=f"{model.name}_logits")


def weighted_layer_names(spec: archspec.ArchSpec) -> List[str]:
    """The names of the layers with weights that `build_model` makes, in spec order (in a block:
    the main path, then the shortcut), the head last."""
    names = []
    for index, layer in enumerate(spec):
        prefix = f"l{index}"
        if layer.kind in ("conv", "dwconv", "sepconv", "dense", "bn"):
            names.append(f"{prefix}_{layer.kind}")
        elif layer.kind in archspec.BLOCKS:
            for number in range(1, len(archspec.block_convs(layer)) + 1):
                names += [f"{prefix}_block_conv{number}", f"{prefix}_block_bn{number}"]
            if layer.shortcut == "projection":
                names += [f"{prefix}_block_proj_conv", f"{prefix}_block_proj_bn"]
        elif layer.kind == "inverted":
            if layer.expansion > 1:
                names += [f"{prefix}_block_expand", f"{prefix}_block_expand_bn"]
            names += [f"{prefix}_block_dwconv", f"{prefix}_block_dw_bn", f"{prefix}_block_project",
                      f"{prefix}_block_project_bn"]
    return names + [LOGITS_NAME]


# -- layers ------------------------------------------------------------------
def _apply_layer(x, layer: archspec.Layer, prefix: str, bn_args: dict):
    kind = layer.kind
    layers = keras.layers
    if kind in archspec.WINDOWED and not isinstance(layer.padding, str):
        x = layers.ZeroPadding2D(layer.padding, name=f"{prefix}_pad")(x)
        layer = layer.replace(padding="valid")
    if kind == "conv":
        return layers.Conv2D(layer.filters, layer.kernel, strides=layer.stride, padding=layer.padding,
                             use_bias=layer.use_bias, name=f"{prefix}_conv")(x)
    if kind == "dwconv":
        return layers.DepthwiseConv2D(layer.kernel, strides=layer.stride, padding=layer.padding,
                                      use_bias=layer.use_bias, name=f"{prefix}_dwconv")(x)
    if kind == "sepconv":
        return layers.SeparableConv2D(layer.filters, layer.kernel, strides=layer.stride, padding=layer.padding,
                                      use_bias=layer.use_bias, name=f"{prefix}_sepconv")(x)
    if kind == "inverted":
        return _inverted_block(x, layer, f"{prefix}_block", bn_args)
    if kind == "bn":
        return layers.BatchNormalization(name=f"{prefix}_bn", **bn_args)(x)
    if kind == "act":
        return layers.Activation(layer.activation, name=f"{prefix}_{layer.activation}")(x)
    if kind == "maxpool":
        return layers.MaxPooling2D(pool_size=layer.kernel, strides=layer.stride, padding=layer.padding,
                                   name=f"{prefix}_maxpool")(x)
    if kind == "avgpool":
        return layers.AveragePooling2D(pool_size=layer.kernel, strides=layer.stride, padding=layer.padding,
                                       name=f"{prefix}_avgpool")(x)
    if kind == "gap":
        return layers.GlobalAveragePooling2D(name=f"{prefix}_gap")(x)
    if kind == "gmp":
        return layers.GlobalMaxPooling2D(name=f"{prefix}_gmp")(x)
    if kind == "flatten":
        return layers.Flatten(name=f"{prefix}_flatten")(x)
    if kind == "dense":
        return layers.Dense(layer.filters, use_bias=layer.use_bias, name=f"{prefix}_dense")(x)
    if kind == "dropout":
        return layers.Dropout(layer.rate, name=f"{prefix}_dropout")(x)
    if kind in archspec.BLOCKS:
        return _residual_block(x, layer, f"{prefix}_block", bn_args)
    raise archspec.SpecError(f"unknown kind {kind!r}", field="kind")  # unreachable for a valid spec


def _residual_block(x, layer: archspec.Layer, prefix: str, bn_args: dict):
    """A basic or bottleneck block, as documented in `archspec`."""
    layers = keras.layers
    convs = archspec.block_convs(layer)
    bias = layer.kind == "bottleneck_v1"
    y = x
    for number, (kernel, stride, filters) in enumerate(convs, start=1):
        y = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=bias,
                          name=f"{prefix}_conv{number}")(y)
        y = layers.BatchNormalization(name=f"{prefix}_bn{number}", **bn_args)(y)
        if number < len(convs):
            y = layers.Activation("relu", name=f"{prefix}_relu{number}")(y)
    shortcut = x
    if layer.shortcut == "projection":
        shortcut = layers.Conv2D(layer.out_filters, 1, strides=layer.stride, padding="same", use_bias=bias,
                                 name=f"{prefix}_proj_conv")(x)
        shortcut = layers.BatchNormalization(name=f"{prefix}_proj_bn", **bn_args)(shortcut)
    y = layers.Add(name=f"{prefix}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{prefix}_out")(y)


def _inverted_block(x, layer: archspec.Layer, prefix: str, bn_args: dict):
    """MobileNetV2's inverted residual block, as documented in `archspec`."""
    layers = keras.layers
    in_channels = int(x.shape[-1])
    y = x
    if layer.expansion > 1:
        y = layers.Conv2D(archspec.inverted_width(layer, in_channels), 1, padding="same", use_bias=False,
                          name=f"{prefix}_expand")(y)
        y = layers.BatchNormalization(name=f"{prefix}_expand_bn", **bn_args)(y)
        y = layers.Activation(layer.activation, name=f"{prefix}_expand_{layer.activation}")(y)
    y = layers.DepthwiseConv2D(layer.kernel, strides=layer.stride, padding="same", use_bias=False,
                               name=f"{prefix}_dwconv")(y)
    y = layers.BatchNormalization(name=f"{prefix}_dw_bn", **bn_args)(y)
    y = layers.Activation(layer.activation, name=f"{prefix}_dw_{layer.activation}")(y)
    y = layers.Conv2D(layer.filters, 1, padding="same", use_bias=False, name=f"{prefix}_project")(y)
    y = layers.BatchNormalization(name=f"{prefix}_project_bn", **bn_args)(y)
    if layer.has_residual(in_channels):
        y = layers.Add(name=f"{prefix}_add")([x, y])
    return y


# -- helpers -----------------------------------------------------------------
def _plain_int(value):
    """Turns a numpy integer into a Python int; leaves anything else for archspec to judge."""
    return int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value


def activation_name(function) -> str:
    """Keras' serialized name of an activation function (``linear``, ``relu``, ``silu``, ...)."""
    try:
        return keras.activations.serialize(function)
    except (TypeError, ValueError):
        return getattr(function, "__name__", repr(function))


def _is_softmax_layer(operation) -> bool:
    if isinstance(operation, keras.layers.Softmax):
        return True
    return (isinstance(operation, keras.layers.Activation)
            and activation_name(operation.activation) == "softmax")


def producer(tensor):
    """The operation that produced a symbolic tensor, and that call's input tensors."""
    operation, node_index, _ = tensor._keras_history  # pylint: disable=protected-access
    node = operation._inbound_nodes[node_index]  # pylint: disable=protected-access
    return operation, list(node.input_tensors)
