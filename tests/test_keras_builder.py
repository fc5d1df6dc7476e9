"""Tests for acompress.keras_builder: exact params/FLOPs, heads, errors, logits."""

import numpy as np
import pytest

import keras

from acompress import archspec
from acompress import keras_builder
from acompress import zoo
from tests import keras_helpers

A = archspec
SHAPES = [(32, 32, 3), (8, 8, 1)]


@pytest.mark.parametrize("input_shape", SHAPES, ids=["32x32x3", "8x8x1"])
@pytest.mark.parametrize("name", zoo.names())
def test_zoo_params_and_flops_match_keras(name, input_shape):
    spec, model = keras_helpers.zoo_model(name, input_shape)
    assert model.count_params() == spec.count_params(input_shape, 10)
    assert keras_helpers.count_multiply_adds(model) == spec.count_flops(input_shape, 10)


@pytest.mark.parametrize("name", sorted(keras_helpers.HAND_SPECS))
@pytest.mark.parametrize("num_classes", [2, 13])
def test_hand_specs_params_and_flops_match_keras(name, num_classes):
    spec, input_shape = keras_helpers.HAND_SPECS[name]
    model = keras_builder.build_model(spec, input_shape, num_classes)
    assert model.count_params() == spec.count_params(input_shape, num_classes)
    assert keras_helpers.count_multiply_adds(model) == spec.count_flops(input_shape, num_classes)
    assert tuple(model.output.shape) == (None, num_classes)
    assert tuple(model.get_layer("logits").input.shape[1:]) == spec.output_shapes(input_shape)[-1]


def test_digits_teacher_has_559306_params():
    _, model = keras_helpers.zoo_model("digits_cnn", (8, 8, 1))
    assert model.count_params() == 559_306


def test_output_is_float32_softmax():
    _, model = keras_helpers.zoo_model("digits_cnn", (8, 8, 1))
    probabilities = model(np.random.default_rng(0).normal(size=(5, 8, 8, 1)).astype("float32"), training=False)
    probabilities = keras.ops.convert_to_numpy(probabilities)
    assert probabilities.dtype == np.float32
    assert probabilities.shape == (5, 10)
    assert np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_mixed_precision_output_stays_float32():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        spec = A.ArchSpec([A.conv_bn_act(4), A.gap()])
        model = keras_builder.build_model(spec, (6, 6, 1), 3)
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.get_layer("logits").compute_dtype == "float16"
    assert model.output.dtype == "float32"
    out = keras.ops.convert_to_numpy(model(np.ones((2, 6, 6, 1), "float32")))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-3)


def test_layer_mapping_and_readable_names():
    spec, input_shape = keras_helpers.HAND_SPECS["basic_blocks_gap"]
    model = keras_builder.build_model(spec, input_shape, 4, name="teacher")
    assert model.name == "teacher"
    names = [layer.name for layer in model.layers]
    assert names[:4] == ["input", "l0_conv", "l1_bn", "l2_relu"]
    for expected in ("l3_block_conv1", "l3_block_bn2", "l3_block_add", "l3_block_out", "l4_block_proj_conv",
                     "l4_block_proj_bn", "l7_gap", "logits", "probabilities"):
        assert expected in names
    assert "l3_block_proj_conv" not in names  # identity shortcut
    conv = model.get_layer("l4_block_conv1")
    assert (conv.strides, conv.padding, conv.use_bias) == ((2, 2), "same", False)
    assert model.get_layer("l4_block_conv2").strides == (1, 1)
    assert model.get_layer("l4_block_proj_conv").kernel_size == (1, 1)
    assert model.get_layer("l6_block_conv1").kernel_size == (5, 5)


def test_bottleneck_puts_stride_on_middle_conv():
    spec = A.ArchSpec([A.bottleneck(4, stride=2), A.gap()])
    model = keras_builder.build_model(spec, (8, 8, 3), 2)
    strides = [model.get_layer(f"l0_block_conv{i}").strides for i in (1, 2, 3)]
    assert strides == [(1, 1), (2, 2), (1, 1)]
    assert model.get_layer("l0_block_conv3").filters == 16
    assert model.get_layer("l0_block_proj_conv").strides == (2, 2)


def test_default_spec_layers_use_keras_layer_types():
    spec, input_shape = keras_helpers.HAND_SPECS["plain_every_activation"]
    model = keras_builder.build_model(spec, input_shape, 3)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert kinds == {"InputLayer", "Conv2D", "BatchNormalization", "Activation", "MaxPooling2D",
                     "AveragePooling2D", "Flatten", "Dropout", "Dense"}
    assert model.get_layer("l5_maxpool").pool_size == (2, 2)
    assert model.get_layer("l8_avgpool").padding == "same"
    assert model.get_layer("l16_dropout").rate == 0.25


def test_batch_norm_momentum_defaults_to_0_9_and_is_configurable():
    spec = A.ArchSpec([A.conv_bn_act(4), A.basic(4), A.gap()])
    default = keras_builder.build_model(spec, (6, 6, 1), 3)
    custom = keras_builder.build_model(spec, (6, 6, 1), 3, bn_momentum=0.5, bn_epsilon=1e-5)
    bns = lambda model: [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert len(bns(default)) == 3
    assert {(l.momentum, l.epsilon) for l in bns(default)} == {(0.9, 1e-3)}
    assert {(l.momentum, l.epsilon) for l in bns(custom)} == {(0.5, 1e-5)}


def test_spec_that_does_not_fit_raises_shape_error_naming_the_layer():
    spec = A.ArchSpec([A.conv(4), A.conv(4, 5, padding="valid"), A.flatten()])
    with pytest.raises(archspec.ShapeError, match="layer 1"):
        keras_builder.build_model(spec, (4, 4, 1), 3)
    with pytest.raises(archspec.ShapeError, match="input shape"):
        keras_builder.build_model(spec, (8, 8), 3)


def test_bad_class_count_raises_spec_error():
    spec = A.ArchSpec([A.gap()])
    with pytest.raises(archspec.SpecError, match="num_classes"):
        keras_builder.build_model(spec, (4, 4, 1), 1)


def test_numpy_input_shape_is_accepted():
    spec = A.ArchSpec([A.conv(2), A.gap()])
    model = keras_builder.build_model(spec, np.array([5, 5, 1]), np.int64(3))
    assert tuple(model.input.shape) == (None, 5, 5, 1)


def _inputs(shape=(6, 6, 1), n=3):
    return np.random.default_rng(1).normal(size=(n,) + shape).astype("float32")


def test_logits_model_of_a_built_model_shares_the_logits_layer():
    spec = A.ArchSpec([A.conv_bn_act(4), A.gap()])
    model = keras_builder.build_model(spec, (6, 6, 1), 3)
    logits = keras_builder.logits_model(model)
    x = _inputs()
    z = keras.ops.convert_to_numpy(logits(x))
    p = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.softmax(z)), p, rtol=1e-5, atol=1e-6)
    assert logits.get_layer("logits") is model.get_layer("logits")


@pytest.mark.parametrize("head", ["fused", "activation", "softmax_layer", "linear"])
def test_logits_model_of_foreign_classifiers(head):
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    if head == "fused":
        outputs = keras.layers.Dense(3, activation="softmax")(x)
    elif head == "activation":
        outputs = keras.layers.Activation("softmax")(keras.layers.Dense(3)(x))
    elif head == "softmax_layer":
        outputs = keras.layers.Softmax()(keras.layers.Dense(3)(x))
    else:
        outputs = keras.layers.Dense(3)(x)
    model = keras.Model(inputs, outputs)
    logits = keras_builder.logits_model(model)
    x = _inputs()
    z = keras.ops.convert_to_numpy(logits(x))
    expected = keras.ops.convert_to_numpy(model(x))
    if head != "linear":
        z = keras.ops.convert_to_numpy(keras.ops.softmax(z))
    np.testing.assert_allclose(z, expected, rtol=1e-5, atol=1e-6)


def test_logits_model_rejects_a_model_without_dense_head():
    inputs = keras.Input((6, 6, 1))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pool")(inputs))
    with pytest.raises(ValueError, match="'pool'.*GlobalAveragePooling2D"):
        keras_builder.logits_model(model)
