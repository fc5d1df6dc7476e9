"""Shared helpers for the Keras builder/parser tests.

`count_multiply_adds` counts a built Keras model's multiply-adds from the Keras
layers and their symbolic shapes alone, independently of `archspec`, so the two
counts can be compared. `zoo_model` builds (and caches, for the whole test session)
zoo teachers, so the builder and parser tests share the slow builds.
"""

import functools
import math

import keras

from acompress import archspec
from acompress import keras_builder
from acompress import zoo


def _layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def count_multiply_adds(model: keras.Model) -> int:
    """Multiply-adds of every Conv2D and Dense layer (each called once), from Keras shapes."""
    total = 0
    for layer in _layers(model):
        if isinstance(layer, (keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)):
            _, height, width, out_channels = layer.output.shape
            in_channels = layer.input.shape[-1]
            kh, kw = layer.kernel_size
            total += height * width * kh * kw * in_channels * layer.depth_multiplier
            if isinstance(layer, keras.layers.SeparableConv2D):
                total += height * width * in_channels * layer.depth_multiplier * out_channels
        elif isinstance(layer, keras.layers.Conv2D):
            _, height, width, out_channels = layer.output.shape
            in_channels = layer.input.shape[-1]
            kh, kw = layer.kernel_size
            total += height * width * out_channels * kh * kw * in_channels // layer.groups
        elif isinstance(layer, keras.layers.Dense):
            positions = math.prod(layer.input.shape[1:-1])
            total += positions * layer.input.shape[-1] * layer.units
    return total


@functools.lru_cache(maxsize=None)
def zoo_model(name: str, input_shape, num_classes: int = 10):
    """(spec, built model) of a zoo teacher, cached across test modules."""
    spec = zoo.get(name, input_shape)
    return spec, keras_builder.build_model(spec, input_shape, num_classes)


A = archspec

# Hand-written specs that, together, use every layer kind, every block type, both
# shortcut kinds, every activation, every transition and every padding kind.
HAND_SPECS = {
    "plain_every_activation": (A.ArchSpec([
        A.conv(8, 3, 1, "same"), A.bn(), A.act("relu"),
        A.conv(8, 3, 1, "valid", use_bias=False), A.act("relu6"),
        A.maxpool(2), A.conv(12, 1), A.act("elu"),
        A.avgpool(3, 1, "same"), A.act("selu"),
        A.conv(16, 5, 2, "same"), A.act("gelu"), A.act("swish"),
        A.maxpool(2, 1, "same"), A.avgpool(2, 2, "valid"),
        A.flatten(), A.dropout(0.25), A.dense(32), A.act("tanh"), A.bn(),
        A.dense(16, use_bias=False), A.act("sigmoid"), A.dropout(0.5),
    ]), (16, 16, 3)),
    "basic_blocks_gap": (A.ArchSpec([
        A.conv_bn_act(16, use_bias=False),
        A.basic(16), A.basic(32, stride=2), A.basic(32, shortcut="projection"),
        A.basic(32, kernel=5), A.gap(),
    ]), (12, 12, 3)),
    "bottleneck_blocks_gmp": (A.ArchSpec([
        A.conv(16, 3, 2), A.bn(), A.act(),
        A.bottleneck(4), A.bottleneck(8, stride=2), A.bottleneck(8),
        A.bottleneck(8, shortcut="projection", kernel=1), A.gmp(), A.dense(24), A.act(), A.dropout(0.1),
    ]), (15, 13, 2)),
    "blocks_at_start_and_end": (A.ArchSpec([
        A.basic(8, stride=2), A.bottleneck(2), A.gap(),
    ]), (9, 9, 8)),
    # ResNet50's stem (integer paddings) and v1 bottlenecks of every shortcut.
    "resnet_v1_stem_and_blocks": (A.ArchSpec([
        A.conv(16, 7, 2, padding=3), A.bn(), A.act(), A.maxpool(3, 2, padding=1),
        A.bottleneck_v1(4, shortcut="projection"), A.bottleneck_v1(4), A.bottleneck_v1(8, stride=2), A.gap(),
    ]), (20, 20, 3)),
    # MobileNetV2's blocks (with and without a residual, expansion 1 and 6), depthwise and separable
    # convolutions, hard-swish, and an integer padding before a depthwise convolution.
    "mobile_blocks": (A.ArchSpec([
        A.conv(16, 3, 2, use_bias=False), A.bn(), A.act("relu6"),
        A.inverted(8, expansion=1), A.inverted(8, stride=2), A.inverted(8), A.inverted(12, kernel=5),
        A.dwconv(3, 1, padding=2, use_bias=True), A.act("hard_swish"),
        A.sepconv(24, 3, 2), A.bn(), A.act("swish"),
        A.inverted(24, expansion=3, activation="hard_swish"), A.dwconv(5, 2), A.bn(), A.act(),
        A.sepconv(16, 1, 1, "valid", use_bias=False), A.gap(),
    ]), (17, 16, 3)),
}
