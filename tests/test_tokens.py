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
        "every_activation": a.ArchSpec([a.conv(4)] + [a.act(name) for name in a.ACTIVATIONS] + [a.gap()]),
        "flat_only_tail": a.ArchSpec([a.conv(4, 7, 2), a.gmp(), a.dense(32), a.dropout(0.1), a.dense(16, False),
                                      a.bn(), a.act("swish"), a.dropout(0.5)]),
        "blocks": a.ArchSpec([a.conv(64), a.bottleneck(16), a.bottleneck(16, 2), a.basic(64, 1, 5),
                              a.basic(32, 2, 1), a.basic(32, 1, 3, "projection"), a.gap()]),
        "avgpool_same": a.ArchSpec([a.avgpool(3, 1, "same"), a.conv(2, 2), a.gap()]),
        "transition_only": a.ArchSpec([a.flatten()]),
        "bn_first": a.ArchSpec([a.bn(), a.dropout(0.25), a.flatten(), a.dense(4096)]),
    }


def all_test_specs():
    return {**specs.all_specs(), **extra_specs()}


# -- layout ------------------------------------------------------------------------
def test_layout_and_vocabularies(tok):
    assert tokens.FIELDS == ("kind",) + a.FIELDS
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
    assert at_start == set(a.SPATIAL_ONLY + a.TRANSITIONS + a.ANYWHERE)  # no PAD, no dense, never NA
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
        for field in a.FIELDS:
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


def test_greedy_decode_follows_legal_mask(tok):
    rng = np.random.default_rng(7)
    for draw in range(6):
        logits = random_logits(tok, rng, long=draw % 2 == 0)
        for input_shape in (None, (8, 8, 1)):
            matrix = tok.masked_greedy_decode(logits, input_shape)
            for position in range(tok.shape[0]):
                for column in range(len(tokens.FIELDS)):
                    mask = tok.legal_mask(matrix, position, column, input_shape)
                    assert mask[matrix[position, column]]
                    if mask.sum() > 1:  # greedy: the best legal score
                        scores = logits[column][position]
                        assert scores[matrix[position, column]] == scores[mask].max()


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
