"""Tokens: the matrix layout, exact round trips, errors, legal masks and masked greedy decoding."""

import json

import numpy as np
import pytest

from acompress import archspec as a
from acompress import search_space
from acompress import tokens
from tests import specs

SMALL = search_space.SearchSpace(max_layers=20)


@pytest.fixture(scope="module")
def tok():
    return tokens.Tokenizer(SMALL)


def col(field):
    return tokens.FIELDS.index(field)


def kind_token(tokenizer, kind):
    return tokenizer.token("kind", kind)


def extra_specs():
    """Specs covering every activation, every transition, blocks with both shortcuts."""
    return {
        "plain_cnn": a.ArchSpec([a.conv(8, 3), a.act(), a.maxpool(), a.conv(16, 1, 2, "valid", False), a.flatten()]),
        "every_activation": a.ArchSpec([a.conv(4)] + [a.act(name) for name in a.CLASSIC_ACTIVATIONS] + [a.gap()]),
        "flat_only_tail": a.ArchSpec([a.conv(4, 7, 2), a.gmp(), a.dense(32), a.dropout(0.1), a.dense(16, False),
                                      a.bn(), a.act("swish"), a.dropout(0.5)]),
        "blocks": a.ArchSpec([a.conv(64), a.bottleneck(16), a.bottleneck(16, 2), a.basic(64, 1, 5),
                              a.basic(32, 2, 1), a.basic(32, 1, 3, "projection"), a.gap()]),
        "avgpool_same": a.ArchSpec([a.avgpool(3, 1, "same"), a.conv(2, 2), a.gap()]),
        "transition_only": a.ArchSpec([a.flatten()]),
        "bn_first": a.ArchSpec([a.bn(), a.dropout(0.25), a.flatten(), a.dense(4096)]),
    }


def all_test_specs():
    """The shared specs the default space holds (the new kinds are tested with FULL below)."""
    return {name: spec for name, spec in {**specs.all_specs(), **extra_specs()}.items()
            if search_space.SearchSpace().contains(spec)}


# -- layout ------------------------------------------------------------------------
def test_layout_and_vocabularies(tok):
    assert tokens.FIELDS == ("kind",) + tuple(f for f in a.FIELDS if f != "expansion")
    assert tok.fields == tokens.FIELDS and tokens.ALL_FIELDS == ("kind",) + a.FIELDS
    assert tok.shape == (20, 9)
    assert tok.vocab_sizes == tuple(2 + len(SMALL.values(field)) for field in tokens.FIELDS)
    assert tok.vocabulary("padding") == ("<pad>", "<na>", "same", "valid")
    assert tok.token("filters", 1) == 2 and tok.value("filters", 2) == 1
    assert tok.token("kind", SMALL.kinds[0]) == tokens.FIRST_VALUE
    with pytest.raises(search_space.OutOfSearchSpaceError):
        tok.token("filters", 37)
    matrix = tok.encode(specs.digits_teacher())
    assert matrix.dtype == np.int32 and matrix.shape == tok.shape
    assert (matrix[len(specs.digits_teacher()):] == tokens.PAD).all()
    bn_row = matrix[1]
    assert bn_row[0] == kind_token(tok, "bn") and (bn_row[1:] == tokens.NA).all()


def test_to_dict_round_trip_through_json(tok):
    data = json.loads(json.dumps(tok.to_dict(), sort_keys=True))
    again = tokens.Tokenizer.from_dict(data)
    assert again == tok and again.vocab_sizes == tok.vocab_sizes
    assert tokens.Tokenizer.from_dict(tokens.Tokenizer().to_dict()) != tok
    with pytest.raises(ValueError, match="does not match"):
        tokens.Tokenizer.from_dict({**data, "fields": list(reversed(data["fields"]))})


def test_plain_space_without_block_fields_is_a_vocabulary():
    space = search_space.SearchSpace(kinds=("conv", "bn", "act", "maxpool", "gap", "dense"), shortcuts=())
    assert tokens.Tokenizer(space).vocab_sizes[tokens.FIELDS.index("shortcut")] == 2  # PAD and NA only


# -- round trip ----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(all_test_specs()))
def test_round_trip_is_exact(tok, name):
    spec = all_test_specs()[name]
    for tokenizer in (tok, tokens.Tokenizer()):
        matrix = tokenizer.encode(spec)
        decoded = tokenizer.decode(matrix)
        assert decoded == spec and decoded.to_json() == spec.to_json()
        assert (tokenizer.encode(decoded) == matrix).all()


def test_batch_round_trip(tok):
    batch = list(all_test_specs().values())
    matrices = tok.encode_batch(batch)
    assert matrices.shape == (len(batch),) + tok.shape
    assert tok.decode_batch(matrices) == batch
    assert tok.encode_batch([]).shape == (0,) + tok.shape


# -- errors ------------------------------------------------------------------------
@pytest.mark.parametrize("spec, space, index, field", [
    (a.ArchSpec([a.conv(8), a.conv(37), a.gap()]), SMALL, 1, "filters"),
    (a.ArchSpec([a.conv(8), a.maxpool(4), a.gap()]), SMALL, 1, "kernel"),
    (a.ArchSpec([a.conv(8), a.gap(), a.dropout(0.33)]), SMALL, 2, "rate"),
    (specs.residual(), search_space.SearchSpace(kinds=("conv", "bn", "act", "gmp")), 3, "kind"),
    (specs.digits_teacher(), search_space.SearchSpace(max_layers=12), None, None),
])
def test_encode_out_of_space_names_layer_and_field(spec, space, index, field):
    with pytest.raises(search_space.OutOfSearchSpaceError) as info:
        tokens.Tokenizer(space).encode(spec)
    assert (info.value.layer_index, info.value.field) == (index, field)
    if index is None:
        assert "more than max_layers=12" in str(info.value)


def _mutated(tok, position, field, token):
    matrix = tok.encode(specs.vgg_like()).copy()
    matrix[position, col(field)] = token
    return matrix


@pytest.mark.parametrize("position, field, token, message", [
    (0, "filters", 999, "out of range"),
    (0, "kernel", -1, "out of range"),
    (3, "kind", tokens.NA, "NA is never a kind"),
    (3, "filters", tokens.NA, "NA, but this layer's kind uses"),
    (3, "padding", tokens.PAD, "PAD inside a layer"),
    (4, "rate", 3, "does not use this field"),
    (15, "kind", 2, "after the end"),
    (14, "shortcut", 2, "after the end"),
])
def test_decode_malformed_names_position_and_field(tok, position, field, token, message):
    with pytest.raises(a.SpecError, match=message) as info:
        tok.decode(_mutated(tok, position, field, token))
    assert (info.value.layer_index, info.value.field) == (position, field)
    assert f"layer {position}" in str(info.value)


def test_decode_other_malformed_inputs(tok):
    with pytest.raises(a.SpecError, match="PAD at the first position") as info:
        tok.decode(np.zeros(tok.shape, np.int32))
    assert (info.value.layer_index, info.value.field) == (0, "kind")
    with pytest.raises(a.SpecError, match="shape"):
        tok.decode(np.zeros((3, 9), np.int32))
    with pytest.raises(a.SpecError, match="integers"):
        tok.decode(tok.encode(specs.vgg_like()).astype(np.float32))
    identity = tok.encode(a.ArchSpec([a.conv(8), a.basic(8), a.gap()]))
    identity[1, col("stride")] = tok.token("stride", 2)
    with pytest.raises(a.SpecError, match="identity shortcut needs stride 1") as info:
        tok.decode(identity)
    assert (info.value.layer_index, info.value.field) == (1, "shortcut")
    dense_first = tok.encode(specs.vgg_like())
    dense_first[[7, 8]] = dense_first[[8, 7]]
    with pytest.raises(a.SpecError, match="needs a flat input") as info:
        tok.decode(dense_first)
    assert (info.value.layer_index, info.value.field) == (7, "kind")
    conv_after_gap = tok.encode(a.ArchSpec([a.conv(8), a.gap()]))
    conv_after_gap[2] = conv_after_gap[0]
    with pytest.raises(a.SpecError, match="needs a spatial input") as info:
        tok.decode(conv_after_gap)
    assert (info.value.layer_index, info.value.field) == (2, "kind")
    never_flat = tok.encode(a.ArchSpec([a.conv(8), a.gap()]))
    never_flat[1] = tokens.PAD
    with pytest.raises(a.SpecError, match="never becomes flat"):
        tok.decode(never_flat)


# -- legal_mask ----------------------------------------------------------------------
def _legal_values(tokenizer, matrix, position, field, input_shape=None):
    mask = tokenizer.legal_mask(matrix, position, field, input_shape)
    labels = tokenizer.vocabulary(field)
    return {labels[t] for t in np.flatnonzero(mask)}


def test_kind_phases(tok):
    matrix = tok.encode(specs.vgg_like())  # flatten at position 7
    at_start = _legal_values(tok, matrix, 0, "kind")
    assert at_start == set(a.SPATIAL_ONLY + a.TRANSITIONS + a.ANYWHERE) & set(SMALL.kinds)  # no PAD, dense, NA
    assert at_start == set(SMALL.kinds) - {"dense"}
    assert _legal_values(tok, matrix, 7, "kind") == at_start
    after_flat = _legal_values(tok, matrix, 8, "kind")
    assert after_flat == {"<pad>", "dense"} | set(a.ANYWHERE)
    matrix[12:] = tokens.PAD
    assert _legal_values(tok, matrix, 13, "kind") == {"<pad>"}  # after PAD only PAD
    assert _legal_values(tok, matrix, 12, "padding") == {"<pad>"}


def test_forced_transition_at_last_position():
    tokenizer = tokens.Tokenizer(search_space.SearchSpace(max_layers=4))
    spatial = tokenizer.encode(a.ArchSpec([a.conv(8), a.bn(), a.act(), a.gap()]))
    assert _legal_values(tokenizer, spatial, 3, "kind") == set(a.TRANSITIONS)
    flat = tokenizer.encode(a.ArchSpec([a.conv(8), a.gap(), a.act(), a.bn()]))
    assert _legal_values(tokenizer, flat, 3, "kind") == {"<pad>", "dense"} | set(a.ANYWHERE)


def test_only_kinds_of_the_space():
    tokenizer = tokens.Tokenizer(search_space.SearchSpace(max_layers=8, kinds=("conv", "act", "gap", "dense")))
    matrix = tokenizer.encode(a.ArchSpec([a.conv(8), a.act(), a.gap(), a.dense(8)]))
    assert _legal_values(tokenizer, matrix, 0, "kind") == {"conv", "act", "gap"}
    assert _legal_values(tokenizer, matrix, 3, "kind") == {"<pad>", "act", "dense"}


def test_unused_fields_are_na_only(tok):
    matrix = tok.encode(specs.vgg_like())
    for position, layer in enumerate(specs.vgg_like()):
        for field in tok.fields[1:]:
            legal = _legal_values(tok, matrix, position, field)
            if field in a.KIND_FIELDS[layer.kind]:
                assert "<na>" not in legal and "<pad>" not in legal and getattr(layer, field) in legal
            else:
                assert legal == {"<na>"}


def test_identity_shortcut_needs_stride_one_and_matching_channels(tok):
    def shortcuts(layers, input_shape=None):
        matrix = tok.encode(a.ArchSpec(layers + [a.gap()]))
        return _legal_values(tok, matrix, len(layers) - 1, "shortcut", input_shape)

    both, projection = {"identity", "projection"}, {"projection"}
    assert shortcuts([a.conv(16), a.basic(16)]) == both
    assert shortcuts([a.conv(16), a.basic(16, stride=2)]) == projection
    assert shortcuts([a.conv(16), a.basic(32, shortcut="projection")]) == projection
    assert shortcuts([a.conv(16), a.bottleneck(4)]) == both  # bottleneck outputs 4 * filters
    assert shortcuts([a.conv(16), a.bottleneck(16, shortcut="projection")]) == projection
    assert shortcuts([a.conv(16), a.maxpool(), a.bn(), a.basic(16)]) == both  # channels carried through
    assert shortcuts([a.basic(16)]) == both  # input channels unknown
    assert shortcuts([a.basic(16, shortcut="projection")], (8, 8, 3)) == projection
    assert shortcuts([a.basic(3)], (8, 8, 3)) == both


def test_valid_padding_only_where_the_window_fits(tok):
    def paddings(layers, input_shape):
        matrix = tok.encode(a.ArchSpec(layers + [a.gap()]))
        return _legal_values(tok, matrix, len(layers) - 1, "padding", input_shape)

    both = {"same", "valid"}
    assert paddings([a.maxpool(2), a.conv(8, 5)], (8, 8, 1)) == {"same"}  # 4x4 after the pool
    assert paddings([a.maxpool(2), a.conv(8, 3)], (8, 8, 1)) == both
    assert paddings([a.maxpool(2), a.conv(8, 5)], None) == both  # size unknown
    assert paddings([a.conv(8, 3, 2, "same"), a.avgpool(5, 1)], (7, 20, 1)) == {"same"}  # 4x10: height limits
    assert paddings([a.basic(8, 2), a.maxpool(3, 1)], (6, 6, 1)) == both  # blocks are 'same': 3x3


def test_legal_mask_ignores_later_entries_and_checks_the_prefix(tok):
    matrix = tok.encode(a.ArchSpec([a.conv(16), a.basic(16), a.gap()]))
    reference = tok.legal_mask(matrix, 1, "shortcut")
    garbage = matrix.copy()
    garbage[1, col("shortcut"):] = -7
    garbage[2:] = 999
    assert (tok.legal_mask(garbage, 1, "shortcut") == reference).all()
    assert tok.legal_mask(garbage, 1, col("shortcut")).dtype == bool
    bad = matrix.copy()
    bad[1, col("filters")] = tok.token("filters", 32)  # identity now mismatches
    with pytest.raises(a.SpecError, match="not legal") as info:
        tok.legal_mask(bad, 2, "kind")
    assert (info.value.layer_index, info.value.field) == (1, "shortcut")
    assert tok.legal_mask(matrix, 2, "kind", input_shape=(8, 8, 3)).any()  # 16 channels match after conv(16)
    with pytest.raises(a.SpecError, match="not legal") as info:
        tok.legal_mask(tok.encode(a.ArchSpec([a.basic(16), a.gap()])), 1, "kind", input_shape=(8, 8, 3))
    assert (info.value.layer_index, info.value.field) == (0, "shortcut")


def test_legal_mask_prefix_checked_against_input_shape(tok):
    matrix = tok.encode(a.ArchSpec([a.maxpool(2), a.conv(8, 5, padding="valid"), a.gap()]))
    tok.legal_mask(matrix, 2, "kind")
    with pytest.raises(a.SpecError, match="not legal") as info:
        tok.legal_mask(matrix, 2, "kind", input_shape=(8, 8, 1))
    assert (info.value.layer_index, info.value.field) == (1, "padding")


# -- masked greedy decoding ----------------------------------------------------------
def random_logits(tokenizer, rng, long=False):
    logits = [rng.normal(size=(tokenizer.shape[0], size)) * 3 for size in tokenizer.vocab_sizes]
    if long:  # push towards full-length specs: PAD and transitions unlikely
        logits[0][:, tokens.PAD] -= 20
        for kind in a.TRANSITIONS:
            if kind in tokenizer.space.kinds:
                logits[0][:, kind_token(tokenizer, kind)] -= 20
    return logits


def assert_valid_decode(tokenizer, matrix, input_shape):
    spec = tokenizer.decode(matrix)  # raises if malformed
    tokenizer.space.check(spec)
    assert (tokenizer.encode(spec) == matrix).all()
    if input_shape is not None:
        assert spec.count_params(input_shape, 10) > 0
    return spec


@pytest.mark.parametrize("max_layers", [12, 24])
@pytest.mark.parametrize("input_shape", [None, (8, 8, 1), (32, 32, 3)])
def test_greedy_decode_is_always_valid(max_layers, input_shape):
    tokenizer = tokens.Tokenizer(search_space.SearchSpace(max_layers=max_layers))
    lengths = set()
    for seed in range(3):
        rng = np.random.default_rng(seed)
        for draw in range(20):
            matrix = tokenizer.masked_greedy_decode(random_logits(tokenizer, rng, long=draw % 2 == 1), input_shape)
            lengths.add(len(assert_valid_decode(tokenizer, matrix, input_shape)))
    assert max_layers in lengths and min(lengths) < max_layers  # both short and full-length specs seen


def assert_greedy_follows_legal_mask(tokenizer, logits, input_shape):
    """Every greedy token is legal and, where there is a choice, the best-scoring legal one."""
    matrix = tokenizer.masked_greedy_decode(logits, input_shape)
    for position in range(tokenizer.shape[0]):
        for column in range(len(tokenizer.fields)):
            mask = tokenizer.legal_mask(matrix, position, column, input_shape)
            assert mask[matrix[position, column]]
            if mask.sum() > 1:  # greedy: the best legal score
                scores = logits[column][position]
                assert scores[matrix[position, column]] == scores[mask].max()


def test_greedy_decode_follows_legal_mask(tok):
    rng = np.random.default_rng(7)
    for draw in range(6):
        logits = random_logits(tok, rng, long=draw % 2 == 0)
        for input_shape in (None, (8, 8, 1)):
            assert_greedy_follows_legal_mask(tok, logits, input_shape)


@pytest.mark.parametrize("name", sorted(all_test_specs()))
def test_greedy_decode_recovers_a_spec_from_its_one_hot(tok, name):
    spec = all_test_specs()[name]
    matrix = tok.encode(spec)
    logits = [np.eye(size)[matrix[:, column]] for column, size in enumerate(tok.vocab_sizes)]
    assert (tok.masked_greedy_decode(logits) == matrix).all()
    assert (tok.masked_greedy_decode(logits, specs.CIFAR_SHAPE) == matrix).all()


def test_greedy_padded_and_batched_forms_agree(tok):
    rng = np.random.default_rng(3)
    draws = [random_logits(tok, rng, long=i % 2 == 0) for i in range(8)]
    width = tok.max_vocab_size + 2
    padded = np.stack([np.stack([np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=1e9)
                                 for x in logits], axis=1) for logits in draws]).astype(np.float32)
    one_by_one = np.stack([tok.masked_greedy_decode(logits, (8, 8, 1)) for logits in draws])
    assert (np.stack([tok.masked_greedy_decode(p, (8, 8, 1)) for p in padded]) == one_by_one).all()
    assert (tok.masked_greedy_decode_batch(padded, (8, 8, 1)) == one_by_one).all()
    per_field = [np.stack([logits[column] for logits in draws]) for column in range(len(tokens.FIELDS))]
    assert (tok.masked_greedy_decode_batch(per_field, (8, 8, 1)) == one_by_one).all()
    with pytest.raises(ValueError, match="field 'kernel'"):
        tok.masked_greedy_decode([draws[0][0], draws[0][1][:, :3]] + draws[0][2:])
    with pytest.raises(a.ShapeError):
        tok.masked_greedy_decode(draws[0], (8, 8))


def test_greedy_decode_never_picks_an_illegal_token_for_degenerate_scores(tok):
    for value in (-np.inf, np.nan, 0.0, np.inf):
        logits = [np.full((tok.shape[0], size), value) for size in tok.vocab_sizes]
        assert_valid_decode(tok, tok.masked_greedy_decode(logits, (8, 8, 1)), (8, 8, 1))


@pytest.mark.parametrize("space", [
    search_space.SearchSpace(max_layers=16, paddings=("valid",), kernels=(2, 3, 5)),
    search_space.SearchSpace(max_layers=16, shortcuts=("identity",), filters=(4, 8, 16, 32)),
    search_space.SearchSpace(max_layers=16, shortcuts=("identity",), strides=(2,), kinds=("basic", "conv", "gap")),
])
def test_greedy_decode_in_restricted_spaces(space):
    tokenizer = tokens.Tokenizer(space)
    rng = np.random.default_rng(11)
    for draw in range(40):
        for input_shape in (None, (8, 8, 1), (32, 32, 3)):
            matrix = tokenizer.masked_greedy_decode(random_logits(tokenizer, rng, long=True), input_shape)
            assert_valid_decode(tokenizer, matrix, input_shape)


def test_greedy_decode_default_space():
    tokenizer = tokens.Tokenizer()
    assert tokenizer.shape == (64, 9)
    rng = np.random.default_rng(5)
    for draw in range(30):
        input_shape = (None, specs.DIGITS_SHAPE, specs.CIFAR_SHAPE)[draw % 3]
        matrix = tokenizer.masked_greedy_decode(random_logits(tokenizer, rng, long=draw % 2 == 0), input_shape)
        assert_valid_decode(tokenizer, matrix, input_shape)


# -- the keras.applications kinds (dwconv, sepconv, bottleneck_v1, inverted), int paddings, expansion --------------
FULL = search_space.SearchSpace(max_layers=24, kinds=a.KINDS, activations=a.ACTIVATIONS,
                                paddings=("same", "valid", 1, 3))
NEW_KINDS = ("dwconv", "sepconv", "bottleneck_v1", "inverted")


@pytest.fixture(scope="module")
def full():
    return tokens.Tokenizer(FULL)


def new_kind_specs():
    return {
        "resnet50_like": a.ArchSpec([a.conv(64, 7, 2, 3), a.bn(), a.act(), a.maxpool(3, 2, 1),
                                     a.bottleneck_v1(64, shortcut="projection"), a.bottleneck_v1(64),
                                     a.bottleneck_v1(128, 2), a.bottleneck_v1(128, 1, 5), a.gap()]),
        "mobilenet_v2_like": a.ArchSpec([a.conv(32, 3, 2, use_bias=False), a.bn(), a.act("relu6"),
                                         a.inverted(16, 1), a.inverted(24, 6, 2), a.inverted(24, 6),
                                         a.inverted(32, 3, 2, 5, "hard_swish"), a.inverted(32, 4, 1, 7, "swish"),
                                         a.conv(1024, 1, use_bias=False), a.gap(), a.dense(12), a.act("hard_swish")]),
        "separable": a.ArchSpec([a.sepconv(32, 3, 1, "valid"), a.dwconv(5, 2, 1, True), a.dwconv(3),
                                 a.sepconv(64, 7, 2, 3, False), a.act("hard_swish"), a.avgpool(3, 1, 1),
                                 a.bn(), a.gmp()]),
        "mixed": a.ArchSpec([a.dwconv(3, 1, "valid"), a.basic(8, 2), a.bottleneck(2), a.inverted(8, 2),
                             a.bottleneck_v1(2), a.maxpool(2, 2, 3), a.flatten(), a.dense(16), a.dropout(0.2)]),
    }


def test_default_layout_and_tokens_unchanged():
    default = tokens.Tokenizer()
    assert default.fields == tokens.FIELDS and len(tokens.FIELDS) == 9 and "expansion" not in default.fields
    assert default.shape == (64, 9)
    assert default.to_dict()["fields"] == ["kind", "kernel", "stride", "filters", "padding", "activation", "rate",
                                           "use_bias", "shortcut"]
    spec = a.ArchSpec([a.conv(16, 3, 2, "valid", False), a.bn(), a.act("relu6"), a.maxpool(2), a.basic(16),
                       a.bottleneck(4), a.avgpool(3, 1, "same"), a.gap(), a.dense(8), a.dropout(0.5),
                       a.dense(4096, False)])
    expected = [[2, 4, 3, 8, 3, 1, 1, 2, 1], [11, 1, 1, 1, 1, 1, 1, 1, 1], [12, 1, 1, 1, 1, 3, 1, 1, 1],
                [3, 3, 3, 1, 3, 1, 1, 1, 1], [5, 4, 2, 8, 1, 1, 1, 1, 2], [6, 4, 2, 5, 1, 1, 1, 1, 2],
                [4, 4, 2, 1, 2, 1, 1, 1, 1], [7, 1, 1, 1, 1, 1, 1, 1, 1], [10, 1, 1, 6, 1, 1, 1, 3, 1],
                [13, 1, 1, 1, 1, 1, 7, 1, 1], [10, 1, 1, 56, 1, 1, 1, 2, 1]]  # what the classic layout gave
    matrix = default.encode(spec)
    assert matrix[:len(spec)].tolist() == expected and (matrix[len(spec):] == tokens.PAD).all()
    assert default.vocab_sizes == (14, 7, 4, 57, 4, 10, 8, 4, 4)
    assert default.decode(matrix) == spec


def test_expansion_column_exactly_when_the_space_has_inverted(full):
    assert full.fields == tokens.ALL_FIELDS and full.fields[-1] == "expansion"
    assert full.shape == (24, 10) and len(full.vocab_sizes) == 10
    assert full.vocabulary("expansion") == ("<pad>", "<na>", 1, 2, 3, 4, 6)
    assert full.vocab_sizes[-1] == 7 and full.token("expansion", 6) == 6 and full.value("expansion", 2) == 1
    no_inverted = search_space.SearchSpace(kinds=tuple(k for k in a.KINDS if k != "inverted"))
    assert tokens.Tokenizer(no_inverted).fields == tokens.FIELDS
    assert tokens.Tokenizer(no_inverted).shape == (64, 9)
    only_inverted = search_space.SearchSpace(max_layers=4, kinds=("inverted", "gap"), expansions=(6,))
    assert tokens.Tokenizer(only_inverted).fields == tokens.ALL_FIELDS
    assert tokens.Tokenizer(only_inverted).vocab_sizes[-1] == 3
    default = tokens.Tokenizer()
    matrix = default.encode(specs.vgg_like())
    for call in (lambda: default.vocabulary("expansion"), lambda: default.token("expansion", 6),
                 lambda: default.value("expansion", 2), lambda: default.legal_mask(matrix, 0, "expansion"),
                 lambda: default.legal_mask(matrix, 0, 9)):
        with pytest.raises(ValueError, match="unknown field"):
            call()


def test_to_dict_round_trip_with_expansion(full):
    data = json.loads(json.dumps(full.to_dict(), sort_keys=True))
    assert data["fields"] == list(tokens.ALL_FIELDS) and "expansions" in data["search_space"]
    again = tokens.Tokenizer.from_dict(data)
    assert again == full and again.fields == full.fields and again.vocab_sizes == full.vocab_sizes
    with pytest.raises(ValueError, match="does not match"):
        tokens.Tokenizer.from_dict({**data, "fields": list(tokens.FIELDS)})  # classic layout, inverted space
    classic = tokens.Tokenizer().to_dict()
    with pytest.raises(ValueError, match="does not match"):
        tokens.Tokenizer.from_dict({**classic, "fields": list(tokens.ALL_FIELDS)})
    with pytest.raises(ValueError, match="does not match"):
        tokens.Tokenizer.from_dict({**classic, "format_version": 2})


@pytest.mark.parametrize("name", sorted(new_kind_specs()))
def test_new_kinds_round_trip_exactly(full, name):
    spec = new_kind_specs()[name]
    matrix = full.encode(spec)
    assert matrix.shape == (24, 10) and matrix.dtype == np.int32
    decoded = full.decode(matrix)
    assert decoded == spec and decoded.to_json() == spec.to_json()
    assert (full.encode(decoded) == matrix).all()
    expansion = full.fields.index("expansion")
    for position, layer in enumerate(spec):
        for column, field in enumerate(full.fields[1:], start=1):
            token = matrix[position, column]
            if field in a.KIND_FIELDS[layer.kind]:
                assert full.value(field, token) == getattr(layer, field)
            else:
                assert token == tokens.NA
        if layer.kind == "inverted":
            assert matrix[position, expansion] == full.token("expansion", layer.expansion)
    # Every one of them builds at CIFAR size, so it must also be a legal sequence there.
    spec.count_params(specs.CIFAR_SHAPE, 10)
    logits = [np.eye(size)[matrix[:, column]] for column, size in enumerate(full.vocab_sizes)]
    assert (full.masked_greedy_decode(logits, specs.CIFAR_SHAPE) == matrix).all()
    assert full.legal_mask(matrix, len(spec), "kind", specs.CIFAR_SHAPE)[tokens.PAD]


def test_int_padding_and_hard_swish_tokens(full):
    assert full.vocabulary("padding") == ("<pad>", "<na>", "same", "valid", 1, 3)
    assert full.token("padding", 1) == 4 and full.token("padding", 3) == 5
    assert full.vocabulary("activation")[-1] == "hard_swish"
    with pytest.raises(search_space.OutOfSearchSpaceError):
        full.token("padding", 2)
    with pytest.raises(search_space.OutOfSearchSpaceError):
        full.token("padding", [1])  # unhashable: still "not allowed", not a TypeError


def test_encode_new_kinds_outside_the_space_still_raises():
    default = tokens.Tokenizer()
    for spec, index, field in [
        (a.ArchSpec([a.conv(8), a.inverted(8), a.gap()]), 1, "kind"),
        (a.ArchSpec([a.dwconv(), a.gap()]), 0, "kind"),
        (a.ArchSpec([a.conv(8), a.bottleneck_v1(2), a.gap()]), 1, "kind"),
        (a.ArchSpec([a.conv(8), a.act("hard_swish"), a.gap()]), 1, "activation"),
        (a.ArchSpec([a.conv(8, padding=1), a.gap()]), 0, "padding"),
    ]:
        with pytest.raises(search_space.OutOfSearchSpaceError) as info:
            default.encode(spec)
        assert (info.value.layer_index, info.value.field) == (index, field)


def test_new_kinds_are_spatial_only(full):
    matrix = full.encode(new_kind_specs()["mixed"])  # flatten at position 6
    spatial = _legal_values(full, matrix, 0, "kind")
    assert set(NEW_KINDS) <= spatial and "dense" not in spatial and "<pad>" not in spatial
    flat = _legal_values(full, matrix, 7, "kind")
    assert flat == {"<pad>", "dense"} | set(a.ANYWHERE)


def test_int_padding_only_where_the_window_fits(full):
    def paddings(layers, input_shape):
        matrix = full.encode(a.ArchSpec(layers + [a.gap()]))
        return _legal_values(full, matrix, len(layers) - 1, "padding", input_shape)

    every = {"same", "valid", 1, 3}
    assert paddings([a.conv(8, 3)], (4, 4, 1)) == every
    assert paddings([a.conv(8, 5)], (4, 4, 1)) == {"same", 1, 3}  # 5 <= 4 + 2
    assert paddings([a.conv(8, 7)], (4, 4, 1)) == {"same", 3}  # 7 > 4 + 2, 7 <= 4 + 6
    assert paddings([a.dwconv(5)], (3, 9, 1)) == {"same", 1, 3}  # the height limits
    assert paddings([a.sepconv(8, 7)], (2, 2, 1)) == {"same", 3}
    assert paddings([a.conv(8, 3, 2), a.maxpool(7, 1)], (4, 4, 1)) == {"same", 3}  # 2x2 after the conv
    assert paddings([a.conv(8, 7, 2, 3), a.avgpool(5, 1)], (8, 8, 1)) == {"same", 1, 3}  # (8 + 6 - 7)//2 + 1 = 4
    assert paddings([a.conv(8, 7, 2, 1), a.avgpool(3, 2)], (8, 8, 1)) == {"same", 1, 3}  # (8 + 2 - 7)//2 + 1 = 2
    assert paddings([a.inverted(8, 6, 2), a.dwconv(3)], (4, 4, 1)) == {"same", 1, 3}  # 'same' inside: 2x2
    assert paddings([a.bottleneck_v1(2, 2), a.dwconv(2)], (3, 3, 1)) == every  # ceil(3 / 2) = 2
    assert paddings([a.conv(8, 7)], None) == every  # size unknown
    too_big = full.encode(a.ArchSpec([a.conv(8, 7, padding=1), a.gap()]))
    with pytest.raises(a.SpecError, match="not legal") as info:
        full.legal_mask(too_big, 1, "kind", (4, 4, 1))
    assert (info.value.layer_index, info.value.field) == (0, "padding")
    with pytest.raises(a.ShapeError):
        full.decode(too_big).count_params((4, 4, 1), 10)  # the mask agrees with archspec
    full.legal_mask(too_big, 1, "kind", (5, 5, 1))  # 7 <= 5 + 2
    full.decode(too_big).count_params((5, 5, 1), 10)


def test_look_ahead_without_same_padding_counts_zero_padding():
    space = search_space.SearchSpace(max_layers=8, kinds=a.KINDS, activations=a.ACTIVATIONS,
                                     paddings=("valid", 1), kernels=(5, 7))
    tokenizer = tokens.Tokenizer(space)
    matrix = tokenizer.encode(a.ArchSpec([a.conv(8, 5, 1, 1), a.gap()]))
    assert _legal_values(tokenizer, matrix, 0, "kernel", (5, 5, 1)) == {5, 7}  # 7 <= 5 + 2
    assert _legal_values(tokenizer, matrix, 0, "kernel", (3, 3, 1)) == {5}
    assert _legal_values(tokenizer, matrix, 0, "padding", (5, 5, 1)) == {"valid", 1}
    assert _legal_values(tokenizer, matrix, 0, "padding", (4, 4, 1)) == {1}
    assert _legal_values(tokenizer, matrix, 0, "padding", (3, 3, 1)) == {1}
    windowed = set(a.WINDOWED)
    assert windowed <= _legal_values(tokenizer, matrix, 0, "kind", (3, 3, 1))
    at_two = _legal_values(tokenizer, matrix, 0, "kind", (2, 2, 1))  # 5 > 2 + 2: no window fits
    assert not windowed & at_two and {"inverted", "basic", "bottleneck_v1", "gap"} <= at_two


def test_identity_shortcut_of_bottleneck_v1_needs_matching_channels(full):
    def shortcuts(layers, input_shape=None):
        matrix = full.encode(a.ArchSpec(layers + [a.gap()]))
        return _legal_values(full, matrix, len(layers) - 1, "shortcut", input_shape)

    both, projection = {"identity", "projection"}, {"projection"}
    assert shortcuts([a.conv(64), a.bottleneck_v1(16)]) == both  # 4 * 16 == 64
    assert shortcuts([a.conv(64), a.bottleneck_v1(16, 2)]) == projection
    assert shortcuts([a.conv(64), a.bottleneck_v1(64, shortcut="projection")]) == projection
    assert shortcuts([a.conv(64), a.dwconv(3), a.bottleneck_v1(16)]) == both  # dwconv keeps the channels
    assert shortcuts([a.conv(8), a.sepconv(64), a.bottleneck_v1(16)]) == both  # sepconv sets them
    assert shortcuts([a.conv(8), a.inverted(64), a.bottleneck_v1(16)]) == both  # so does inverted
    assert shortcuts([a.conv(64), a.inverted(32), a.bottleneck_v1(16, shortcut="projection")]) == projection
    assert shortcuts([a.bottleneck_v1(16, shortcut="projection"), a.bottleneck_v1(16)]) == both  # 64 out
    assert shortcuts([a.bottleneck_v1(16)], (8, 8, 64)) == both
    assert shortcuts([a.bottleneck_v1(16, shortcut="projection")], (8, 8, 16)) == projection
    assert shortcuts([a.dwconv(), a.bottleneck_v1(16, shortcut="projection")], (8, 8, 3)) == projection
    assert shortcuts([a.bottleneck_v1(16)]) == both  # channels unknown


def test_look_ahead_without_projection_shortcuts_for_new_kinds():
    space = search_space.SearchSpace(max_layers=8, kinds=a.KINDS, activations=a.ACTIVATIONS,
                                     shortcuts=("identity",), filters=(4, 8, 16, 32, 64))
    tokenizer = tokens.Tokenizer(space)
    after_conv = tokenizer.encode(a.ArchSpec([a.conv(64), a.bottleneck_v1(16), a.gap()]))
    assert _legal_values(tokenizer, after_conv, 1, "stride") == {1}
    assert _legal_values(tokenizer, after_conv, 1, "filters") == {16}
    after_inverted = tokenizer.encode(a.ArchSpec([a.inverted(32, stride=2), a.bottleneck_v1(8), a.gap()]))
    assert _legal_values(tokenizer, after_inverted, 0, "stride") == {1, 2}  # no shortcut rule for inverted
    assert _legal_values(tokenizer, after_inverted, 0, "filters") == {4, 8, 16, 32, 64}
    assert _legal_values(tokenizer, after_inverted, 1, "filters", (8, 8, 3)) == {8}  # 32 channels after it
    first = _legal_values(tokenizer, after_inverted, 0, "kind", (8, 8, 3))  # 3 channels: no block can match
    assert not {"basic", "bottleneck", "bottleneck_v1"} & first and {"inverted", "dwconv", "sepconv"} <= first
    at_16 = _legal_values(tokenizer, after_inverted, 0, "kind", (8, 8, 16))  # basic(16) or bottleneck*(4)
    assert {"basic", "bottleneck", "bottleneck_v1"} <= at_16
    at_8 = _legal_values(tokenizer, after_inverted, 0, "kind", (8, 8, 8))  # 4 * f == 8 has no f in the space
    assert "basic" in at_8 and not {"bottleneck", "bottleneck_v1"} & at_8


def test_greedy_decode_follows_legal_mask_with_new_kinds(full):
    rng = np.random.default_rng(17)
    for draw in range(4):
        logits = random_logits(full, rng, long=True)
        for input_shape in (None, (8, 8, 3)):
            assert_greedy_follows_legal_mask(full, logits, input_shape)
    padded = np.stack([np.pad(x, ((0, 0), (0, full.max_vocab_size - x.shape[1]))) for x in logits], axis=1)
    assert padded.shape[1] == 10
    assert (full.masked_greedy_decode(padded, (8, 8, 3)) == full.masked_greedy_decode(logits, (8, 8, 3))).all()
    with pytest.raises(ValueError, match="expected 10"):
        full.masked_greedy_decode(logits[:9])


def _decode_many(space, input_shape, draws, seed):
    """Masked greedy decodes of random logits: each valid, in the space and building; returns what they used."""
    tokenizer = tokens.Tokenizer(space)
    rng = np.random.default_rng(seed)
    kinds, paddings, lengths = set(), set(), set()
    for draw in range(draws):
        logits = random_logits(tokenizer, rng, long=draw % 4 != 0)
        if draw % 3 == 0:  # favour the new kinds
            for kind in NEW_KINDS:
                if kind in space.kinds:
                    logits[0][:, kind_token(tokenizer, kind)] += 4
        spec = assert_valid_decode(tokenizer, tokenizer.masked_greedy_decode(logits, input_shape), input_shape)
        assert space.contains(spec)
        if input_shape is not None:
            spec.count_params(input_shape, 10)
            spec.count_flops(input_shape, 10)
        kinds.update(layer.kind for layer in spec)
        paddings.update(layer.padding for layer in spec if layer.padding is not None)
        lengths.add(len(spec))
    return kinds, paddings, lengths


def test_greedy_decode_with_every_kind_always_builds():
    space = search_space.SearchSpace(max_layers=12, kinds=a.KINDS, activations=a.ACTIVATIONS,
                                     paddings=("same", "valid", 1, 3))
    kinds, paddings, lengths = _decode_many(space, (32, 32, 3), 200, 0)
    assert set(NEW_KINDS) <= kinds and {"same", "valid", 1, 3} <= paddings
    assert 12 in lengths and min(lengths) < 12
    _decode_many(space, None, 40, 1)
    _decode_many(space, (8, 8, 1), 40, 2)


@pytest.mark.parametrize("space", [
    search_space.SearchSpace(max_layers=12, kinds=a.KINDS, activations=a.ACTIVATIONS, paddings=("valid", 1)),
    search_space.SearchSpace(max_layers=12, kinds=a.KINDS, activations=a.ACTIVATIONS, paddings=("valid", 1),
                             kernels=(5, 7)),
    search_space.SearchSpace(max_layers=12, kinds=a.KINDS, activations=a.ACTIVATIONS, paddings=(1, 3),
                             kernels=(7,), shortcuts=("identity",), filters=(2, 4, 8, 16, 32)),
    search_space.SearchSpace(max_layers=12, kinds=("dwconv", "sepconv", "bottleneck_v1", "gap", "bn"),
                             paddings=("valid",), kernels=(3, 5), shortcuts=("identity",)),
])
def test_greedy_decode_without_same_padding_has_no_dead_ends(space):
    kinds, paddings, _ = _decode_many(space, (8, 8, 1), 200, 3)
    assert "same" not in paddings
    assert kinds & set(NEW_KINDS)
    _decode_many(space, (3, 5, 2), 40, 4)


# -- the teacher's skeleton (latent search with skeleton="teacher") ----------------------------------------------
def assert_child_of(child: a.ArchSpec, teacher: a.ArchSpec):
    """Same layers, kinds and fields, except narrower widths / expansions, smaller same-padded kernels, and a
    projection where an identity shortcut no longer matches the narrowed channels."""
    assert len(child) == len(teacher)
    for mine, theirs in zip(child, teacher):
        assert mine.kind == theirs.kind
        for field in a.KIND_FIELDS[theirs.kind]:
            value, reference = getattr(mine, field), getattr(theirs, field)
            if field in ("filters", "expansion"):
                assert value <= reference
            elif field == "kernel" and value != reference:
                assert value < reference and (reference - value) % 2 == 0
                assert theirs.kind not in ("maxpool", "avgpool") and theirs.padding in (None, "same")
            elif field == "shortcut" and value != reference:  # a narrowed identity block needs a projection
                assert (value, reference) == ("projection", "identity")
            else:
                assert value == reference, (field, mine, theirs)


@pytest.mark.parametrize("space,teacher", [
    (tokens.Tokenizer().space, a.ArchSpec([a.conv(64, 5), a.bn(), a.act(), a.maxpool(), a.conv(32, 3, 2, "valid"),
                                           a.act(), a.dropout(0.25), a.gap(), a.dense(64), a.act()])),
    (FULL, a.ArchSpec([a.conv(16, 3, 2, 1), a.inverted(16, 6), a.inverted(24, 6, 2), a.sepconv(32, 5),
                       a.dwconv(3), a.gap()])),
    (SMALL, extra_specs()["blocks"]),
])
def test_skeleton_decodes_only_children_of_the_teacher(space, teacher):
    tokenizer = tokens.Tokenizer(space)
    masks = tokenizer.skeleton_mask(teacher)
    assert [m.shape for m in masks] == [(tokenizer.shape[0], size) for size in tokenizer.vocab_sizes]
    rng = np.random.default_rng(11)
    logits = [np.stack([random_logits(tokenizer, rng)[c] for _ in range(40)]) for c in range(len(tokenizer.fields))]
    decoded = tokenizer.masked_greedy_decode_batch(tokenizer.apply_mask(logits, masks), specs.CIFAR_SHAPE)
    narrower = 0
    for matrix in decoded:
        child = assert_valid_decode(tokenizer, matrix, specs.CIFAR_SHAPE)
        assert_child_of(child, teacher)
        narrower += child.hash != teacher.hash
    assert narrower > 30  # random scores do pick other widths: the mask is not just the teacher
    # The teacher itself passes its own mask, so one-hot scores of the teacher decode to the teacher.
    matrix = tokenizer.encode(teacher)
    assert all(mask[np.arange(len(matrix)), matrix[:, c]].all() for c, mask in enumerate(masks))


def test_skeleton_mask_keeps_fixed_fields_and_shrinks_widths(tok):
    teacher = a.ArchSpec([a.conv(32, 5, 1, "valid"), a.conv(16, 3), a.maxpool(3, 2), a.gap()])
    masks = tok.skeleton_mask(teacher)
    allowed = lambda field, position: [tok.vocabulary(field)[t] for t in np.flatnonzero(masks[col(field)][position])]
    assert allowed("filters", 0) == [v for v in SMALL.filters if v <= 32]
    assert allowed("kernel", 0) == [5]  # 'valid' padding: a smaller kernel would change the map size
    assert allowed("kernel", 1) == [v for v in SMALL.kernels if v <= 3 and v % 2 == 1]
    assert allowed("kernel", 2) == [3] and allowed("stride", 1) == [1] and allowed("kind", 3) == ["gap"]
    assert allowed("kind", 4) == ["<pad>"] and allowed("filters", 3) == ["<na>"]
    widths_only = tok.skeleton_mask(teacher, shrink_kernels=False)  # filter pruning's space: kernels stay
    assert np.flatnonzero(widths_only[col("kernel")][1]).tolist() == [tok.vocabulary("kernel").index(3)]
    assert (widths_only[col("kernel")] <= masks[col("kernel")]).all()
    assert all((kept == full).all() for column, (kept, full) in enumerate(zip(widths_only, masks))
               if column != col("kernel"))
    with pytest.raises(a.SpecError):
        tok.skeleton_mask(np.zeros((3, 3), np.int32))
