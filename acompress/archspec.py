"""ArchSpec: a CNN architecture as immutable, validated, hashable data.

A spec is a sequence of layer records. It never builds a model and never imports
TensorFlow (see `keras_builder` for that); it can still tell the exact parameter
count and multiply-add count of the network it describes, for any input shape and
class count.

Layer kinds and the fields each one uses (all other fields must be ``None``):

=============  ===========================================================
kind           fields
=============  ===========================================================
``conv``       kernel, stride, filters, padding, use_bias
``dwconv``     kernel, stride, padding, use_bias: a depthwise convolution (one
               filter per input channel, depth multiplier 1; keeps the channels)
``sepconv``    kernel, stride, filters, padding, use_bias: a separable
               convolution, depthwise (k x k) then pointwise (1x1 to
               ``filters``); the bias belongs to the pointwise part
``bn``         (none) batch normalisation over the channel axis
``act``        activation
``maxpool``    kernel, stride, padding
``avgpool``    kernel, stride, padding
``gap``        (none) global average pooling: spatial -> flat
``gmp``        (none) global max pooling: spatial -> flat
``flatten``    (none) spatial -> flat
``dense``      filters (the number of units), use_bias
``dropout``    rate
``basic``      kernel, stride, filters, shortcut: a ResNet basic block,
               conv(k, s)-BN-ReLU-conv(k)-BN + shortcut, then ReLU
``bottleneck`` kernel, stride, filters, shortcut: a ResNet bottleneck block,
               conv1x1(f)-BN-ReLU-conv(k, s)(f)-BN-ReLU-conv1x1(4f)-BN +
               shortcut, then ReLU; its output has ``4 * filters`` channels
``bottleneck_v1``  kernel, stride, filters, shortcut: the ResNet v1 bottleneck of
               ``keras.applications`` ResNet50/101/152: conv1x1(f, s)-BN-ReLU-
               conv(k)(f)-BN-ReLU-conv1x1(4f)-BN + shortcut, then ReLU; the stride
               is on the first 1x1 convolution and every convolution (the
               projection's too) has a bias
``inverted``   kernel, stride, filters, expansion, activation: MobileNetV2's
               inverted residual block: conv1x1(e)-BN-act (left out when
               ``expansion`` is 1), depthwise conv(k, s)-BN-act, conv1x1(filters)-BN
               (linear), where ``e = expansion * input channels``; plus the input
               (an identity residual, no activation after it) exactly when the
               stride is 1 and ``filters`` equals the input channels, as in Keras
=============  ===========================================================

``padding`` is ``same``, ``valid`` or a positive integer p: zero-pad p pixels on
every side, then a ``valid`` window (Keras writes it as ``ZeroPadding2D(p)`` and a
``padding="valid"`` layer, as ResNet50's stem does; for a pool, the padded pixels
are zeros, not -inf).

A spec describes the body of a classifier. It must go from spatial layers to flat
layers exactly once (``gap``, ``gmp`` or ``flatten``); the classifier head, a dense
layer with one unit per class followed by a softmax, is implicit and added by the
builder, so one spec serves every class count.

Block convolutions have no bias (they are followed by batch norm), except in
``bottleneck_v1``, which follows Keras' ResNet50. A ``projection``
shortcut is a strided 1x1 convolution (no bias) with batch norm; an ``identity``
shortcut needs stride 1 and matching channels.

Parameter counts follow ``keras.Model.count_params()``: batch norm counts four
numbers per channel (gamma, beta, moving mean, moving variance). FLOPs are
multiply-adds of convolutions and dense layers (the head included); batch norm,
activations, pooling and additions are not counted.
"""

import dataclasses
import hashlib
import json
import math
import numbers
from typing import Iterable, List, Optional, Sequence, Tuple, Union

FORMAT_VERSION = 1

SPATIAL_ONLY = ("conv", "maxpool", "avgpool", "basic", "bottleneck", "dwconv", "sepconv", "bottleneck_v1",
                "inverted")
TRANSITIONS = ("gap", "gmp", "flatten")
FLAT_ONLY = ("dense",)
ANYWHERE = ("bn", "act", "dropout")
# The kinds of the first releases, in their order (default search spaces keep to these, so stored
# corpora keep their token layout); the kinds after them came with keras.applications teachers.
CLASSIC_KINDS = ("conv", "maxpool", "avgpool", "basic", "bottleneck") + TRANSITIONS + FLAT_ONLY + ANYWHERE
KINDS = CLASSIC_KINDS + ("dwconv", "sepconv", "bottleneck_v1", "inverted")

# `expansion` came last: token matrices have its column only for search spaces with a kind that uses it.
FIELDS = ("kernel", "stride", "filters", "padding", "activation", "rate", "use_bias", "shortcut", "expansion")

# Which fields each kind uses; the others must be None.
KIND_FIELDS = {
    "conv": ("kernel", "stride", "filters", "padding", "use_bias"),
    "bn": (),
    "act": ("activation",),
    "maxpool": ("kernel", "stride", "padding"),
    "avgpool": ("kernel", "stride", "padding"),
    "gap": (),
    "gmp": (),
    "flatten": (),
    "dense": ("filters", "use_bias"),
    "dropout": ("rate",),
    "basic": ("kernel", "stride", "filters", "shortcut"),
    "bottleneck": ("kernel", "stride", "filters", "shortcut"),
    "dwconv": ("kernel", "stride", "padding", "use_bias"),
    "sepconv": ("kernel", "stride", "filters", "padding", "use_bias"),
    "bottleneck_v1": ("kernel", "stride", "filters", "shortcut"),
    "inverted": ("kernel", "stride", "filters", "activation", "expansion"),
}

PADDINGS = ("same", "valid")  # and positive integers (zero padding, then a valid window)
CLASSIC_ACTIVATIONS = ("relu", "relu6", "elu", "selu", "gelu", "swish", "tanh", "sigmoid")
ACTIVATIONS = CLASSIC_ACTIVATIONS + ("hard_swish",)
SHORTCUTS = ("identity", "projection")
BOTTLENECK_EXPANSION = 4
BLOCKS = ("basic", "bottleneck", "bottleneck_v1")  # the residual blocks with a `shortcut` field
WINDOWED = ("conv", "dwconv", "sepconv", "maxpool", "avgpool")  # the kinds with a `padding` field


class SpecError(ValueError):
    """A malformed spec: a field of a layer has a wrong type or value.

    Attributes:
      layer_index: index of the offending layer, or None for the spec as a whole.
      field: name of the offending field, or None.
    """

    def __init__(self, message: str, layer_index: Optional[int] = None, field: Optional[str] = None):
        self.layer_index = layer_index
        self.field = field
        super().__init__(locate(message, layer_index, field))


def locate(message: str, layer_index: Optional[int] = None, field: Optional[str] = None) -> str:
    """Prefixes `message` with "layer I, field 'F': " for the parts that are known."""
    where = []
    if layer_index is not None:
        where.append(f"layer {layer_index}")
    if field is not None:
        where.append(f"field '{field}'")
    return f"{', '.join(where)}: {message}" if where else message


class ShapeError(SpecError):
    """A spec that is well formed but cannot run on the given input shape."""


@dataclasses.dataclass(frozen=True)
class Layer:
    """One layer record. Use the constructors below (`conv`, `dense`, ...)."""

    kind: str
    kernel: Optional[int] = None
    stride: Optional[int] = None
    filters: Optional[int] = None
    padding: Union[None, str, int] = None
    activation: Optional[str] = None
    rate: Optional[float] = None
    use_bias: Optional[bool] = None
    shortcut: Optional[str] = None
    expansion: Optional[int] = None

    def to_dict(self) -> dict:
        out = {"kind": self.kind}
        for name in FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    @property
    def out_filters(self) -> Optional[int]:
        """Channels (or units) this layer outputs, or None if it keeps its input's."""
        if self.kind in ("bottleneck", "bottleneck_v1"):
            return BOTTLENECK_EXPANSION * self.filters
        if self.kind in ("conv", "dense", "basic", "sepconv", "inverted"):
            return self.filters
        return None  # dwconv, pools, bn, ...: the input's channels

    def has_residual(self, in_channels: Optional[int]) -> bool:
        """Whether this layer adds its input to its output, given its input channels."""
        if self.kind in BLOCKS:
            return self.shortcut == "identity"
        return self.kind == "inverted" and self.stride == 1 and in_channels == self.filters

    def replace(self, **changes) -> "Layer":
        return dataclasses.replace(self, **changes)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_layer(layer: Layer, index: Optional[int] = None) -> None:
    """Raises SpecError naming the layer index and field if `layer` is malformed."""
    if layer.kind not in KINDS:
        raise SpecError(f"unknown kind {layer.kind!r}; expected one of {', '.join(KINDS)}", index, "kind")
    used = KIND_FIELDS[layer.kind]
    for name in FIELDS:
        value = getattr(layer, name)
        if name not in used:
            if value is not None:
                raise SpecError(f"kind {layer.kind!r} does not take this field (got {value!r})", index, name)
            continue
        if value is None:
            raise SpecError(f"kind {layer.kind!r} needs this field", index, name)
        if name in ("kernel", "stride", "filters", "expansion"):
            if not _is_int(value) or value < 1:
                raise SpecError(f"must be a positive integer, got {value!r}", index, name)
        elif name == "padding" and value not in PADDINGS and not (_is_int(value) and value >= 1):
            raise SpecError(f"must be one of {PADDINGS} or a positive integer (zero padding), got {value!r}",
                            index, name)
        elif name == "activation" and value not in ACTIVATIONS:
            raise SpecError(f"must be one of {ACTIVATIONS}, got {value!r}", index, name)
        elif name == "rate" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                 or not 0.0 < value < 1.0):
            raise SpecError(f"must be a number in (0, 1), got {value!r}", index, name)
        elif name == "use_bias" and not isinstance(value, bool):
            raise SpecError(f"must be true or false, got {value!r}", index, name)
        elif name == "shortcut" and value not in SHORTCUTS:
            raise SpecError(f"must be one of {SHORTCUTS}, got {value!r}", index, name)
    if layer.kind in BLOCKS and layer.shortcut == "identity" and layer.stride != 1:
        raise SpecError("an identity shortcut needs stride 1; use 'projection'", index, "shortcut")


# Layer constructors: the readable way to write a spec by hand.
def conv(filters: int, kernel: int = 3, stride: int = 1, padding: Union[str, int] = "same",
         use_bias: bool = True) -> Layer:
    return Layer("conv", kernel=kernel, stride=stride, filters=filters, padding=padding, use_bias=use_bias)


def bn() -> Layer:
    return Layer("bn")


def act(activation: str = "relu") -> Layer:
    return Layer("act", activation=activation)


def maxpool(kernel: int = 2, stride: Optional[int] = None, padding: Union[str, int] = "valid") -> Layer:
    return Layer("maxpool", kernel=kernel, stride=kernel if stride is None else stride, padding=padding)


def avgpool(kernel: int = 2, stride: Optional[int] = None, padding: Union[str, int] = "valid") -> Layer:
    return Layer("avgpool", kernel=kernel, stride=kernel if stride is None else stride, padding=padding)


def gap() -> Layer:
    return Layer("gap")


def gmp() -> Layer:
    return Layer("gmp")


def flatten() -> Layer:
    return Layer("flatten")


def dense(units: int, use_bias: bool = True) -> Layer:
    return Layer("dense", filters=units, use_bias=use_bias)


def dropout(rate: float) -> Layer:
    return Layer("dropout", rate=rate)


def dwconv(kernel: int = 3, stride: int = 1, padding: Union[str, int] = "same", use_bias: bool = False) -> Layer:
    return Layer("dwconv", kernel=kernel, stride=stride, padding=padding, use_bias=use_bias)


def sepconv(filters: int, kernel: int = 3, stride: int = 1, padding: Union[str, int] = "same",
            use_bias: bool = True) -> Layer:
    return Layer("sepconv", kernel=kernel, stride=stride, filters=filters, padding=padding, use_bias=use_bias)


def inverted(filters: int, expansion: int = 6, stride: int = 1, kernel: int = 3,
             activation: str = "relu6") -> Layer:
    """MobileNetV2's inverted residual block (the residual follows from the shapes)."""
    return Layer("inverted", kernel=kernel, stride=stride, filters=filters, activation=activation,
                 expansion=expansion)


def bottleneck_v1(filters: int, stride: int = 1, kernel: int = 3, shortcut: Optional[str] = None) -> Layer:
    shortcut = shortcut or ("identity" if stride == 1 else "projection")
    return Layer("bottleneck_v1", kernel=kernel, stride=stride, filters=filters, shortcut=shortcut)


def basic(filters: int, stride: int = 1, kernel: int = 3, shortcut: Optional[str] = None) -> Layer:
    """A basic block; `shortcut` defaults to identity at stride 1, projection otherwise."""
    shortcut = shortcut or ("identity" if stride == 1 else "projection")
    return Layer("basic", kernel=kernel, stride=stride, filters=filters, shortcut=shortcut)


def bottleneck(filters: int, stride: int = 1, kernel: int = 3, shortcut: Optional[str] = None) -> Layer:
    shortcut = shortcut or ("identity" if stride == 1 else "projection")
    return Layer("bottleneck", kernel=kernel, stride=stride, filters=filters, shortcut=shortcut)


def conv_bn_act(filters: int, kernel: int = 3, stride: int = 1, activation: str = "relu",
                use_bias: bool = True) -> Tuple[Layer, Layer, Layer]:
    """The common conv -> batch norm -> activation triple."""
    return (conv(filters, kernel, stride, use_bias=use_bias), bn(), act(activation))


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """An immutable, validated architecture: a tuple of `Layer` records."""

    layers: Tuple[Layer, ...]

    def __init__(self, layers: Iterable[Union[Layer, Sequence[Layer]]]):
        flat = []
        for item in layers:
            if isinstance(item, Layer):
                flat.append(item)
            elif isinstance(item, (tuple, list)) and all(isinstance(x, Layer) for x in item):
                flat.extend(item)
            else:
                raise SpecError(f"expected a Layer, got {type(item).__name__}", len(flat))
        object.__setattr__(self, "layers", tuple(flat))
        self._validate()

    def _validate(self) -> None:
        flat = False
        for index, layer in enumerate(self.layers):
            validate_layer(layer, index)
            if layer.kind in TRANSITIONS:
                if flat:
                    raise SpecError(f"{layer.kind!r} after the network is already flat "
                                    f"(layer {self.transition_index})", index, "kind")
                flat = True
            elif layer.kind in SPATIAL_ONLY and flat:
                raise SpecError(f"{layer.kind!r} needs a spatial input but the network is flat "
                                f"after layer {self.transition_index}", index, "kind")
            elif layer.kind in FLAT_ONLY and not flat:
                raise SpecError(f"{layer.kind!r} needs a flat input; put gap, gmp or flatten before it",
                                index, "kind")
        if not flat:
            raise SpecError("the spec never becomes flat: it needs one gap, gmp or flatten layer "
                            "before the (implicit) classifier head")

    # -- views ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, index):
        return self.layers[index]

    @property
    def transition_index(self) -> Optional[int]:
        for index, layer in enumerate(self.layers):
            if layer.kind in TRANSITIONS:
                return index
        return None

    # -- serialisation -------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, "layers": [layer.to_dict() for layer in self.layers]}

    def to_json(self, indent: Optional[int] = None) -> str:
        """Canonical JSON: sorted keys, no optional whitespace unless `indent` is given."""
        separators = (",", ":") if indent is None else (",", ": ")
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent, separators=separators)

    @classmethod
    def from_dict(cls, data) -> "ArchSpec":
        if not isinstance(data, dict):
            raise SpecError(f"a spec is a JSON object with a 'layers' list, got {type(data).__name__}")
        version = data.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise SpecError(f"unsupported format_version {version!r}; this package reads {FORMAT_VERSION}")
        unknown = set(data) - {"format_version", "layers"}
        if unknown:
            raise SpecError(f"unknown top-level keys {sorted(unknown)}; expected 'layers'")
        records = data.get("layers")
        if not isinstance(records, list):
            raise SpecError("'layers' must be a list of layer objects")
        layers = []
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                raise SpecError(f"a layer is a JSON object, got {type(record).__name__}", index)
            if "kind" not in record:
                raise SpecError("missing", index, "kind")
            unknown = set(record) - set(FIELDS) - {"kind"}
            if unknown:
                raise SpecError(f"unknown field(s) {sorted(unknown)}; known fields: kind, {', '.join(FIELDS)}",
                                index, sorted(unknown)[0])
            layers.append(Layer(**record))
        return cls(layers)

    @classmethod
    def from_json(cls, text: str) -> "ArchSpec":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise SpecError(f"not valid JSON: {error}") from None
        return cls.from_dict(data)

    @property
    def hash(self) -> str:
        """A stable 16-hex-digit hash of the canonical JSON."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()[:16]

    # -- shapes, parameters and FLOPs ----------------------------------------
    def output_shapes(self, input_shape: Sequence[int]) -> Tuple[Tuple[int, ...], ...]:
        """The output shape (without batch) of every layer for an (H, W, C) input."""
        return tuple(stats[0] for stats in self._layer_stats(input_shape))

    def count_params(self, input_shape: Sequence[int], num_classes: int) -> int:
        """Exact parameter count of the built model, head included (== Keras count_params)."""
        stats = self._layer_stats(input_shape)
        return sum(s[1] for s in stats) + _head_params(_features(stats, input_shape), num_classes)

    def count_flops(self, input_shape: Sequence[int], num_classes: int) -> int:
        """Multiply-adds of all convolutions and dense layers, head included."""
        stats = self._layer_stats(input_shape)
        _head_params(1, num_classes)  # validates num_classes
        return sum(s[2] for s in stats) + _features(stats, input_shape) * num_classes

    def layer_params(self, input_shape: Sequence[int]) -> Tuple[int, ...]:
        return tuple(stats[1] for stats in self._layer_stats(input_shape))

    def _layer_stats(self, input_shape: Sequence[int]):
        """Yields (output_shape, params, flops) for each layer; raises ShapeError."""
        shape = _check_input_shape(input_shape)
        out = []
        for index, layer in enumerate(self.layers):
            shape, params, flops = _layer_stat(layer, shape, index)
            out.append((shape, params, flops))
        return out


# Layers that only normalise or activate what comes in; runs of them sit between the layers that compute.
PASS_THROUGH = ("bn", "act")


def simplified(spec: ArchSpec) -> ArchSpec:
    """`spec` without the batch norms and activations that repeat one earlier in the same run.

    A run is a stretch of ``bn`` / ``act`` / ``dropout`` layers between two layers that compute (conv,
    pool, block, transition, dense...). In a run only the first ``bn`` and the first ``act`` of each
    activation are kept, in their order: ``gap, bn, act, act, bn, bn, act`` becomes ``gap, bn, act``. A
    repeated ReLU or ReLU6 computes nothing new, and a second batch norm normalises what is already
    normalised. The latent search's decoder writes such runs (after global pooling especially: 7 batch
    norms and 12 activations in one decoded MobileNetV2 child), so candidates are simplified before they
    are scored, counted and trained. Returns `spec` itself when nothing repeats.
    """
    kept: List[Layer] = []
    seen: set = set()
    for layer in spec:
        if layer.kind not in PASS_THROUGH + ("dropout",):
            seen = set()
        elif layer.kind in PASS_THROUGH:
            key = (layer.kind, layer.activation)
            if key in seen:
                continue
            seen.add(key)
        kept.append(layer)
    return spec if len(kept) == len(spec) else ArchSpec(kept)


def _features(stats, input_shape: Sequence[int]) -> int:
    return stats[-1][0][0] if stats else int(input_shape[-1])


def _check_input_shape(input_shape: Sequence[int]) -> Tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0
                                  for d in shape):
        raise ShapeError(f"input shape must be (height, width, channels) of positive integers, got {input_shape!r}")
    return tuple(int(d) for d in shape)


def spatial_out(size: int, kernel: int, stride: int, padding: Union[str, int]) -> int:
    """Output size of a window along one axis (0 when it does not fit)."""
    if padding == "same":
        return math.ceil(size / stride)
    if padding != "valid":
        size += 2 * padding
    return (size - kernel) // stride + 1 if size >= kernel else 0


def _window(h, w, kernel, stride, padding, index):
    ho, wo = spatial_out(h, kernel, stride, padding), spatial_out(w, kernel, stride, padding)
    if ho < 1 or wo < 1:
        raise ShapeError(f"a {kernel}x{kernel} window with stride {stride} and padding {padding!r} "
                         f"does not fit a {h}x{w} input", index, "kernel")
    return ho, wo


def _conv_stat(h, w, cin, cout, kernel, stride, padding, use_bias, index):
    ho, wo = _window(h, w, kernel, stride, padding, index)
    params = kernel * kernel * cin * cout + (cout if use_bias else 0)
    return (ho, wo, cout), params, ho * wo * kernel * kernel * cin * cout


def _depthwise_stat(h, w, channels, kernel, stride, padding, use_bias, index):
    ho, wo = _window(h, w, kernel, stride, padding, index)
    params = kernel * kernel * channels + (channels if use_bias else 0)
    return (ho, wo, channels), params, ho * wo * kernel * kernel * channels


def _layer_stat(layer: Layer, shape, index: int):
    kind = layer.kind
    if kind in ("act", "dropout"):
        return shape, 0, 0
    if kind == "bn":
        return shape, 4 * shape[-1], 0
    if kind in ("gap", "gmp"):
        return (shape[-1],), 0, 0
    if kind == "flatten":
        return (shape[0] * shape[1] * shape[2],), 0, 0
    if kind == "dense":
        params = shape[0] * layer.filters + (layer.filters if layer.use_bias else 0)
        return (layer.filters,), params, shape[0] * layer.filters
    h, w, cin = shape
    if kind == "conv":
        return _conv_stat(h, w, cin, layer.filters, layer.kernel, layer.stride, layer.padding,
                          layer.use_bias, index)
    if kind in ("maxpool", "avgpool"):
        return _window(h, w, layer.kernel, layer.stride, layer.padding, index) + (cin,), 0, 0
    if kind == "dwconv":
        return _depthwise_stat(h, w, cin, layer.kernel, layer.stride, layer.padding, layer.use_bias, index)
    if kind == "sepconv":
        (ho, wo, _), params, flops = _depthwise_stat(h, w, cin, layer.kernel, layer.stride, layer.padding,
                                                     False, index)
        _, pointwise, pointwise_flops = _conv_stat(ho, wo, cin, layer.filters, 1, 1, "valid", layer.use_bias,
                                                   index)
        return (ho, wo, layer.filters), params + pointwise, flops + pointwise_flops
    if kind == "inverted":
        return _inverted_stat(layer, shape, index)
    # Residual blocks.
    cout = layer.out_filters
    if layer.shortcut == "identity" and cin != cout:
        raise ShapeError(f"an identity shortcut needs {cout} input channels, got {cin}; use 'projection'",
                         index, "shortcut")
    params = flops = 0
    bias = kind == "bottleneck_v1"
    current = shape
    for kernel, stride, filters in block_convs(layer):
        current, p, f = _conv_stat(current[0], current[1], current[2], filters, kernel, stride, "same",
                                   bias, index)
        params += p + 4 * filters
        flops += f
    if layer.shortcut == "projection":
        _, p, f = _conv_stat(h, w, cin, cout, 1, layer.stride, "same", bias, index)
        params += p + 4 * cout
        flops += f
    return current, params, flops


def block_convs(layer: Layer) -> Tuple[Tuple[int, int, int], ...]:
    """(kernel, stride, filters) of the main-path convolutions of a basic/bottleneck(_v1) block."""
    if layer.kind == "basic":
        return ((layer.kernel, layer.stride, layer.filters), (layer.kernel, 1, layer.filters))
    if layer.kind == "bottleneck":
        return ((1, 1, layer.filters), (layer.kernel, layer.stride, layer.filters), (1, 1, layer.out_filters))
    return ((1, layer.stride, layer.filters), (layer.kernel, 1, layer.filters), (1, 1, layer.out_filters))


def inverted_width(layer: Layer, in_channels: int) -> int:
    """The expanded (depthwise) width of an inverted residual block."""
    return layer.expansion * in_channels


def _inverted_stat(layer: Layer, shape, index: int):
    h, w, cin = shape
    wide = inverted_width(layer, cin)
    params = flops = 0
    if layer.expansion > 1:
        _, params, flops = _conv_stat(h, w, cin, wide, 1, 1, "same", False, index)
        params += 4 * wide
    (ho, wo, _), p, f = _depthwise_stat(h, w, wide, layer.kernel, layer.stride, "same", False, index)
    params, flops = params + p + 4 * wide, flops + f
    _, p, f = _conv_stat(ho, wo, wide, layer.filters, 1, 1, "same", False, index)
    return (ho, wo, layer.filters), params + p + 4 * layer.filters, flops + f


def _head_params(features: int, num_classes: int) -> int:
    if not isinstance(num_classes, numbers.Integral) or isinstance(num_classes, bool) or num_classes < 2:
        raise SpecError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return features * int(num_classes) + int(num_classes)


def load(path: str) -> ArchSpec:
    """Reads a spec JSON file; errors name the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise SpecError(f"cannot read spec file {path!r}: {error.strerror}") from None
    try:
        return ArchSpec.from_json(text)
    except SpecError as error:
        wrapped = type(error)(f"{path}: {error}")
        wrapped.layer_index, wrapped.field = error.layer_index, error.field
        raise wrapped from None


def save(spec: ArchSpec, path: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(spec.to_json(indent=2) + "\n")
