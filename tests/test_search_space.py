"""SearchSpace: vocabularies, the out-of-space error, snapping, serialisation."""

import pytest

from acompress import archspec as a
from acompress import search_space
from tests import specs


def test_default_space_holds_the_test_specs():
    space = search_space.SearchSpace()
    for name, spec in specs.all_specs().items():
        if name in ("mobilenet_like", "resnet_v1_like", "separable_like"):
            with pytest.raises(search_space.OutOfSearchSpaceError):
                space.check(spec)  # the default space keeps to the classic kinds
            space.extended_for(spec).check(spec)
        else:
            space.check(spec)
            assert space.extended_for(spec) is space


def test_extended_for_adds_only_what_the_spec_uses_and_keeps_old_hashes():
    default = search_space.SearchSpace()
    assert "expansions" not in default.to_dict()  # stored spaces of older corpora keep their hash
    mobile = default.extended_for(specs.mobilenet_like())
    assert mobile.kinds == a.CLASSIC_KINDS + ("inverted",)
    assert mobile.to_dict()["expansions"] == [1, 2, 3, 4, 6]
    assert mobile.hash != default.hash
    resnet = default.extended_for(specs.resnet_v1_like())
    assert resnet.paddings == ("same", "valid", 3, 1) and resnet.kinds[-1] == "bottleneck_v1"
    wide = default.extended_for(a.ArchSpec([a.conv(1280, 1), a.act("hard_swish"), a.gap()]))
    assert 1280 in wide.filters and list(wide.filters) == sorted(wide.filters)
    assert wide.activations[-1] == "hard_swish"
    for space in (mobile, resnet, wide):
        assert search_space.SearchSpace.from_dict(space.to_dict()) == space
    # An unused vocabulary is not stored, so it cannot tell two spaces apart either.
    assert search_space.SearchSpace(expansions=(2,)) == search_space.SearchSpace()


@pytest.mark.parametrize("spec, index, field", [
    (a.ArchSpec([a.conv(37), a.gap()]), 0, "filters"),
    (a.ArchSpec([a.conv(8, kernel=9), a.gap()]), 0, "kernel"),
    (a.ArchSpec([a.conv(8), a.gap(), a.dropout(0.33)]), 2, "rate"),
])
def test_out_of_space_names_layer_and_field(spec, index, field):
    with pytest.raises(search_space.OutOfSearchSpaceError) as info:
        search_space.SearchSpace().check(spec)
    assert (info.value.layer_index, info.value.field) == (index, field)
    assert not isinstance(info.value, ValueError)  # a different kind of error from a malformed spec
    assert f"layer {index}" in str(info.value)


def test_too_many_layers_and_restricted_kinds():
    space = search_space.SearchSpace(max_layers=4)
    with pytest.raises(search_space.OutOfSearchSpaceError, match="max_layers=4"):
        space.check(specs.digits_teacher())
    plain = search_space.SearchSpace(kinds=("conv", "bn", "act", "maxpool", "gap"))
    with pytest.raises(search_space.OutOfSearchSpaceError, match="'basic' is not in this search space"):
        plain.check(specs.residual())
    assert plain.contains(specs.digits_teacher()) and not plain.contains(specs.residual())


def test_snap_width_and_round_trip():
    space = search_space.SearchSpace()
    assert space.snap_width(64) == 64 and space.snap_width(37.9) == 36 and space.snap_width(0.2) == 1
    assert search_space.SearchSpace.from_dict(space.to_dict()) == space
    assert search_space.SearchSpace.from_dict(space.to_dict()).hash == space.hash
    assert search_space.SearchSpace(max_layers=8).hash != space.hash
    with pytest.raises(ValueError, match="unknown search space fields"):
        search_space.SearchSpace.from_dict({"widths": [1]})


@pytest.mark.parametrize("kwargs, fragment", [
    ({"filters": (8, 8, 16)}, "filters vocabulary repeats"),
    ({"kernels": (0, 3)}, "kernel value 0 is invalid"),
    ({"rates": (0.5, 1.0)}, "rate value 1.0 is invalid"),
    ({"paddings": ("same", "full")}, "padding value 'full' is invalid"),
    ({"strides": ()}, "kind 'conv' is in the search space but the stride vocabulary is empty"),
    ({"kinds": ("conv", "bn")}, "no spec could become flat"),
    ({"kinds": ("conv", "pool", "gap")}, "unknown layer kinds"),
    ({"max_layers": 0}, "max_layers"),
])
def test_space_rejects_bad_vocabularies(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        search_space.SearchSpace(**kwargs)
