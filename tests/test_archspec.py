"""ArchSpec: validation, canonical JSON, hashing, shapes, params and FLOPs."""

import json

import pytest

from acompress import archspec as a
from acompress import zoo
from tests import specs


@pytest.mark.parametrize("name", sorted(specs.all_specs()))
def test_json_round_trip_is_exact(name):
    spec = specs.all_specs()[name]
    text = spec.to_json()
    assert a.ArchSpec.from_json(text) == spec
    assert a.ArchSpec.from_json(spec.to_json(indent=2)) == spec
    assert json.dumps(json.loads(text), sort_keys=True, separators=(",", ":")) == text


def test_hash_is_stable_and_distinguishes_specs():
    teacher = specs.digits_teacher()
    assert teacher.hash == specs.digits_teacher().hash
    assert teacher.hash == "a367645bd6546882"  # pinned: corpus shards key on it
    narrower = a.ArchSpec([a.conv(32) if l.kind == "conv" and i == 0 else l for i, l in enumerate(teacher)])
    assert narrower.hash != teacher.hash
    assert len({s.hash for s in specs.all_specs().values()}) == len(specs.all_specs())


def test_specs_are_immutable_and_hashable():
    spec = specs.digits_teacher()
    with pytest.raises(Exception):
        spec.layers = ()
    with pytest.raises(Exception):
        spec.layers[0].filters = 3
    assert len({spec, specs.digits_teacher()}) == 1


def test_digits_teacher_parameters_and_flops():
    spec = specs.digits_teacher()
    assert spec.count_params(specs.DIGITS_SHAPE, 10) == 559_306
    # Convs at 8x8 (two), 4x4 (two), 2x2 (one) plus the head.
    expected = (64 * 9 * 1 * 64 + 64 * 9 * 64 * 64 + 16 * 9 * 64 * 128 + 16 * 9 * 128 * 128
                + 4 * 9 * 128 * 256 + 256 * 10)
    assert spec.count_flops(specs.DIGITS_SHAPE, 10) == expected


def test_output_shapes_follow_strides_and_padding():
    shapes = specs.vgg_like().output_shapes(specs.CIFAR_SHAPE)
    assert shapes[0] == (28, 28, 32)      # 5x5 valid
    assert shapes[2] == (14, 14, 32)      # avgpool 2
    assert shapes[6] == (7, 7, 64)        # maxpool 3 stride 2 same
    assert shapes[7] == (7 * 7 * 64,)
    res = specs.residual().output_shapes(specs.CIFAR_SHAPE)
    assert res[3] == (32, 32, 16) and res[4] == (16, 16, 32) and res[5] == (16, 16, 32) and res[6] == (8, 8, 64)


@pytest.mark.parametrize("layers, index, field", [
    ([a.conv(0), a.gap()], 0, "filters"),
    ([a.conv(8), a.Layer("conv", kernel=3, stride=1, filters=8, padding="full", use_bias=True), a.gap()],
     1, "padding"),
    ([a.conv(8), a.act("mish"), a.gap()], 1, "activation"),
    ([a.conv(8), a.gap(), a.dropout(1.5)], 2, "rate"),
    ([a.conv(8), a.gap(), a.Layer("dense", filters=4, use_bias=1)], 2, "use_bias"),
    ([a.Layer("conv", kernel=3, stride=1, filters=8, padding="same", use_bias=True, rate=0.5), a.gap()],
     0, "rate"),
    ([a.Layer("conv", kernel=3, filters=8, padding="same", use_bias=True), a.gap()], 0, "stride"),
    ([a.Layer("pool"), a.gap()], 0, "kind"),
    ([a.basic(8, stride=2, shortcut="identity"), a.gap()], 0, "shortcut"),
    ([a.conv(8), a.dense(10), a.gap()], 1, "kind"),
    ([a.conv(8), a.gap(), a.conv(8)], 2, "kind"),
    ([a.conv(8), a.gap(), a.flatten()], 2, "kind"),
])
def test_malformed_specs_name_layer_and_field(layers, index, field):
    with pytest.raises(a.SpecError) as info:
        a.ArchSpec(layers)
    assert info.value.layer_index == index
    assert info.value.field == field
    assert f"layer {index}" in str(info.value) and f"'{field}'" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_spec_must_become_flat():
    with pytest.raises(a.SpecError, match="never becomes flat"):
        a.ArchSpec([a.conv(8)])


@pytest.mark.parametrize("text, fragment", [
    ("{not json", "not valid JSON"),
    ("[]", "JSON object"),
    ('{"layers": 3}', "'layers' must be a list"),
    ('{"layers": [{"filters": 3}]}', "field 'kind'"),
    ('{"layers": [{"kind": "conv", "kernel": 3, "stride": 1, "filters": 8, "padding": "same", '
     '"use_bias": true, "groups": 2}, {"kind": "gap"}]}', "unknown field(s) ['groups']"),
    ('{"format_version": 9, "layers": []}', "format_version"),
    ('{"layers": [], "extra": 1}', "unknown top-level keys"),
])
def test_malformed_json_errors(text, fragment):
    with pytest.raises(a.SpecError) as info:
        a.ArchSpec.from_json(text)
    assert fragment in str(info.value)


def test_shape_errors_name_the_layer():
    spec = a.ArchSpec([a.conv(8), a.maxpool(), a.maxpool(), a.maxpool(), a.maxpool(), a.gap()])
    with pytest.raises(a.ShapeError) as info:
        spec.count_params(specs.DIGITS_SHAPE, 10)
    assert info.value.layer_index == 4
    identity = a.ArchSpec([a.conv(8), a.basic(16, shortcut="identity"), a.gap()])
    with pytest.raises(a.ShapeError, match="identity shortcut needs 16 input channels, got 8"):
        identity.output_shapes(specs.DIGITS_SHAPE)
    with pytest.raises(a.ShapeError, match="input shape"):
        specs.digits_teacher().count_params((8, 8), 10)
    with pytest.raises(a.SpecError, match="num_classes"):
        specs.digits_teacher().count_params(specs.DIGITS_SHAPE, 1)


def test_load_and_save(tmp_path):
    path = str(tmp_path / "spec.json")
    a.save(specs.residual(), path)
    assert a.load(path) == specs.residual()
    (tmp_path / "bad.json").write_text('{"layers": [{"kind": "conv"}, {"kind": "gap"}]}')
    with pytest.raises(a.SpecError) as info:
        a.load(str(tmp_path / "bad.json"))
    assert "bad.json" in str(info.value) and info.value.layer_index == 0
    with pytest.raises(a.SpecError, match="cannot read spec file"):
        a.load(str(tmp_path / "missing.json"))


# -- the kinds of keras.applications teachers ------------------------------------------
def test_depthwise_and_separable_parameters_and_flops():
    spec = a.ArchSpec([a.dwconv(3, 2, use_bias=True), a.sepconv(8, 5, 1, padding="valid", use_bias=False), a.gap()])
    # 8x8x4 -> dwconv 3x3/2 'same' -> 4x4x4 -> sepconv 5x5 'valid' does not fit 4x4: a shape error.
    with pytest.raises(a.ShapeError):
        spec.count_params((8, 8, 4), 2)
    spec = a.ArchSpec([a.dwconv(3, 2, use_bias=True), a.sepconv(8, 3, 1, padding="valid", use_bias=False), a.gap()])
    assert spec.output_shapes((8, 8, 4))[:2] == ((4, 4, 4), (2, 2, 8))
    assert spec.layer_params((8, 8, 4))[:2] == (9 * 4 + 4, 9 * 4 + 4 * 8)
    assert spec.count_flops((8, 8, 4), 2) == 16 * 9 * 4 + 4 * (9 * 4 + 4 * 8) + 8 * 2


def test_inverted_block_parameters_flops_and_residual():
    block = a.inverted(16, expansion=6, stride=1)
    spec = a.ArchSpec([block, a.gap()])
    wide = 6 * 16
    # expand 16 -> 96 (+BN), depthwise 3x3 (+BN), project 96 -> 16 (+BN); no biases.
    assert spec.layer_params((8, 8, 16))[0] == 16 * wide + 4 * wide + 9 * wide + 4 * wide + wide * 16 + 4 * 16
    assert spec.count_flops((8, 8, 16), 2) == 64 * (16 * wide + 9 * wide + wide * 16) + 16 * 2
    assert block.has_residual(16) and not block.has_residual(8)
    assert not a.inverted(16, stride=2).has_residual(16)
    # Expansion 1 has no expand convolution.
    assert a.ArchSpec([a.inverted(8, expansion=1), a.gap()]).layer_params((4, 4, 8))[0] == \
        9 * 8 + 4 * 8 + 8 * 8 + 4 * 8


def test_integer_padding_and_bottleneck_v1():
    spec = specs.resnet_v1_like()
    shapes = spec.output_shapes((32, 32, 3))
    assert shapes[0] == (16, 16, 16)  # pad 3 then 7x7/2 valid: (38 - 7) // 2 + 1
    assert shapes[3] == (8, 8, 16)    # pad 1 then 3x3/2 valid
    assert shapes[6] == (4, 4, 64)    # the stride of a v1 block is on its first 1x1 convolution
    params = spec.layer_params((32, 32, 3))
    assert params[0] == 7 * 7 * 3 * 16 + 16
    # 16 -> 8 -> 8 -> 32 with biases, plus the 16 -> 32 projection with bias; BN 4 per channel.
    assert params[4] == (16 * 8 + 8) + (9 * 8 * 8 + 8) + (8 * 32 + 32) + (16 * 32 + 32) + 4 * (8 + 8 + 32 + 32)


@pytest.mark.parametrize("layer, field", [
    (a.Layer("conv", kernel=3, stride=1, filters=8, padding=0, use_bias=True), "padding"),
    (a.Layer("conv", kernel=3, stride=1, filters=8, padding=True, use_bias=True), "padding"),
    (a.Layer("inverted", kernel=3, stride=1, filters=8, activation="relu6", expansion=0), "expansion"),
    (a.Layer("inverted", kernel=3, stride=1, filters=8, activation="relu6"), "expansion"),
    (a.Layer("dwconv", kernel=3, stride=1, filters=8, padding="same", use_bias=False), "filters"),
    (a.Layer("bottleneck_v1", kernel=3, stride=2, filters=8, shortcut="identity"), "shortcut"),
])
def test_new_kinds_validate_their_fields(layer, field):
    with pytest.raises(a.SpecError) as info:
        a.ArchSpec([layer, a.gap()])
    assert info.value.field == field


def test_simplified_keeps_one_bn_and_one_of_each_activation_between_computing_layers():
    # A decoded MobileNetV2 child's tail: global pooling, then 7 batch norms and 12 ReLU6 interleaved.
    tail = [a.bn(), a.act("relu6"), a.act("relu6"), a.bn(), a.bn(), a.act("relu6"), a.bn(), a.bn(), a.act("relu6"),
            a.act("relu6"), a.bn(), a.bn()] + [a.act("relu6")] * 7
    spec = a.ArchSpec([a.inverted(16, stride=2), a.gap()] + tail)
    assert list(a.simplified(spec)) == [a.inverted(16, stride=2), a.gap(), a.bn(), a.act("relu6")]
    assert a.simplified(spec).count_params((32, 32, 3), 10) == spec.count_params((32, 32, 3), 10) - 6 * 4 * 16
    # Runs end at every layer that computes; dropout does not end one; other activations are kept, in order.
    spec = a.ArchSpec([a.conv(8), a.bn(), a.act(), a.dropout(0.1), a.bn(), a.act("tanh"), a.act(),
                       a.conv(8), a.bn(), a.act(), a.gap(), a.dense(10), a.act(), a.act()])
    assert list(a.simplified(spec)) == [a.conv(8), a.bn(), a.act(), a.dropout(0.1), a.act("tanh"),
                                        a.conv(8), a.bn(), a.act(), a.gap(), a.dense(10), a.act()]


@pytest.mark.parametrize("name", sorted(specs.all_specs()) + ["zoo:" + name for name in zoo.names()])
def test_simplified_leaves_written_networks_as_they_are(name):
    spec = zoo.get(name[4:], (32, 32, 3)) if name.startswith("zoo:") else specs.all_specs()[name]
    assert a.simplified(spec) is spec
