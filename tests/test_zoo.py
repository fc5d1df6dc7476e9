"""Tests for acompress.zoo: members, reference parameter counts, the small-input rule."""

import pytest

from acompress import archspec
from acompress import zoo

ALL = ("cifar_cnn", "digits_cnn", "resnet18", "resnet34", "vgg11", "vgg13", "vgg16", "vgg19")


def _kinds(spec, kind):
    return [layer for layer in spec if layer.kind == kind]


def _bn_channels(spec, input_shape):
    """Channels of all batch norms (spec BN layers and those inside blocks)."""
    total = 0
    for layer, params in zip(spec, spec.layer_params(input_shape)):
        if layer.kind == "bn":
            total += params // 4
        elif layer.kind == "basic":
            total += 2 * layer.filters + (layer.filters if layer.shortcut == "projection" else 0)
    return total


def test_names():
    assert zoo.names() == ALL


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown teacher 'vgg17'.*digits_cnn.*resnet18.*vgg19"):
        zoo.get("vgg17", (32, 32, 3))


def test_digits_cnn_is_the_reference_teacher():
    spec = zoo.get("digits_cnn", (8, 8, 1), 10)
    assert spec.count_params((8, 8, 1), 10) == 559_306
    assert spec == archspec.ArchSpec([
        archspec.conv_bn_act(64), archspec.conv_bn_act(64), archspec.maxpool(2),
        archspec.conv_bn_act(128), archspec.conv_bn_act(128), archspec.maxpool(2),
        archspec.conv_bn_act(256), archspec.gap()])
    assert all(layer.use_bias for layer in _kinds(spec, "conv"))


def test_cifar_cnn_is_the_cpu_cifar_teacher():
    spec = zoo.get("cifar_cnn", (32, 32, 3), 10)
    assert spec.count_params((32, 32, 3), 10) == 1_178_666
    assert spec.count_flops((32, 32, 3), 10) == 52_791_808
    widths = [layer.filters for layer in _kinds(spec, "conv")]
    assert widths == [32, 32, 64, 64, 128, 128, 256, 256]
    assert len(_kinds(spec, "maxpool")) == 3
    assert spec.output_shapes((32, 32, 3))[-2] == (4, 4, 256)


@pytest.mark.parametrize("name, convs", [("vgg11", 8), ("vgg13", 10), ("vgg16", 13), ("vgg19", 16)])
def test_vgg_structure(name, convs):
    spec = zoo.get(name, (32, 32, 3))
    assert len(_kinds(spec, "conv")) == convs
    assert len(_kinds(spec, "bn")) == convs
    assert len(_kinds(spec, "maxpool")) == 5
    assert [layer.kind for layer in spec[-2:]] == ["maxpool", "gap"]
    assert not _kinds(spec, "dense")
    assert spec.output_shapes((32, 32, 3))[-2] == (1, 1, 512)


@pytest.mark.parametrize("name, blocks", [("resnet18", 8), ("resnet34", 16)])
def test_resnet_structure(name, blocks):
    spec = zoo.get(name, (32, 32, 3))
    assert spec[:3] == archspec.ArchSpec([archspec.conv_bn_act(64, use_bias=False), archspec.gap()])[:3]
    basic = _kinds(spec, "basic")
    assert len(basic) == blocks
    projections = [layer for layer in basic if layer.shortcut == "projection"]
    assert [(layer.filters, layer.stride) for layer in projections] == [(128, 2), (256, 2), (512, 2)]
    assert spec.output_shapes((32, 32, 3))[-2] == (4, 4, 512)


# Reference trainable-parameter counts of the PyTorch CIFAR models (kuangliu/pytorch-cifar,
# 10 classes). Keras counts 4 numbers per batch-norm channel, PyTorch 2 trainable ones.
@pytest.mark.parametrize("name, torch_params", [("vgg16", 14_728_266), ("resnet18", 11_173_962)])
def test_matches_reference_cifar_parameter_counts(name, torch_params):
    spec = zoo.get(name, (32, 32, 3))
    keras_params = spec.count_params((32, 32, 3), 10)
    assert keras_params - 2 * _bn_channels(spec, (32, 32, 3)) == torch_params


def test_small_input_rule_for_vgg():
    counts = {shape: len(_kinds(zoo.get("vgg16", shape), "maxpool"))
              for shape in [(32, 32, 3), (31, 40, 3), (8, 8, 1), (3, 3, 1), (2, 9, 1), (1, 1, 3)]}
    assert counts == {(32, 32, 3): 5, (31, 40, 3): 4, (8, 8, 1): 3, (3, 3, 1): 1, (2, 9, 1): 1, (1, 1, 3): 0}
    # The pools that remain are the first ones: the spec is VGG16 with its last pools dropped.
    small = zoo.get("vgg16", (8, 8, 1))
    full = zoo.get("vgg16", (32, 32, 3))
    pool_positions = [i for i, layer in enumerate(full) if layer.kind == "maxpool"]
    dropped = set(pool_positions[3:])
    assert small == archspec.ArchSpec([layer for i, layer in enumerate(full) if i not in dropped])


def test_small_input_rule_for_resnet():
    def stage_strides(shape):
        return [layer.stride for layer in zoo.get("resnet18", shape) if layer.kind == "basic"][::2]

    assert stage_strides((32, 32, 3)) == [1, 2, 2, 2]
    assert stage_strides((8, 8, 1)) == [1, 2, 2, 2]
    assert stage_strides((4, 4, 1)) == [1, 2, 2, 1]
    assert stage_strides((3, 5, 1)) == [1, 2, 2, 1]  # 3 -> 2 -> 1
    assert stage_strides((1, 1, 1)) == [1, 1, 1, 1]
    tiny = zoo.get("resnet18", (1, 1, 1))
    # Widths still change, so each stage's first block keeps its projection.
    assert [layer.shortcut for layer in tiny if layer.kind == "basic"][::2] == \
        ["identity", "projection", "projection", "projection"]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 2, 3), (5, 7, 2), (8, 8, 1), (33, 31, 3), (224, 224, 3)])
def test_every_member_fits_every_input_shape(name, shape):
    spec = zoo.get(name, shape, num_classes=10)
    final = spec.output_shapes(shape)[spec.transition_index - 1]
    assert min(final[:2]) >= 1
    assert spec.count_params(shape, 10) > 0


def test_spec_does_not_depend_on_channels_or_classes():
    assert zoo.get("resnet34", (16, 16, 1)) == zoo.get("resnet34", (16, 16, 3), num_classes=100)


def test_argument_errors():
    with pytest.raises(archspec.ShapeError, match="input shape"):
        zoo.get("vgg11", (32, 32))
    with pytest.raises(archspec.ShapeError, match="input shape"):
        zoo.get("vgg11", (0, 32, 3))
    with pytest.raises(archspec.SpecError, match="num_classes"):
        zoo.get("vgg11", (32, 32, 3), num_classes=1)
