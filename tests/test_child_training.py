"""Child training: proxy accuracy far above chance, packing, failures, divergence, seeds, distillation."""

import math

import keras
import numpy as np
import pytest

from acompress import archspec
from acompress import child_training
from acompress import data
from acompress import keras_builder
from acompress import training

DATA = data.DataConfig()  # digits, seed 0, batch 64
CHANCE = 0.1  # ten balanced classes

# Small children of the digits teacher (8x8x1 inputs).
CONV = archspec.ArchSpec([archspec.conv_bn_act(32), archspec.conv_bn_act(32), archspec.maxpool(),
                          archspec.conv_bn_act(64), archspec.gap()])
FLAT = archspec.ArchSpec([archspec.conv_bn_act(16), archspec.maxpool(), archspec.flatten(), archspec.dense(64),
                          archspec.act()])
SMALL = archspec.ArchSpec([archspec.conv_bn_act(16), archspec.maxpool(), archspec.conv_bn_act(32), archspec.gap()])
DENSE = archspec.ArchSpec([archspec.flatten(), archspec.dense(32), archspec.act()])
# Valid as a spec, but 8 -> 4 -> 2 -> 1 -> (no 2x2 window fits): cannot be built on 8x8 inputs.
TOO_MANY_POOLS = archspec.ArchSpec([archspec.conv(4)] + [archspec.maxpool() for _ in range(4)] + [archspec.gap()])
# Six linear dense layers without normalisation: overflows to inf/NaN at a huge learning rate.
DEEP_LINEAR = archspec.ArchSpec([archspec.flatten()] + [archspec.dense(64) for _ in range(6)])


@pytest.fixture(scope="module")
def search():
    return data.load(DATA).for_search()


def pipelines(search):
    """(train, validation) Keras pipelines, for training a teacher the ordinary way."""
    keras.utils.set_random_seed(0)
    return data.search_datasets(search, DATA)


def train(search, specs, config, *, indices=None, seed=0, **kwargs):
    indices = list(range(len(specs))) if indices is None else indices
    return child_training.train_children(specs, indices, search, config, batch_size=DATA.batch_size, seed=seed,
                                         **kwargs)


def statuses(results):
    return [r.status for r in results]


# -- proxy accuracy and packing ----------------------------------------------------

@pytest.fixture(scope="module")
def packed_and_solo(search):
    """The same four children with the default proxy budget, packed by 4 and one at a time."""
    children = [CONV, FLAT, SMALL, DENSE]
    runs = {}
    for pack in (4, 1):
        groups = []
        results = train(search, children, child_training.ProxyConfig(pack=pack), seed=0,
                        on_result=lambda group: groups.append([r.index for r in group]))
        runs[pack] = (results, groups)
    return runs


def test_proxy_trained_children_score_far_above_chance(packed_and_solo):
    # Guards the batch-norm momentum: with Keras' 0.99 the moving statistics do not
    # settle within a 4-epoch proxy and conv children evaluate near chance.
    assert child_training.ProxyConfig().bn_momentum == 0.9
    results, _ = packed_and_solo[4]
    assert statuses(results) == [child_training.OK] * 4
    accuracy = {r.index: r.val_accuracy for r in results}
    assert accuracy[0] > 0.85, f"small conv child (CONV) only reached {accuracy[0]:.3f} (chance {CHANCE})"
    assert accuracy[1] > 0.85, f"conv + dense child (FLAT) only reached {accuracy[1]:.3f}"
    assert min(accuracy.values()) > 5 * CHANCE, accuracy
    for r in results:
        assert r.epochs == child_training.ProxyConfig().epochs and r.reason == "" and r.train_seconds > 0


def test_packed_and_solo_training_agree(packed_and_solo):
    packed, packed_groups = packed_and_solo[4]
    solo, solo_groups = packed_and_solo[1]
    assert packed_groups == [[0, 1, 2, 3]]
    assert solo_groups == [[0], [1], [2], [3]]
    assert [r.index for r in packed] == [r.index for r in solo] == [0, 1, 2, 3]
    assert [r.spec for r in packed] == [r.spec for r in solo] == [CONV, FLAT, SMALL, DENSE]
    # Seeds are per child, not per group.
    assert [r.seed for r in packed] == [r.seed for r in solo] == [child_training.child_seed(0, i) for i in range(4)]
    assert statuses(solo) == [child_training.OK] * 4
    # Every group sees the same batches and the summed losses have independent gradients,
    # so packing must not change any child's result.
    assert [p.val_accuracy for p in packed] == [s.val_accuracy for s in solo]
    # Child 0 is in the first group both times, so it sees the same batches: packing
    # (summed independent losses, one Adam over all weights) must not change its result.
    assert packed[0].val_accuracy == solo[0].val_accuracy


def test_child_result_does_not_depend_on_its_position_in_the_call(search):
    config = child_training.ProxyConfig(epochs=1, pack=1)
    forward = train(search, [FLAT, DENSE], config, indices=[0, 1])
    backward = train(search, [DENSE, FLAT], config, indices=[1, 0])
    assert {r.index: r.seed for r in forward} == {r.index: r.seed for r in backward}
    assert ({r.index: r.val_accuracy for r in forward} == {r.index: r.val_accuracy for r in backward})


# -- failures and divergence --------------------------------------------------------

def test_child_that_cannot_be_built_fails_alone(search):
    groups = []
    results = train(search, [SMALL, TOO_MANY_POOLS, DENSE], child_training.ProxyConfig(epochs=1, pack=3),
                    seed=5, on_result=groups.append)
    assert [r.index for r in results] == [0, 1, 2]
    assert statuses(results) == [child_training.OK, child_training.FAILED, child_training.OK]
    failed = results[1]
    assert failed.reason.startswith("ShapeError: layer 4")
    assert "does not fit" in failed.reason
    assert math.isnan(failed.val_accuracy) and failed.epochs == 0
    assert failed.seed == child_training.child_seed(5, 1)
    for ok in (results[0], results[2]):
        assert 0.0 <= ok.val_accuracy <= 1.0 and ok.reason == "" and ok.epochs == 1
    assert results[2].val_accuracy > 2 * CHANCE  # the others really trained
    # The group's results are reported once, together, in order.
    assert [[r.index for r in group] for group in groups] == [[0, 1, 2]]


def test_child_whose_loss_becomes_nan_is_diverged_and_the_others_are_not(search):
    config = child_training.ProxyConfig(epochs=1, pack=3, learning_rate=1e6, schedule="constant")
    results = train(search, [SMALL, DEEP_LINEAR, DENSE], config, seed=0)
    assert statuses(results) == [child_training.OK, child_training.DIVERGED, child_training.OK]
    diverged = results[1]
    assert "NaN or infinite" in diverged.reason
    assert math.isnan(diverged.val_accuracy)
    assert diverged.seed == child_training.child_seed(0, 1)
    for ok in (results[0], results[2]):  # frozen per child: the pack's other children still evaluate
        assert 0.0 <= ok.val_accuracy <= 1.0 and ok.reason == ""


def nan_poisoned(search):
    """The search data with one training example in seven set to NaN (every batch holds some)."""
    x_train = np.array(search.x_train, copy=True)
    x_train[::7] = np.nan
    return data.SearchSplits(x_train=x_train, y_train=search.y_train, x_val=search.x_val, y_val=search.y_val,
                             info=search.info)


def test_nan_training_data_makes_a_batch_norm_child_diverge(search):
    results = train(nan_poisoned(search), [SMALL], child_training.ProxyConfig(epochs=1))
    assert statuses(results) == [child_training.DIVERGED]
    assert math.isnan(results[0].val_accuracy) and results[0].epochs == 1


def test_child_with_nan_weights_is_not_reported_ok(search):
    # flatten-dense-relu on NaN inputs: ReLU maps NaN pre-activations to 0, so the loss can stay
    # finite while the dense kernel becomes NaN; the gradient and weight checks must catch it.
    results = train(nan_poisoned(search), [DENSE], child_training.ProxyConfig(epochs=1))
    assert statuses(results) == [child_training.DIVERGED]


def test_full_splits_are_refused(search):
    splits = data.load(DATA)
    with pytest.raises(TypeError, match="SearchSplits"):
        child_training.train_children([SMALL], [0], splits, child_training.ProxyConfig(epochs=1),
                                      batch_size=64, seed=0)


# -- configuration and seeds ----------------------------------------------------------

@pytest.mark.parametrize("field, value, message", [
    ("epochs", 0, "proxy epochs must be >= 1"),
    ("pack", 0, "pack must be >= 1"),
    ("schedule", "linear", "schedule must be 'cosine' or 'constant'"),
    ("distill_alpha", 1.5, r"distill_alpha must be in \[0, 1\]"),
    ("distill_alpha", -0.1, r"distill_alpha must be in \[0, 1\]"),
    ("learning_rate", 0.0, "learning_rate must be > 0"),
    ("distill_temperature", 0.0, "distill_temperature must be > 0"),
    ("learning_rate", float("nan"), "learning_rate must be > 0"),
])
def test_proxy_config_validation(field, value, message):
    with pytest.raises(ValueError, match=message):
        child_training.ProxyConfig(**{field: value})


def test_proxy_config_to_dict_round_trips():
    config = child_training.ProxyConfig(epochs=2, pack=3, distill=True)
    assert child_training.ProxyConfig(**config.to_dict()) == config
    assert sorted(config.to_dict()) == ["bn_momentum", "distill", "distill_alpha", "distill_temperature",
                                        "epochs", "graph_optimizer", "importance", "init", "learning_rate", "pack",
                                        "recalibrate_batches", "schedule", "supernet_children"]


def test_specs_and_indices_must_pair_up(search):
    with pytest.raises(ValueError, match="2 specs but 1 indices"):
        child_training.train_children([SMALL, DENSE], [0], search, child_training.ProxyConfig(), batch_size=64,
                                      seed=0)


def test_child_seed_is_deterministic_and_distinct():
    assert child_training.child_seed(7, 3) == child_training.child_seed(7, 3, 0)
    # Pinned: stored records carry these seeds, so a resumed corpus needs the same derivation.
    assert (child_training.child_seed(7, 3), child_training.child_seed(7, 3, 1)) == (1318712415, 1060801322)
    seeds = {child_training.child_seed(seed, index, replicate)
             for seed in range(3) for index in range(50) for replicate in range(3)}
    assert len(seeds) == 3 * 50 * 3  # no collisions between runs, children or replicates
    assert all(1 <= s <= 2 ** 31 - 1 and isinstance(s, int) for s in seeds)


def test_same_seed_same_result_and_replicates_get_other_seeds(search):
    config = child_training.ProxyConfig(epochs=1, pack=2)
    first = train(search, [SMALL, DENSE], config, indices=[4, 9], seed=3)
    again = train(search, [SMALL, DENSE], config, indices=[4, 9], seed=3)
    assert [(r.index, r.seed, r.val_accuracy, r.status) for r in first] == \
        [(r.index, r.seed, r.val_accuracy, r.status) for r in again]
    assert [r.seed for r in first] == [child_training.child_seed(3, 4), child_training.child_seed(3, 9)]
    replicate = train(search, [SMALL, DENSE], config, indices=[4, 9], seed=3, replicate=1)
    assert [r.seed for r in replicate] == [child_training.child_seed(3, 4, 1), child_training.child_seed(3, 9, 1)]
    assert not {r.seed for r in replicate} & {r.seed for r in first}


# -- distillation ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_teacher(search):
    keras.utils.set_random_seed(11)
    spec = archspec.ArchSpec([archspec.conv_bn_act(16), archspec.maxpool(), archspec.flatten()])
    teacher = keras_builder.build_model(spec, search.info.input_shape, search.info.num_classes, name="tiny_teacher")
    train_data, validation_data = pipelines(search)
    summary = training.fit(teacher, train_data, validation_data, training.TrainConfig(epochs=1))
    assert not summary["diverged"]
    return teacher


def test_distillation_trains_children_with_a_teacher(search, tiny_teacher):
    children = [SMALL, DENSE]
    plain = train(search, children, child_training.ProxyConfig(epochs=1, pack=2))
    distilled = train(search, children, child_training.ProxyConfig(epochs=1, pack=2, distill=True),
                      teacher=tiny_teacher)
    assert statuses(distilled) == [child_training.OK] * 2
    assert all(0.0 <= r.val_accuracy <= 1.0 for r in distilled)
    assert [r.seed for r in distilled] == [r.seed for r in plain]
    # alpha = 1 puts all the weight on the labels: the soft term must then change nothing.
    labels_only = train(search, children, child_training.ProxyConfig(epochs=1, pack=2, distill=True,
                                                                     distill_alpha=1.0), teacher=tiny_teacher)
    assert [r.val_accuracy for r in labels_only] == [r.val_accuracy for r in plain]
    # alpha = 0 trains on the teacher's soft targets alone: the results change.
    soft_only = train(search, children, child_training.ProxyConfig(epochs=1, pack=2, distill=True,
                                                                   distill_alpha=0.0), teacher=tiny_teacher)
    assert statuses(soft_only) == [child_training.OK] * 2
    assert [r.val_accuracy for r in soft_only] != [r.val_accuracy for r in plain]


def test_distillation_needs_a_teacher(search):
    with pytest.raises(ValueError, match="distillation needs the trained teacher"):
        child_training.train_children([SMALL], [0], search, child_training.ProxyConfig(distill=True), batch_size=64,
                                      seed=0)


def test_children_follow_a_mixed_float16_policy_with_loss_scaling(search, monkeypatch):
    # On a GPU, precision.apply("auto") sets mixed_float16: children then compute in float16
    # (float32 variables and outputs) and the packed step scales the loss (Keras'
    # LossScaleOptimizer), so they train as well as in float32. The run's policy is restored.
    built = []
    original = keras_builder.build_model

    def spy(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(keras_builder, "build_model", spy)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        results = train(search, [SMALL], child_training.ProxyConfig())
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    conv = next(layer for layer in built[0].layers if isinstance(layer, keras.layers.Conv2D))
    assert (conv.compute_dtype, conv.variable_dtype) == ("float16", "float32")
    assert built[0].output.dtype == "float32"
    assert statuses(results) == [child_training.OK]
    again = train(search, [SMALL], child_training.ProxyConfig())  # the same child in float32
    assert results[0].val_accuracy > 0.5
    assert abs(results[0].val_accuracy - again[0].val_accuracy) < 0.1


def test_corpus_metadata_pins_a_mixed_policy_and_not_float32():
    from acompress import corpus_generation
    teacher = archspec.ArchSpec([archspec.conv_bn_act(8), archspec.gap()])
    info = data.load(DATA).info
    config = corpus_generation.CorpusConfig(num_children=2)
    space = corpus_generation.search_space_for(teacher)
    plain = corpus_generation.make_metadata(teacher, DATA, info, config, space, 0)
    assert "precision" not in plain["proxy"]
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = corpus_generation.make_metadata(teacher, DATA, info, config, space, 0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert mixed["proxy"]["precision"] == "mixed_float16"
    assert mixed["proxy"]["pack"] == config.proxy.pack  # one loss scale per group: the pack matters