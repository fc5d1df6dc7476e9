"""Tests for acompress.keras_parser: round trips, foreign models, every error path."""

import os

import numpy as np
import pytest

import keras
from keras import layers

from acompress import archspec
from acompress import keras_builder
from acompress import keras_parser
from acompress import zoo
from tests import keras_helpers

A = archspec


# -- round trips ---------------------------------------------------------------
@pytest.mark.parametrize("input_shape", [(32, 32, 3), (8, 8, 1)], ids=["32x32x3", "8x8x1"])
@pytest.mark.parametrize("name", zoo.names())
def test_zoo_round_trip(name, input_shape):
    spec, model = keras_helpers.zoo_model(name, input_shape)
    assert keras_parser.describe_model(model) == (spec, input_shape, 10)


@pytest.mark.parametrize("name", sorted(keras_helpers.HAND_SPECS))
def test_hand_spec_round_trip(name):
    spec, input_shape = keras_helpers.HAND_SPECS[name]
    model = keras_builder.build_model(spec, input_shape, 5)
    assert keras_parser.describe_model(model) == (spec, input_shape, 5)


def test_hand_specs_cover_every_kind_activation_block_and_shortcut():
    used = [layer for spec, _ in keras_helpers.HAND_SPECS.values() for layer in spec]
    assert {layer.kind for layer in used} == set(archspec.KINDS)
    assert {layer.activation for layer in used if layer.kind == "act"} == set(archspec.ACTIVATIONS)
    assert {(layer.kind, layer.shortcut) for layer in used if layer.kind in archspec.BLOCKS} == {
        (kind, shortcut) for kind in archspec.BLOCKS for shortcut in archspec.SHORTCUTS}
    assert {layer.padding for layer in used if layer.kind == "conv"} >= set(archspec.PADDINGS)
    assert {type(layer.padding) for layer in used if layer.kind in archspec.WINDOWED} == {str, int}
    assert {layer.expansion for layer in used if layer.kind == "inverted"} >= {1, 3, 6}


@pytest.fixture(scope="module", params=["VGG16", "VGG19"])
def vgg_application(request):
    return getattr(keras.applications, request.param)(weights=None, input_shape=(32, 32, 3), classes=10)


def test_keras_applications_vgg(vgg_application):
    spec, input_shape, num_classes = keras_parser.describe_model(vgg_application)
    assert (input_shape, num_classes) == ((32, 32, 3), 10)
    convs = 13 if vgg_application.name == "vgg16" else 16
    assert len(spec) == 2 * convs + 5 + 1 + 4
    assert spec[:2] == (A.conv(64), A.act("relu"))
    assert spec[-5:] == (A.flatten(), A.dense(4096), A.act(), A.dense(4096), A.act())
    assert sum(layer.kind == "maxpool" for layer in spec) == 5
    assert spec.count_params(input_shape, 10) == vgg_application.count_params()
    assert spec.count_flops(input_shape, 10) == keras_helpers.count_multiply_adds(vgg_application)
    rebuilt = keras_builder.build_model(spec, input_shape, 10)
    assert rebuilt.count_params() == vgg_application.count_params()


# -- foreign models --------------------------------------------------------------
def test_sequential_with_fused_activations():
    model = keras.Sequential([
        keras.Input((10, 10, 3)),
        layers.Conv2D(8, 3, activation="relu"),
        layers.Conv2D(8, (3, 3), strides=(2, 2), padding="same", activation="swish", use_bias=False),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(16, activation="tanh"),
        layers.Dropout(0.3),
        layers.Dense(4, activation="softmax"),
    ])
    spec, input_shape, num_classes = keras_parser.describe_model(model)
    assert spec == A.ArchSpec([
        A.conv(8, 3, 1, "valid"), A.act("relu"), A.conv(8, 3, 2, "same", use_bias=False), A.act("swish"),
        A.maxpool(2), A.flatten(), A.dense(16), A.act("tanh"), A.dropout(0.3)])
    assert (input_shape, num_classes) == ((10, 10, 3), 4)


@pytest.mark.parametrize("head", ["fused", "activation", "softmax_layer", "logits"])
def test_head_forms(head):
    inputs = keras.Input((6, 6, 1))
    x = layers.GlobalMaxPooling2D()(layers.Conv2D(4, 3)(inputs))
    if head == "fused":
        outputs = layers.Dense(7, activation="softmax")(x)
    elif head == "activation":
        outputs = layers.Activation("softmax")(layers.Dense(7)(x))
    elif head == "softmax_layer":
        outputs = layers.Softmax()(layers.Dense(7)(x))
    else:
        outputs = layers.Dense(7)(x)
    spec, _, num_classes = keras_parser.describe_model(keras.Model(inputs, outputs))
    assert spec == A.ArchSpec([A.conv(4, 3, 1, "valid"), A.gmp()])
    assert num_classes == 7


def test_relu_layers_and_linear_activations():
    model = keras.Sequential([
        keras.Input((6, 6, 1)),
        layers.Conv2D(4, 3, padding="same"), layers.ReLU(),
        layers.Conv2D(4, 3, padding="same", activation="linear"), layers.ReLU(max_value=6),
        layers.Activation("linear"), layers.Dropout(0.0),
        layers.BatchNormalization(axis=3, momentum=0.5),
        layers.AveragePooling2D(pool_size=3, strides=1, padding="same"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(3),
    ])
    assert keras_parser.parse_model(model) == A.ArchSpec([
        A.conv(4), A.act("relu"), A.conv(4), A.act("relu6"), A.bn(), A.avgpool(3, 1, "same"), A.gap()])


def _residual_model(shortcut_first=False, projection_padding="same", input_shape=(8, 8, 4)):
    """A hand-built ResNet in the style of keras.applications: Keras names, Add order varies."""
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    for filters, stride in ((4, 1), (8, 2)):
        y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        y = layers.BatchNormalization()(y)
        y = layers.Activation("relu")(y)
        y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
        y = layers.BatchNormalization()(y)
        shortcut = x
        if stride != 1:
            shortcut = layers.Conv2D(filters, 1, strides=stride, padding=projection_padding, use_bias=False)(x)
            shortcut = layers.BatchNormalization()(shortcut)
        x = layers.Add()([shortcut, y] if shortcut_first else [y, shortcut])
        x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(3, activation="softmax")(x))


@pytest.mark.parametrize("shortcut_first", [False, True])
@pytest.mark.parametrize("projection_padding", ["same", "valid"])
def test_foreign_residual_model(shortcut_first, projection_padding):
    model = _residual_model(shortcut_first, projection_padding)
    assert keras_parser.parse_model(model) == A.ArchSpec([
        A.conv(4, use_bias=False), A.bn(), A.act(), A.basic(4), A.basic(8, stride=2), A.gap()])


def test_nested_model_is_inlined():
    base = keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(4, 3, activation="relu"), layers.MaxPooling2D()],
                            name="base")
    inputs = keras.Input((8, 8, 3))
    outputs = layers.Dense(2, activation="softmax")(layers.Flatten()(base(inputs)))
    spec = keras_parser.parse_model(keras.Model(inputs, outputs))
    assert spec == A.ArchSpec([A.conv(4, 3, 1, "valid"), A.act(), A.maxpool(2), A.flatten()])


def test_unknown_spatial_size_parses_but_cannot_be_described():
    inputs = keras.Input((None, None, 3))
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, layers.Dense(2)(x))
    assert keras_parser.parse_model(model) == A.ArchSpec([A.conv(4, 3, 1, "valid"), A.gap()])
    with pytest.raises(keras_parser.UnsupportedModelError, match="InputLayer.*not fully defined"):
        keras_parser.describe_model(model)


# -- errors --------------------------------------------------------------------
def _classifier(*body, input_shape=(8, 8, 3), head=True):
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for layer in body:
        x = layer(x)
    if head:
        x = layers.Dense(3, activation="softmax", name="head")(x)
    return keras.Model(inputs, x)


def _assert_unsupported(model, name, type_name, *fragments):
    with pytest.raises(keras_parser.UnsupportedModelError) as caught:
        keras_parser.parse_model(model)
    error = caught.value
    assert isinstance(error, ValueError)
    message = str(error)
    assert f"'{name}'" in message and type_name in message, message
    assert (error.layer_name, error.layer_type) == (name, type_name)
    assert "supported" in message
    for fragment in fragments:
        assert fragment in message, message
    return message


GAP = layers.GlobalAveragePooling2D


@pytest.mark.parametrize("make_layer, type_name, fragment", [
    (lambda: layers.SeparableConv2D(4, 3, depth_multiplier=2, name="bad"), "SeparableConv2D", "depth_multiplier"),
    (lambda: layers.DepthwiseConv2D(3, depth_multiplier=2, name="bad"), "DepthwiseConv2D", "depth_multiplier"),
    (lambda: layers.DepthwiseConv2D(3, dilation_rate=2, name="bad"), "DepthwiseConv2D", "dilation_rate"),
    (lambda: layers.Conv2D(4, 3, dilation_rate=2, name="bad"), "Conv2D", "dilation_rate"),
    (lambda: layers.Conv2D(6, 3, groups=3, name="bad"), "Conv2D", "groups"),
    (lambda: layers.Conv2D(4, (3, 1), name="bad"), "Conv2D", "kernel_size"),
    (lambda: layers.Conv2D(4, 3, strides=(1, 2), name="bad"), "Conv2D", "strides"),
    (lambda: layers.Conv2D(4, 3, activation="softplus", name="bad"), "Conv2D", "softplus"),
    (lambda: layers.MaxPooling2D((2, 3), name="bad"), "MaxPooling2D", "pool_size"),
    (lambda: layers.BatchNormalization(center=False, name="bad"), "BatchNormalization", "center=False"),
    (lambda: layers.BatchNormalization(scale=False, name="bad"), "BatchNormalization", "scale=False"),
    (lambda: layers.BatchNormalization(axis=1, name="bad"), "BatchNormalization", "axis=1"),
    (lambda: layers.ReLU(negative_slope=0.1, name="bad"), "ReLU", "negative_slope"),
    (lambda: layers.ReLU(max_value=4, name="bad"), "ReLU", "max_value"),
    (lambda: layers.LeakyReLU(name="bad"), "LeakyReLU", "Activation"),
    (lambda: layers.Activation("softmax", name="bad"), "Activation", "softmax"),
    (lambda: layers.SpatialDropout2D(0.2, name="bad"), "SpatialDropout2D", "Dropout"),
    (lambda: layers.ZeroPadding2D(name="bad"), "ZeroPadding2D", "Conv2D"),
    (lambda: layers.Dropout(0.2, noise_shape=(None, 1, 1, 3), name="bad"), "Dropout", "noise_shape"),
])
def test_unsupported_spatial_layers(make_layer, type_name, fragment):
    _assert_unsupported(_classifier(make_layer(), GAP()), "bad", type_name, fragment)


@pytest.mark.parametrize("make_layer, type_name", [
    (lambda: layers.Rescaling(1 / 255, name="bad"), "Rescaling"),
    (lambda: layers.Normalization(mean=0.0, variance=1.0, name="bad"), "Normalization"),
])
def test_preprocessing_after_other_layers(make_layer, type_name):
    model = _classifier(layers.Conv2D(4, 3), make_layer(), GAP())
    _assert_unsupported(model, "bad", type_name, "first layers")


def test_channels_first_convolution():
    model = _classifier(layers.Conv2D(4, 3, data_format="channels_first", name="bad"), layers.Flatten())
    _assert_unsupported(model, "bad", "Conv2D", "channels_last")


def test_global_pool_with_keepdims():
    model = _classifier(layers.GlobalMaxPooling2D(keepdims=True, name="bad"), layers.Flatten())
    _assert_unsupported(model, "bad", "GlobalMaxPooling2D", "keepdims")


def test_dense_on_a_feature_map():
    model = _classifier(layers.Dense(4, name="bad"), GAP())
    _assert_unsupported(model, "bad", "Dense", "rank-4")


def test_second_flatten():
    model = _classifier(layers.Flatten(), layers.Flatten(name="bad"))
    _assert_unsupported(model, "bad", "Flatten", "once")


def test_concatenate():
    inputs = keras.Input((8, 8, 3))
    a = layers.Conv2D(4, 3, padding="same")(inputs)
    b = layers.Conv2D(4, 1)(inputs)
    x = layers.Concatenate(name="cat")([a, b])
    model = keras.Model(inputs, layers.Dense(3)(GAP()(x)))
    _assert_unsupported(model, "cat", "Concatenate", "2 tensors", "Add")


def test_multiple_inputs():
    a, b = keras.Input((8, 8, 3), name="left"), keras.Input((8, 8, 3), name="right")
    x = layers.Add()([layers.Conv2D(3, 1)(a), b])
    model = keras.Model([a, b], layers.Dense(3)(GAP()(x)), name="two_inputs")
    message = _assert_unsupported(model, "two_inputs", "Functional", "2 inputs", "one image input")
    assert "'left'" in message and "'right'" in message


def test_multiple_outputs():
    inputs = keras.Input((8, 8, 3))
    x = GAP()(inputs)
    model = keras.Model(inputs, [layers.Dense(3)(x), layers.Dense(2)(x)], name="two_heads")
    _assert_unsupported(model, "two_heads", "Functional", "2 outputs")


def test_flat_input():
    model = _classifier(layers.Dense(4), input_shape=(16,))
    _assert_unsupported(model, "image", "InputLayer", "(height, width, channels)")


def test_subclassed_and_unbuilt_models():
    class Net(keras.Model):
        def call(self, x):
            return x

    _assert_unsupported(Net(name="net"), "net", "Net", "subclassed")
    _assert_unsupported(keras.Sequential([layers.Dense(3)], name="lazy"), "lazy", "Sequential", "keras.Input")


def test_shared_layer():
    shared = layers.Conv2D(3, 3, padding="same", name="bad")
    model = _classifier(shared, shared, GAP())
    _assert_unsupported(model, "bad", "Conv2D", "more than once")


@pytest.mark.parametrize("make_head, type_name, fragment", [
    (lambda: layers.Dense(3, activation="sigmoid", name="bad"), "Dense", "sigmoid"),
    (lambda: layers.Dense(3, activation="softmax", use_bias=False, name="bad"), "Dense", "no bias"),
    (lambda: layers.Dense(1, name="bad"), "Dense", "1 unit"),
    (lambda: layers.Dropout(0.5, name="bad"), "Dropout", "classifier head"),
])
def test_bad_heads(make_head, type_name, fragment):
    model = _classifier(GAP(), layers.Dense(4), make_head(), head=False)
    _assert_unsupported(model, "bad", type_name, fragment)


def test_parameters_the_spec_does_not_model_are_caught():
    inputs = keras.Input((8, 8, 3))
    conv = layers.Conv2D(4, 3, name="bad")
    x = conv(inputs)
    conv.enable_lora(2)  # extra trainable matrices: the parameter check notices
    model = keras.Model(inputs, layers.Dense(3)(GAP()(x)))
    _assert_unsupported(model, "bad", "Conv2D", "174 parameters", "112")


def test_model_without_head():
    _assert_unsupported(_classifier(GAP(name="bad"), head=False), "bad", "GlobalAveragePooling2D",
                        "does not end in a classifier head")


def test_head_on_a_feature_map():
    model = _classifier(layers.Conv2D(3, 3), head=False)
    inputs = model.inputs[0]
    model = keras.Model(inputs, layers.Dense(3, activation="softmax", name="bad")(model.outputs[0]))
    _assert_unsupported(model, "bad", "Dense", "rank-4")


def _block_model(make_main, make_shortcut=lambda x: x, after_add=lambda x: layers.ReLU()(x), n_add=2):
    inputs = keras.Input((8, 8, 4))
    x = layers.Conv2D(4, 3, padding="same")(inputs)
    tensors = [make_main(x), make_shortcut(x)] + [x] * (n_add - 2)
    y = layers.Add(name="sum")(tensors)
    y = after_add(y)
    return keras.Model(inputs, layers.Dense(3)(GAP()(y)))


def _basic_main(x, use_bias=False, second_bn=True):
    y = layers.Conv2D(4, 3, padding="same", use_bias=use_bias)(x)
    y = layers.BatchNormalization()(y)
    y = layers.ReLU()(y)
    y = layers.Conv2D(4, 3, padding="same", use_bias=False)(y)
    return layers.BatchNormalization()(y) if second_bn else y


def test_block_templates_are_the_supported_ones():
    assert keras_parser.parse_model(_block_model(_basic_main)) == A.ArchSpec([A.conv(4), A.basic(4), A.gap()])


@pytest.mark.parametrize("model_factory, fragment", [
    (lambda: _block_model(lambda x: _basic_main(x, second_bn=False)), "match no residual block"),
    (lambda: _block_model(lambda x: _basic_main(x, use_bias=True)), "match no residual block"),
    (lambda: _block_model(_basic_main, lambda x: layers.Conv2D(4, 1, use_bias=False)(x)),
     "match no residual block"),
    (lambda: _block_model(_basic_main, after_add=lambda x: x), "not followed by a ReLU"),
    (lambda: _block_model(_basic_main, after_add=lambda x: layers.ReLU(max_value=6)(x)),
     "not followed by a ReLU"),
    (lambda: _block_model(_basic_main, n_add=3), "adds 3 tensors"),
])
def test_non_matching_add_topologies(model_factory, fragment):
    _assert_unsupported(model_factory(), "sum", "Add", fragment, "basic block")


def test_add_of_unrelated_branches():
    a, = [keras.Input((8, 8, 4))]
    left = layers.Conv2D(4, 1)(a)
    right = layers.Conv2D(4, 1)(a)
    y = layers.Add(name="sum")([layers.Add(name="inner")([left, right]), layers.Conv2D(4, 1)(a)])
    model = keras.Model(a, layers.Dense(3)(GAP()(layers.ReLU()(y))))
    _assert_unsupported(model, "sum", "Add", "do not branch from one tensor")


# -- loading -------------------------------------------------------------------
def test_load_keras_model_round_trip(tmp_path):
    spec, input_shape = keras_helpers.HAND_SPECS["bottleneck_blocks_gmp"]
    model = keras_builder.build_model(spec, input_shape, 4)
    path = tmp_path / "teacher.keras"
    model.save(path)
    loaded = keras_parser.load_keras_model(str(path))
    assert keras_parser.describe_model(loaded) == (spec, input_shape, 4)
    x = np.random.default_rng(0).normal(size=(2,) + input_shape).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)),
                               rtol=1e-5, atol=1e-6)


def test_load_keras_model_missing_path(tmp_path):
    path = os.path.join(tmp_path, "nowhere", "teacher.keras")
    with pytest.raises(FileNotFoundError, match="nowhere/teacher.keras"):
        keras_parser.load_keras_model(path)


def test_load_keras_model_unreadable_file(tmp_path):
    path = tmp_path / "broken.keras"
    path.write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match="broken.keras"):
        keras_parser.load_keras_model(path)


# -- keras.applications, preprocessing, padding, inverted blocks ---------------------
def _weighted_structure(layer_list):
    """(layer type, weight shapes) of the layers, in order."""
    return [(type(layer).__name__, [tuple(w.shape) for w in layer.weights]) for layer in layer_list]


@pytest.fixture(scope="module", params=["ResNet50", "ResNet101", "MobileNetV2"])
def application(request):
    options = {"alpha": 0.35} if request.param == "MobileNetV2" else {}
    keras.utils.set_random_seed(0)
    return getattr(keras.applications, request.param)(weights=None, input_shape=(32, 32, 3), classes=10, **options)


def test_keras_applications_round_trip(application):
    parsed = keras_parser.parse(application)
    spec = parsed.spec
    kinds = {layer.kind for layer in spec}
    if application.name.startswith("resnet"):
        blocks = 16 if application.name == "resnet50" else 33
        assert sum(layer.kind == "bottleneck_v1" for layer in spec) == blocks
        assert spec[0] == A.conv(64, 7, 2, padding=3) and spec[3] == A.maxpool(3, 2, padding=1)
        assert parsed.bn_epsilon == pytest.approx(1.001e-5)
    else:
        assert kinds == {"conv", "bn", "act", "inverted", "gap"}
        assert sum(layer.kind == "inverted" for layer in spec) == 17
        assert spec[3] == A.inverted(8, expansion=1)  # block 0: no expand convolution
        residual = [layer for index, layer in enumerate(spec) if layer.kind == "inverted"
                    and layer.has_residual(spec.output_shapes((32, 32, 3))[index - 1][-1])]
        assert len(residual) == sum(isinstance(layer, layers.Add) for layer in application.layers) == 10
    assert (parsed.input_shape, parsed.num_classes, parsed.preprocessing) == ((32, 32, 3), 10, None)
    assert spec.count_params((32, 32, 3), 10) == application.count_params()
    assert spec.count_flops((32, 32, 3), 10) == keras_helpers.count_multiply_adds(application)
    # The builder makes the same weighted layers, in the order the parser lists the model's.
    rebuilt = keras_builder.build_model(spec, (32, 32, 3), 10)
    assert rebuilt.count_params() == application.count_params()
    built = [rebuilt.get_layer(name) for name in keras_builder.weighted_layer_names(spec)]
    assert _weighted_structure(built) == _weighted_structure(parsed.weighted_layers)


def test_rescaling_prefix_is_preprocessing_not_spec():
    model = keras.Sequential([keras.Input((8, 8, 3)), layers.Rescaling(1 / 255, name="scale"),
                              layers.Conv2D(4, 3, activation="relu"), GAP(), layers.Dense(3, activation="softmax")])
    parsed = keras_parser.parse(model)
    assert parsed.spec == A.ArchSpec([A.conv(4, 3, 1, "valid"), A.act(), A.gap()])
    assert parsed.preprocessing_layers == ("scale",)
    np.testing.assert_allclose(parsed.preprocessing.mean, [0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(parsed.preprocessing.std, [255, 255, 255])
    assert parsed.spec.count_params((8, 8, 3), 3) == model.count_params()


def test_rescaling_then_normalization_compose_into_one_affine_map():
    normalization = layers.Normalization()
    rng = np.random.default_rng(0)
    normalization.adapt(rng.normal(size=(64, 4, 4, 3)) * [1, 2, 3] + [0.5, -1, 2])
    model = keras.Sequential([keras.Input((4, 4, 3)), layers.Rescaling([0.5, 2.0, 1.0], offset=[1.0, 0.0, -1.0]),
                              normalization, layers.Conv2D(2, 1), GAP(), layers.Dense(3)])
    preprocessing = keras_parser.parse(model).preprocessing
    x = rng.uniform(0, 255, size=(5, 4, 4, 3)).astype(np.float32)
    prefix = keras.Sequential([keras.Input((4, 4, 3)), model.layers[0], model.layers[1]])
    expected = np.asarray(prefix(x))
    np.testing.assert_allclose((x - np.array(preprocessing.mean)) / np.array(preprocessing.std), expected,
                               rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("prefix, fragment", [
    (lambda: layers.Rescaling(-1.0, name="bad"), "positive scales"),
    (lambda: layers.Normalization(mean=1.0, variance=4.0, invert=True, name="bad"), "invert=True"),
    (lambda: layers.Rescaling([1.0, 2.0], name="bad"), "2 values for 3 channels"),
])
def test_unsupported_preprocessing(prefix, fragment):
    _assert_unsupported(_classifier(prefix(), layers.Conv2D(4, 3), GAP()), "bad", type(prefix()).__name__, fragment)


def test_zero_padding_before_a_window():
    # TensorFlow's 'same' padding of a strided 3x3 window on an even size is (0, 1): a 'same' conv.
    model = _classifier(layers.ZeroPadding2D(((0, 1), (0, 1))), layers.DepthwiseConv2D(3, 2, use_bias=False),
                        layers.ZeroPadding2D(2), layers.Conv2D(4, 3), layers.ZeroPadding2D(2), layers.Conv2D(4, 5),
                        layers.ZeroPadding2D(1),
                        layers.MaxPooling2D(3, 2), GAP(), input_shape=(8, 8, 3))
    spec = keras_parser.parse_model(model)
    # (2, 2) around a 5x5 window is 'same' too; around a 3x3 one it is an integer padding.
    assert spec == A.ArchSpec([A.dwconv(3, 2, "same"), A.conv(4, 3, 1, padding=2), A.conv(4, 5, 1, "same"),
                               A.maxpool(3, 2, padding=1), A.gap()])
    assert spec.count_params((8, 8, 3), 3) == model.count_params()
    rebuilt = keras_builder.build_model(spec, (8, 8, 3), 3)
    assert [type(layer).__name__ for layer in rebuilt.layers].count("ZeroPadding2D") == 2


@pytest.mark.parametrize("padding, following, fragment", [
    (((0, 1), (0, 1)), lambda: layers.MaxPooling2D(3, 2), "the same padding on every side"),  # pools pad -inf
    (((1, 2), (1, 2)), lambda: layers.Conv2D(4, 3), "the same padding on every side"),
    (1, lambda: layers.Conv2D(4, 3, padding="same"), "padding='valid'"),
])
def test_unsupported_zero_padding(padding, following, fragment):
    model = _classifier(layers.ZeroPadding2D(padding, name="bad"), following(), GAP())
    _assert_unsupported(model, "bad", "ZeroPadding2D", fragment)


def _inverted_layers(expanded, filters, stride=1, activation=None):
    activation = activation or (lambda: layers.ReLU(6.0))
    return [layers.Conv2D(expanded, 1, use_bias=False), layers.BatchNormalization(), activation(),
            layers.DepthwiseConv2D(3, stride, padding="same", use_bias=False), layers.BatchNormalization(),
            activation(), layers.Conv2D(filters, 1, use_bias=False), layers.BatchNormalization()]


def test_inverted_block_without_residual_is_one_layer():
    model = _classifier(*_inverted_layers(18, 8, stride=2), GAP())  # 3 channels in, expansion 6
    assert keras_parser.parse_model(model) == A.ArchSpec([A.inverted(8, expansion=6, stride=2), A.gap()])


def test_layers_of_an_inverted_block_that_would_add_its_input_stay_layers():
    # Stride 1 and 3 -> 3 channels: an inverted block would add its input, this model does not. (Its
    # last five layers alone are an expansion-1 block on 18 channels, which adds nothing.)
    model = _classifier(*_inverted_layers(18, 3), GAP())
    spec = keras_parser.parse_model(model)
    assert spec == A.ArchSpec([A.conv(18, 1, 1, "valid", False), A.bn(), A.act("relu6"),
                               A.inverted(3, expansion=1), A.gap()])


def test_inverted_pattern_followed_by_an_activation_is_not_a_linear_bottleneck():
    model = _classifier(*_inverted_layers(18, 8, stride=2), layers.ReLU(), GAP())
    assert "inverted" not in {layer.kind for layer in keras_parser.parse_model(model)}


def test_inverted_residual_add():
    inputs = keras.Input((8, 8, 4))
    x = inputs
    for layer in _inverted_layers(16, 4, activation=lambda: layers.Activation("hard_swish")):
        x = layer(x)
    x = layers.Add()([inputs, x])
    model = keras.Model(inputs, layers.Dense(3)(GAP()(x)))
    parsed = keras_parser.parse(model)
    assert parsed.spec == A.ArchSpec([A.inverted(4, expansion=4, activation="hard_swish"), A.gap()])
    assert parsed.spec.count_params((8, 8, 4), 3) == model.count_params()
