"""Tests for acompress.sampler: units, deterministic choices, and the child sampler."""

import json
import logging
import math

import pytest

from acompress import archspec as a
from acompress import sampler
from acompress import search_space

DIGITS_SHAPE = (8, 8, 1)
CIFAR_SHAPE = (32, 32, 3)
SPACE = search_space.SearchSpace()


def digits_teacher():
    return a.ArchSpec([a.conv_bn_act(64), a.conv_bn_act(64), a.maxpool(), a.conv_bn_act(128),
                       a.conv_bn_act(128), a.maxpool(), a.conv_bn_act(256), a.gap()])


def resnet18():
    layers = [a.conv_bn_act(64)]
    for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [a.basic(width, stride=stride), a.basic(width)]
    layers.append(a.gap())
    return a.ArchSpec(layers)


def vgg_like():
    return a.ArchSpec([a.conv_bn_act(64), a.conv_bn_act(64), a.maxpool(), a.conv_bn_act(128),
                       a.conv_bn_act(128), a.maxpool(), a.flatten(), a.dense(512), a.act(), a.dropout(0.5),
                       a.dense(512), a.act(), a.dropout(0.5)])


def bottleneck_net():
    return a.ArchSpec([a.conv_bn_act(64), a.bottleneck(64, shortcut="projection"), a.bottleneck(64),
                       a.bottleneck(128, stride=2), a.bottleneck(128), a.gap()])


def conv_widths(spec):
    return [layer.filters for layer in spec if layer.kind in ("conv", "dense", "basic", "bottleneck")]


@pytest.fixture(scope="module")
def digits_children():
    return sampler.sample_children(digits_teacher(), input_shape=DIGITS_SHAPE, num_classes=10, count=500, seed=0)


# -- units ------------------------------------------------------------------------
def test_digits_teacher_params():
    assert digits_teacher().count_params(DIGITS_SHAPE, 10) == 559_306


def test_units_of_digits_teacher():
    unit_list = sampler.units(digits_teacher())
    assert [u.kind for u in unit_list] == ["conv", "conv", "pool", "conv", "conv", "pool", "conv", "transition"]
    assert [(u.start, u.stop) for u in unit_list] == [(0, 3), (3, 6), (6, 7), (7, 10), (10, 13), (13, 14),
                                                      (14, 17), (17, 18)]
    assert [u.index for u in unit_list if u.removable] == [0, 1, 2, 3, 4, 5, 6]
    assert [u.width for u in unit_list if u.scalable] == [64, 64, 128, 128, 256]
    assert sampler.removable_units(digits_teacher(), DIGITS_SHAPE) == (0, 1, 2, 3, 4, 5, 6)


def test_units_attach_trailing_layers_and_keep_leading_ones():
    spec = a.ArchSpec([a.bn(), a.conv(8), a.act(), a.gap(), a.dropout(0.5), a.dense(16), a.act(), a.dropout(0.2)])
    unit_list = sampler.units(spec)
    assert [(u.kind, u.start, u.stop) for u in unit_list] == [
        ("other", 0, 1), ("conv", 1, 3), ("transition", 3, 5), ("dense", 5, 8)]
    assert [u.index for u in unit_list if u.removable] == [1, 3]
    assert [u.index for u in sampler.units(vgg_like()) if u.kind == "dense"] == [7, 8]


def test_width_groups():
    assert sampler.width_groups(digits_teacher()) == ((0, 1), (3, 4), (6,))
    # The stem and the identity blocks of stage 1 share a width; each later stage is its
    # projection block plus its identity block.
    assert sampler.width_groups(resnet18()) == ((0, 1, 2), (3, 4), (5, 6), (7, 8))
    assert sampler.width_groups(vgg_like()) == ((0, 1), (3, 4), (7, 8))
    assert sampler.width_groups(bottleneck_net()) == ((0,), (1, 2), (3, 4))


# -- apply_choices -----------------------------------------------------------------
def test_half_widths_on_digits_teacher():
    child = sampler.apply_choices(digits_teacher(), width_multipliers=0.5)
    expected = a.ArchSpec([a.conv_bn_act(32), a.conv_bn_act(32), a.maxpool(), a.conv_bn_act(64),
                           a.conv_bn_act(64), a.maxpool(), a.conv_bn_act(128), a.gap()])
    assert child == expected
    assert sampler.scale_widths(digits_teacher(), 0.5) == expected


def test_no_choices_return_the_teacher():
    for teacher in (digits_teacher(), resnet18(), vgg_like(), bottleneck_net()):
        assert sampler.apply_choices(teacher) == teacher
        assert sampler.apply_choices(teacher, width_multipliers=1.0) == teacher


def test_per_unit_multipliers_sequence_and_mapping():
    teacher = digits_teacher()
    # One entry per unit; entries of pools and the transition are ignored.
    child = sampler.apply_choices(teacher, width_multipliers=[1.0, 0.25, 0.0, 0.5, 1.0, 0.0, 0.125, 0.0])
    assert conv_widths(child) == [64, 16, 64, 128, 32]
    assert sampler.apply_choices(teacher, width_multipliers={1: 0.25, 3: 0.5, 6: 0.125}) == child


def test_widths_snap_to_the_space_and_never_grow():
    teacher = a.ArchSpec([a.conv(64), a.conv(39), a.gap()])
    # 64 * 0.3 = 19.2 -> 20; 39 * 0.99 = 38.6 snaps to 40, which would grow: 36 instead.
    child = sampler.apply_choices(teacher, width_multipliers=[0.3, 0.99, 1.0])
    assert conv_widths(child) == [20, 36]
    assert sampler.scaled_width(39, 0.99, SPACE) == 36
    assert sampler.scaled_width(39, 1.0, SPACE) == 39  # multiplier 1 keeps an out-of-space width
    assert sampler.scaled_width(64, 0.001, SPACE) == 1


def test_identity_blocks_follow_the_stage_width():
    teacher = resnet18()
    child = sampler.apply_choices(teacher, width_multipliers={0: 0.5, 3: 0.25, 4: 1.0, 5: 0.5})
    assert conv_widths(child) == [32, 32, 32, 32, 32, 128, 128, 512, 512]
    assert all(layer.shortcut == teacher[i].shortcut for i, layer in enumerate(child) if layer.kind == "basic")
    child.output_shapes(CIFAR_SHAPE)


def test_removing_a_projection_block_lets_its_identity_successor_continue_the_stage():
    teacher = resnet18()
    child = sampler.remove_unit(teacher, 3, input_shape=CIFAR_SHAPE)  # basic(128, stride 2, projection)
    blocks = [layer for layer in child if layer.kind == "basic"]
    assert [(b.filters, b.stride, b.shortcut) for b in blocks[:3]] == [
        (64, 1, "identity"), (64, 1, "identity"), (64, 1, "identity")]
    assert [(b.filters, b.shortcut) for b in blocks[3:]] == [
        (256, "projection"), (256, "identity"), (512, "projection"), (512, "identity")]
    assert child.count_params(CIFAR_SHAPE, 10) < teacher.count_params(CIFAR_SHAPE, 10)


def test_removing_the_stem_switches_the_next_identity_block_to_projection():
    child = sampler.remove_unit(resnet18(), 0, input_shape=CIFAR_SHAPE)
    first = child[0]
    assert (first.kind, first.filters, first.shortcut) == ("basic", 64, "projection")
    assert child[1].shortcut == "identity"


def test_identity_block_that_would_grow_switches_to_projection():
    teacher = a.ArchSpec([a.conv(128), a.conv(32), a.basic(32), a.gap()])
    child = sampler.remove_unit(teacher, 1, input_shape=(8, 8, 3))
    assert (child[1].filters, child[1].shortcut) == (32, "projection")


def test_identity_block_on_the_image_keeps_its_width():
    teacher = a.ArchSpec([a.basic(16), a.conv(64), a.gap()])
    child = sampler.scale_widths(teacher, 0.5)
    assert conv_widths(child) == [16, 32]
    child.output_shapes((8, 8, 16))


def test_bottleneck_blocks_scale_mid_width_and_keep_identity_consistent():
    teacher = bottleneck_net()
    child = sampler.scale_widths(teacher, 0.5)
    assert conv_widths(child) == [32, 32, 32, 64, 64]
    assert [layer.out_filters for layer in child if layer.kind == "bottleneck"] == [128, 128, 256, 256]
    child.output_shapes(CIFAR_SHAPE)
    # A conv of 36 channels cannot feed an identity bottleneck (36 / 4 = 9 is not an allowed width).
    odd = a.ArchSpec([a.conv(64), a.bottleneck(16), a.gap()])
    child = sampler.apply_choices(odd, width_multipliers={0: 36 / 64})
    assert (child[0].filters, child[1].filters, child[1].shortcut) == (36, 16, "projection")
    child.output_shapes(CIFAR_SHAPE)


def test_shrink_kernels():
    child = sampler.shrink_kernels(digits_teacher(), {6: 1, 0: 3})
    assert [layer.kernel for layer in child if layer.kind == "conv"] == [3, 3, 3, 3, 1]
    child = sampler.shrink_kernels(resnet18(), {3: 1})
    assert child[3 + 2].kernel == 1 and child[3 + 2].kind == "basic"


@pytest.mark.parametrize("kwargs, message", [
    ({"width_multipliers": 1.5}, "never grows"),
    ({"width_multipliers": 0.0}, "never grows"),
    ({"width_multipliers": {2: 0.5}}, "not scalable"),
    ({"width_multipliers": [0.5, 0.5]}, "one width multiplier per unit"),
    ({"removed_units": [7]}, "cannot be removed"),
    ({"removed_units": [99]}, "does not exist"),
    ({"removed_units": [0, 1, 3, 4, 6]}, "at least one"),
    ({"kernel_choices": {0: 5}}, "only shrink"),
    ({"kernel_choices": {2: 1}}, "conv, block or depthwise"),
])
def test_bad_choices_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sampler.apply_choices(digits_teacher(), **kwargs)


# -- sample_children --------------------------------------------------------------
def assert_valid_children(teacher, children, input_shape, num_classes=10):
    teacher_params = teacher.count_params(input_shape, num_classes)
    hashes = [child.hash for child in children]
    assert len(set(hashes)) == len(hashes)
    assert teacher.hash not in hashes
    for child in children:
        SPACE.check(child)
        child.output_shapes(input_shape)
        assert child.count_params(input_shape, num_classes) < teacher_params
        assert a.ArchSpec.from_json(child.to_json()) == child
        widths = [u.width for u in sampler.units(child) if u.scalable]
        assert max(widths) <= max(u.width for u in sampler.units(teacher) if u.scalable)


def test_digits_children_are_valid(digits_children):
    assert len(digits_children) == 500
    assert_valid_children(digits_teacher(), digits_children, DIGITS_SHAPE)


@pytest.mark.parametrize("make_teacher", [resnet18, vgg_like, bottleneck_net])
def test_cifar_children_are_valid(make_teacher):
    teacher = make_teacher()
    children = sampler.sample_children(teacher, input_shape=CIFAR_SHAPE, num_classes=10, count=150, seed=3)
    assert len(children) == 150
    assert_valid_children(teacher, children, CIFAR_SHAPE)
    summary = sampler.ratio_summary(teacher, children, CIFAR_SHAPE, 10)
    assert summary["min"] < 2 and summary["max"] > 64


def test_resnet_children_keep_identity_shortcuts_consistent():
    children = sampler.sample_children(resnet18(), input_shape=CIFAR_SHAPE, num_classes=10, count=200, seed=5)
    removed_blocks = 0
    for child in children:
        shapes = child.output_shapes(CIFAR_SHAPE)
        for index, layer in enumerate(child):
            if layer.kind == "basic" and layer.shortcut == "identity":
                incoming = shapes[index - 1][-1] if index else CIFAR_SHAPE[-1]
                assert incoming == layer.filters == shapes[index][-1]
        removed_blocks += sum(1 for layer in child if layer.kind == "basic") < 8
    assert removed_blocks > 20  # block removal is exercised


def test_kernel_shrinking_is_sampled():
    teacher = a.ArchSpec([a.conv_bn_act(64, kernel=7), a.maxpool(), a.conv_bn_act(128, kernel=5),
                          a.conv_bn_act(128), a.gap()])
    children = sampler.sample_children(teacher, input_shape=(32, 32, 3), num_classes=10, count=300, seed=0)
    assert_valid_children(teacher, children, (32, 32, 3))
    kernels = {layer.kernel for child in children for layer in child if layer.kind == "conv"}
    assert kernels == {7, 5, 3, 1}
    pointwise = sum(any(layer.kind == "conv" and layer.kernel == 1 for layer in child) for child in children)
    shrunk_7 = sum(child[0].kind == "conv" and child[0].kernel < 7 for child in children)
    assert 0 < pointwise < shrunk_7  # 3 -> 1 is the rare one


def test_same_seed_same_children_and_prefix_property(digits_children):
    again = sampler.sample_children(digits_teacher(), input_shape=DIGITS_SHAPE, num_classes=10, count=500, seed=0)
    assert [c.hash for c in again] == [c.hash for c in digits_children]
    fewer = sampler.sample_children(digits_teacher(), input_shape=DIGITS_SHAPE, num_classes=10, count=50, seed=0)
    assert fewer == digits_children[:50]
    other = sampler.sample_children(digits_teacher(), input_shape=DIGITS_SHAPE, num_classes=10, count=50, seed=1)
    assert [c.hash for c in other] != [c.hash for c in fewer]
    assert len({c.hash for c in other} & {c.hash for c in fewer}) < 10


def test_exclude_hashes_are_respected(digits_children):
    excluded = {child.hash for child in digits_children[:100]}
    children = sampler.sample_children(digits_teacher(), input_shape=DIGITS_SHAPE, num_classes=10, count=100,
                                       seed=0, exclude_hashes=excluded)
    assert len(children) == 100
    assert not excluded & {child.hash for child in children}


def test_coverage_of_compression_ratios(digits_children):
    # Targets are log-uniform in [1, 256]: P(ratio >= 10) = 1 - log 10 / log 256 = 0.58. Over 12
    # seeds the observed fraction was 0.54-0.59 (sd ~0.02 for 500 children), so 0.5 is a safe
    # "majority" threshold; the extremes came out at 1.00-1.07 and 299-364.
    summary = sampler.ratio_summary(digits_teacher(), digits_children, DIGITS_SHAPE, 10)
    assert summary["min"] <= 2.0
    assert summary["max"] >= 100.0
    assert summary["fraction_at_least"]["10"] >= 0.5
    assert summary["fraction_at_least"]["100"] >= 0.08
    # Every octave from 1x to 256x is populated (about 62 expected in each).
    assert all(bin_["count"] >= 20 for bin_ in summary["histogram"][:8])


def test_small_teacher_exhausts_with_a_clear_error(caplog):
    teacher = a.ArchSpec([a.conv(4), a.gap()])
    with pytest.raises(sampler.SamplerExhaustedError, match="found only"):
        sampler.sample_children(teacher, input_shape=(8, 8, 1), num_classes=2, count=50, seed=0)
    with caplog.at_level(logging.WARNING, logger=sampler.__name__):
        children = sampler.sample_children(teacher, input_shape=(8, 8, 1), num_classes=2, count=50, seed=0,
                                           allow_fewer=True)
    assert 0 < len(children) < 50
    assert_valid_children(teacher, children, (8, 8, 1), num_classes=2)
    assert "found only" in caplog.text


def test_config_validation_and_round_trip():
    config = sampler.SamplerConfig(max_ratio=64.0, p_remove=0.2)
    data = json.loads(json.dumps(config.to_dict(), sort_keys=True))
    assert sampler.SamplerConfig.from_dict(data) == config
    assert data["width_grid"][0] == 1 / 32 and data["width_grid"][-1] == 1.0
    for bad in ({"max_ratio": 1.0}, {"p_remove": 1.5}, {"width_grid": (0.5,)}, {"width_grid": (0.5, 0.25, 1.0)}):
        with pytest.raises(ValueError):
            sampler.SamplerConfig(**bad)
    with pytest.raises(ValueError, match="unknown"):
        sampler.SamplerConfig.from_dict({"nope": 1})


def test_config_changes_the_distribution():
    teacher = digits_teacher()
    narrow = sampler.sample_children(teacher, input_shape=DIGITS_SHAPE, num_classes=10, count=200, seed=0,
                                     config=sampler.SamplerConfig(max_ratio=4.0, p_remove=0.0))
    summary = sampler.ratio_summary(teacher, narrow, DIGITS_SHAPE, 10)
    assert summary["quantiles"]["q90"] < 6.0


# -- reporting ----------------------------------------------------------------------
def test_compression_ratio_and_summary_fields(digits_children):
    teacher = digits_teacher()
    half = sampler.scale_widths(teacher, 0.5)
    ratio = sampler.compression_ratio(teacher, half, DIGITS_SHAPE, 10)
    assert ratio == pytest.approx(559_306 / half.count_params(DIGITS_SHAPE, 10))
    assert 3.5 < ratio < 4.0  # widths halve: params fall almost 4x

    summary = sampler.ratio_summary(teacher, digits_children, DIGITS_SHAPE, 10)
    assert set(summary) == {"count", "teacher_params", "min", "max", "mean_log2", "quantiles",
                            "fraction_at_least", "histogram"}
    assert summary["count"] == 500 and summary["teacher_params"] == 559_306
    quantiles = list(summary["quantiles"].values())
    assert list(summary["quantiles"]) == ["q05", "q10", "q25", "q50", "q75", "q90", "q95"]
    assert summary["min"] <= quantiles[0] and quantiles == sorted(quantiles) and quantiles[-1] <= summary["max"]
    assert sum(bin_["count"] for bin_ in summary["histogram"]) == 500
    assert [bin_["low"] for bin_ in summary["histogram"]][:3] == [1, 2, 4]
    top = summary["histogram"][-1]
    assert top["low"] <= summary["max"] < top["high"]
    assert math.isfinite(summary["mean_log2"])
    json.dumps(summary)
    empty = sampler.ratio_summary(teacher, [], DIGITS_SHAPE, 10)
    assert empty["count"] == 0 and empty["histogram"] == []


# -- keras.applications kinds: inverted, bottleneck_v1, depthwise, separable --------------
from tests import specs as shared_specs  # noqa: E402


def test_units_and_groups_of_a_mobilenet():
    spec = shared_specs.mobilenet_like()
    kinds = [unit.kind for unit in sampler.units(spec)]
    assert kinds == ["conv"] + ["block"] * 6 + ["conv", "transition"]
    # Residual blocks: 12 -> 12 at stride 1 (unit 3), 16 -> 16 (units 5, 6); they share their input's group.
    assert sampler.residual_units(spec) == (3, 5, 6)
    assert sampler.width_groups(spec) == ((0,), (1,), (2, 3), (4, 5, 6), (7,))


def test_residual_inverted_blocks_follow_their_input_and_expansions_only_shrink():
    spec = shared_specs.mobilenet_like()
    child = sampler.apply_choices(spec, width_multipliers={2: 0.5, 3: 0.25, 4: 0.5},
                                  expansion_choices={4: 3}, space=SPACE.extended_for(spec))
    blocks = [layer for layer in child if layer.kind == "inverted"]
    # 12 x 0.5 snaps to 4; units 3, 5, 6 take their input's width (their multipliers are ignored).
    assert [b.filters for b in blocks] == [8, 4, 4, 8, 8, 8]
    assert [b.expansion for b in blocks] == [1, 6, 6, 3, 6, 6]
    assert [b.has_residual(c) for b, c in zip(blocks, [16, 8, 4, 4, 8, 8])] == [False, False, True, False, True, True]
    with pytest.raises(ValueError, match="only shrink"):
        sampler.apply_choices(spec, expansion_choices={4: 8})
    with pytest.raises(ValueError, match="not an inverted"):
        sampler.apply_choices(spec, expansion_choices={0: 2})


def test_a_residual_inverted_block_that_cannot_follow_its_input_loses_the_residual():
    spec = shared_specs.mobilenet_like()
    # Removing unit 2 (12 wide, strided) leaves unit 3 (12 -> 12) behind an 8-wide input: it keeps
    # the width 8 (8 <= 12), and so its residual.
    child = sampler.apply_choices(spec, removed_units=(2,))
    assert child[4] == a.inverted(8, expansion=6)
    # Narrower than its input instead: it cannot take 16 (wider than its teacher width 12), so it scales
    # its own width and has no residual.
    wide_input = a.ArchSpec([a.conv(16, 3, 2), a.inverted(12), a.gap()])
    child = sampler.apply_choices(wide_input, width_multipliers={1: 0.5})
    assert child[1] == a.inverted(4) and not child[1].has_residual(16)


@pytest.mark.parametrize("name", ["mobilenet_like", "resnet_v1_like", "separable_like"])
def test_sampler_draws_valid_children_of_the_new_kinds(name):
    spec = getattr(shared_specs, name)()
    space = SPACE.extended_for(spec)
    children = sampler.sample_children(spec, input_shape=CIFAR_SHAPE, num_classes=10, count=40, seed=0, space=space)
    teacher_params = spec.count_params(CIFAR_SHAPE, 10)
    assert len({child.hash for child in children}) == 40
    for child in children:
        assert space.contains(child) and child.count_params(CIFAR_SHAPE, 10) < teacher_params
        child.output_shapes(CIFAR_SHAPE)
    assert sampler.sample_children(spec, input_shape=CIFAR_SHAPE, num_classes=10, count=40, seed=0) == children
    if name == "mobilenet_like":
        expansions = {layer.expansion for child in children for layer in child if layer.kind == "inverted"}
        assert expansions == {1, 2, 3, 4, 6}  # 1 only where the teacher has it (block 0)
        assert all(sum(layer.kind == "inverted" and layer.expansion == 1 for layer in child) <= 1
                   for child in children)


def test_teachers_without_inverted_blocks_keep_their_children():
    """The expansion draw only happens for inverted blocks: a classic teacher's children are unchanged."""
    config = sampler.SamplerConfig()
    assert "p_expansion" not in config.to_dict()
    assert sampler.SamplerConfig.from_dict(config.to_dict()) == config
    assert sampler.SamplerConfig(p_expansion=0.5).to_dict()["p_expansion"] == 0.5
    children = sampler.sample_children(digits_teacher(), input_shape=DIGITS_SHAPE, num_classes=10, count=5, seed=3)
    again = sampler.sample_children(digits_teacher(), input_shape=DIGITS_SHAPE, num_classes=10, count=5, seed=3,
                                    config=sampler.SamplerConfig(p_expansion=1.0))
    assert children == again
