"""Weight inheritance: every kind of child change, checked against the teacher's own tensors."""

import dataclasses

import keras
import numpy as np
import pytest

from acompress import archspec as a
from acompress import inheritance
from acompress import keras_builder
from acompress import sampler
from tests import specs

SHAPE = specs.DIGITS_SHAPE
CLASSES = 10


def build(spec, seed=0, input_shape=SHAPE):
    keras.utils.set_random_seed(seed)
    return keras_builder.build_model(spec, input_shape, CLASSES)


def randomise_statistics(model, seed=1):
    """Gives every batch norm distinct statistics and scales, so slicing mistakes show."""
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 2, w.shape).astype("float32") for w in layer.get_weights()])


@pytest.fixture(scope="module")
def teacher():
    spec = specs.digits_teacher()
    model = build(spec, seed=3)
    randomise_statistics(model)
    return spec, model, inheritance.canonical_weights(model, spec, SHAPE, CLASSES)


def child_of(spec, child_spec, tensors, importance="l1", input_shape=SHAPE):
    model = build(child_spec, seed=7, input_shape=input_shape)
    report = inheritance.inherit(model, child_spec, spec, tensors, input_shape, importance=importance)
    return model, report


def weights(model, name):
    return model.get_layer(name).get_weights()


def test_align_pairs_units_and_prefers_the_earliest_of_equal_units():
    teacher = specs.digits_teacher()
    # units: 0 conv64, 1 conv64, 2 pool, 3 conv128, 4 conv128, 5 pool, 6 conv256, 7 gap
    assert inheritance.align(teacher, teacher) == tuple(range(8))
    child = sampler.apply_choices(teacher, removed_units=(1,), width_multipliers=0.5)
    assert inheritance.align(teacher, child) == (0, 2, 3, 4, 5, 6, 7)
    # A unit the teacher has no partner for (a wider conv, a kind it lacks) is fresh.
    odd = a.ArchSpec([a.conv_bn_act(512), a.gap(), a.dense(16)])
    assert inheritance.align(teacher, odd) == (None, 7, None)


def test_the_teacher_inherited_into_itself_computes_the_teacher(teacher):
    spec, model, tensors = teacher
    child, report = child_of(spec, spec, tensors)
    assert report.fresh == 0 and report.positional == 0 and report.aligned == 11  # 5 conv, 5 bn, head
    x = np.random.RandomState(0).normal(size=(16,) + SHAPE).astype("float32")
    np.testing.assert_allclose(child.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("importance", inheritance.IMPORTANCES)
def test_a_narrowed_layer_keeps_the_most_important_filters_and_the_next_their_channels(teacher, importance):
    spec, _, tensors = teacher
    child_spec = sampler.apply_choices(spec, width_multipliers={0: 0.25, 1: 0.5})  # 64 -> 16, 64 -> 32
    child, report = child_of(spec, child_spec, tensors, importance)
    assert report.fresh == 0 and report.positional == 0
    kernel0 = tensors["l0_conv"][0]
    if importance == "l1":
        scores = np.abs(kernel0).sum(axis=(0, 1, 2))
    elif importance == "first":  # a supernet's order: the first filters
        scores = -np.arange(kernel0.shape[-1], dtype=np.float64)
    else:
        scores = np.abs(tensors["l1_bn"][0])
    kept0 = np.sort(np.argsort(-scores, kind="stable")[:16])
    assert set(kept0) == set(np.argsort(-scores)[:16])
    np.testing.assert_array_equal(weights(child, "l0_conv")[0], kernel0[..., kept0])
    np.testing.assert_array_equal(weights(child, "l0_conv")[1], tensors["l0_conv"][1][kept0])
    for got, full in zip(weights(child, "l1_bn"), tensors["l1_bn"]):
        np.testing.assert_array_equal(got, full[kept0])
    # The second conv: its input channels are the first conv's kept filters.
    kernel3 = tensors["l3_conv"][0][:, :, kept0]
    if importance == "l1":
        kept3 = np.sort(np.argsort(-np.abs(tensors["l3_conv"][0]).sum(axis=(0, 1, 2)), kind="stable")[:32])
    elif importance == "first":
        kept3 = np.arange(32)
    else:
        kept3 = np.sort(np.argsort(-np.abs(tensors["l4_bn"][0]), kind="stable")[:32])
    np.testing.assert_array_equal(weights(child, "l3_conv")[0], kernel3[..., kept3])
    # An untouched layer keeps its outputs and takes the narrowed inputs.
    np.testing.assert_array_equal(weights(child, "l7_conv")[0], tensors["l7_conv"][0][:, :, kept3])
    np.testing.assert_array_equal(weights(child, "logits")[0], tensors["logits"][0])


def test_a_shrunk_kernel_keeps_the_centre_of_the_teachers():
    spec = a.ArchSpec([a.conv_bn_act(8, kernel=5), a.conv_bn_act(8), a.gap()])
    tensors = inheritance.canonical_weights(build(spec, seed=2), spec, SHAPE, CLASSES)
    child_spec = sampler.apply_choices(spec, kernel_choices={0: 3, 1: 1})
    child, report = child_of(spec, child_spec, tensors)
    assert report.fresh == 0
    np.testing.assert_array_equal(weights(child, "l0_conv")[0], tensors["l0_conv"][0][1:4, 1:4])
    np.testing.assert_array_equal(weights(child, "l3_conv")[0], tensors["l3_conv"][0][1:2, 1:2])


def test_a_removed_unit_keeps_the_layers_around_it(teacher):
    spec, _, tensors = teacher
    child_spec = sampler.apply_choices(spec, removed_units=(4,))  # the second conv128
    child, report = child_of(spec, child_spec, tensors)
    # Before the removed unit: the teacher's tensors as they are.
    for name in ("l0_conv", "l1_bn", "l3_conv", "l7_conv", "l8_bn"):
        for got, full in zip(weights(child, name), tensors[name]):
            np.testing.assert_array_equal(got, full)
    # After it (conv256 now sees conv128 #1, not #2): positional fallback, same shapes here.
    assert report.positional == 2 and report.fresh == 0  # conv256 and its batch norm
    np.testing.assert_array_equal(weights(child, "l11_conv")[0], tensors["l14_conv"][0])


def test_more_input_channels_than_the_teacher_layer_had_is_fresh():
    spec = a.ArchSpec([a.conv_bn_act(64), a.conv_bn_act(8), a.conv_bn_act(32), a.gap()])
    tensors = inheritance.canonical_weights(build(spec), spec, SHAPE, CLASSES)
    child_spec = sampler.apply_choices(spec, removed_units=(1,))  # conv32 now sees 64 channels (had 8)
    child, report = child_of(spec, child_spec, tensors)
    assert report.fresh == 2  # conv32 and its batch norm
    fresh = build(child_spec, seed=7)
    np.testing.assert_array_equal(weights(child, "l3_conv")[0], weights(fresh, "l3_conv")[0])


def test_flatten_and_dense_children_inherit_across_the_flattened_map():
    spec = a.ArchSpec([a.conv_bn_act(8), a.maxpool(), a.flatten(), a.dense(32), a.act()])
    tensors = inheritance.canonical_weights(build(spec, seed=4), spec, SHAPE, CLASSES)
    child_spec = sampler.apply_choices(spec, width_multipliers={0: 0.5, 3: 0.5})
    child, report = child_of(spec, child_spec, tensors)
    assert report.fresh == 0 and report.positional == 0
    kept = np.sort(np.argsort(-np.abs(tensors["l0_conv"][0]).sum(axis=(0, 1, 2)), kind="stable")[:4])
    flat = (np.arange(16)[:, None] * 8 + kept[None, :]).ravel()
    dense_kept = np.sort(np.argsort(-np.abs(tensors["l5_dense"][0]).sum(axis=0), kind="stable")[:16])
    np.testing.assert_array_equal(weights(child, "l5_dense")[0], tensors["l5_dense"][0][flat][:, dense_kept])
    np.testing.assert_array_equal(weights(child, "logits")[0], tensors["logits"][0][dense_kept])


def test_residual_children_inherit_the_teachers_block_tensors():
    spec = specs.residual()
    teacher_model = build(spec, seed=5, input_shape=specs.CIFAR_SHAPE)
    tensors = inheritance.canonical_weights(teacher_model, spec, specs.CIFAR_SHAPE, CLASSES)
    child, report = child_of(spec, spec, tensors, input_shape=specs.CIFAR_SHAPE)
    assert report.fresh == 0 and report.positional == 0
    x = np.random.RandomState(1).normal(size=(4,) + specs.CIFAR_SHAPE).astype("float32")
    np.testing.assert_allclose(child(x, training=False), teacher_model(x, training=False), rtol=1e-4,
                               atol=1e-5)
    # Narrowed blocks (names line up): every tensor of the child is made of the teacher's numbers.
    narrow_spec = sampler.apply_choices(spec, width_multipliers=0.5)
    narrow, report = child_of(spec, narrow_spec, tensors, input_shape=specs.CIFAR_SHAPE)
    assert report.fresh == 0
    for layer in narrow.layers:
        if "_block_" in layer.name and layer.get_weights():
            for got, full in zip(layer.get_weights(), tensors[layer.name]):
                assert got.size < full.size and np.isin(got, full).all(), layer.name
    # Any child the sampler draws inherits and runs.
    children = sampler.sample_children(spec, input_shape=specs.CIFAR_SHAPE, num_classes=CLASSES, count=12, seed=0)
    for child_spec in children:
        model, report = child_of(spec, child_spec, tensors, input_shape=specs.CIFAR_SHAPE)
        assert report.aligned > 0
        assert np.isfinite(model(x, training=False)).all()


def test_a_child_with_another_transition_gets_a_fresh_head():
    gap_teacher = a.ArchSpec([a.conv_bn_act(8), a.maxpool(), a.gap()])
    flat_teacher = a.ArchSpec([a.conv_bn_act(8), a.maxpool(), a.flatten()])
    # Teacher gap, child flatten: the head sees 4 x 4 x 8 features where the teacher's saw 8: fresh.
    tensors = inheritance.canonical_weights(build(gap_teacher), gap_teacher, SHAPE, CLASSES)
    child, report = child_of(gap_teacher, flat_teacher, tensors)
    np.testing.assert_array_equal(weights(child, "logits")[0], weights(build(flat_teacher, seed=7), "logits")[0])
    np.testing.assert_array_equal(weights(child, "l0_conv")[0], tensors["l0_conv"][0])
    assert report.aligned == 2 and report.fresh == 1
    # Teacher flatten, child gap: 8 features where the teacher's head had 128: the positional fallback.
    tensors = inheritance.canonical_weights(build(flat_teacher), flat_teacher, SHAPE, CLASSES)
    child, report = child_of(flat_teacher, gap_teacher, tensors)
    np.testing.assert_array_equal(weights(child, "logits")[0], tensors["logits"][0][:8])
    assert report.aligned == 2 and report.positional == 1 and report.fresh == 0


def test_removing_an_identity_block_keeps_the_next_layers_aligned():
    spec = a.ArchSpec([a.conv_bn_act(32), a.basic(32), a.basic(32), a.gap()])
    tensors = inheritance.canonical_weights(build(spec, seed=1), spec, SHAPE, CLASSES)
    child_spec = sampler.apply_choices(spec, removed_units=(1,), width_multipliers={0: 0.5})
    child, report = child_of(spec, child_spec, tensors)
    assert report.positional == 0 and report.fresh == 0
    kept = np.sort(np.argsort(-np.abs(tensors["l0_conv"][0]).sum(axis=(0, 1, 2)), kind="stable")[:16])
    # The remaining identity block and the head take exactly the stem's kept channels.
    # The two teacher blocks are the same shape: the remaining one pairs with the first (the earliest).
    conv1 = tensors["l3_block_conv1"][0]
    mid = np.sort(np.argsort(-np.abs(conv1).sum(axis=(0, 1, 2)), kind="stable")[:16])
    np.testing.assert_array_equal(weights(child, "l3_block_conv1")[0], conv1[:, :, kept][..., mid])
    np.testing.assert_array_equal(weights(child, "l3_block_conv2")[0],
                                  tensors["l3_block_conv2"][0][:, :, mid][..., kept])  # identity: out = in
    np.testing.assert_array_equal(weights(child, "logits")[0], tensors["logits"][0][kept])


def test_a_teacher_whose_layer_order_is_not_the_specs_is_copied_by_role():
    """A user's residual block listing the shortcut before the main path (same shapes): pairing by order
    would give the block's last convolution the shortcut's weights; the parser's roles pair them right."""
    keras.utils.set_random_seed(0)
    layers = keras.layers
    inputs = keras.Input(SHAPE)
    stem = layers.Activation("relu")(layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(inputs)))
    y = layers.Activation("relu")(layers.BatchNormalization()(layers.Conv2D(8, 1, use_bias=False)(stem)))
    y = layers.Activation("relu")(layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same",
                                                                           use_bias=False)(y)))
    shortcut = layers.BatchNormalization()(layers.Conv2D(32, 1, use_bias=False)(stem))  # made before conv3
    y = layers.BatchNormalization()(layers.Conv2D(32, 1, use_bias=False)(y))
    y = layers.Activation("relu")(layers.Add()([shortcut, y]))
    outputs = layers.Dense(CLASSES, activation="softmax")(layers.GlobalAveragePooling2D()(y))
    model = keras.Model(inputs, outputs)
    randomise_statistics(model)
    spec = a.ArchSpec([a.conv_bn_act(8), a.bottleneck(8, shortcut="projection"), a.gap()])
    assert spec.count_params(SHAPE, CLASSES) == model.count_params()
    copy, tensors = inheritance.canonical_model(model, spec, SHAPE, CLASSES)
    main_conv3 = [layer for layer in model.layers if isinstance(layer, layers.Conv2D)][-1]
    np.testing.assert_array_equal(tensors["l3_block_conv3"][0], main_conv3.get_weights()[0])
    x = np.random.default_rng(1).normal(size=(4, *SHAPE)).astype(np.float32)
    np.testing.assert_allclose(copy(x), model(x), atol=1e-6)


def test_a_block_switched_to_a_projection_gets_a_fresh_projection():
    spec = a.ArchSpec([a.conv_bn_act(32), a.basic(32), a.gap()])
    tensors = inheritance.canonical_weights(build(spec), spec, SHAPE, CLASSES)
    child_spec = a.ArchSpec([a.conv_bn_act(32), a.basic(16, shortcut="projection"), a.gap()])
    _, report = child_of(spec, child_spec, tensors)
    assert report.fresh == 2 and report.aligned == 2 + 4 + 1


def test_canonical_weights_reads_a_model_with_other_layer_names():
    spec = a.ArchSpec([a.conv(8), a.bn(), a.act(), a.gap()])
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(SHAPE), keras.layers.Conv2D(8, 3, padding="same", name="mine"),
                              keras.layers.BatchNormalization(name="norm"), keras.layers.Activation("relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(CLASSES, "softmax")])
    tensors = inheritance.canonical_weights(model, spec, SHAPE, CLASSES)
    np.testing.assert_array_equal(tensors["l0_conv"][0], model.get_layer("mine").get_weights()[0])
    np.testing.assert_array_equal(tensors["logits"][0], model.layers[-1].get_weights()[0])
    with pytest.raises(ValueError, match="layers with weights"):
        inheritance.canonical_weights(model, a.ArchSpec([a.conv(8), a.gap()]), SHAPE, CLASSES)


def test_recalibration_sets_the_mean_of_the_batch_statistics():
    spec = a.ArchSpec([a.conv(4), a.bn(), a.gap()])
    model = build(spec)
    rng = np.random.RandomState(0)
    batches = [(rng.normal(i, 1 + i, size=(32,) + SHAPE).astype("float32"), None) for i in range(3)]
    conv = keras.Model(model.inputs, model.get_layer("l0_conv").output)
    means = [conv.predict(x, verbose=0).mean(axis=(0, 1, 2)) for x, _ in batches]
    variances = [conv.predict(x, verbose=0).var(axis=(0, 1, 2)) for x, _ in batches]
    norm = model.get_layer("l1_bn")
    assert inheritance.recalibrate_batch_norm([model], batches, max_batches=2) == 2
    np.testing.assert_allclose(norm.moving_mean.numpy(), np.mean(means[:2], axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(norm.moving_variance.numpy(), np.mean(variances[:2], axis=0), rtol=1e-3)
    assert norm.momentum == 0.9  # restored


# -- inherited children and finalists through the trainers -----------------------------
from acompress import child_training  # noqa: E402
from acompress import corpus  # noqa: E402
from acompress import corpus_generation  # noqa: E402
from acompress import data  # noqa: E402
from acompress import finalists  # noqa: E402
from acompress import training  # noqa: E402

DATA = data.DataConfig(max_examples=320)
SMALL_TEACHER = a.ArchSpec([a.conv_bn_act(32), a.conv_bn_act(32), a.maxpool(), a.conv_bn_act(64), a.gap()])


@pytest.fixture(scope="module")
def trained():
    splits = data.load(DATA)
    keras.utils.set_random_seed(0)
    model = keras_builder.build_model(SMALL_TEACHER, splits.info.input_shape, CLASSES, name="teacher")
    train, validation = data.search_datasets(splits.for_search(), DATA)
    training.fit(model, train, validation, training.TrainConfig(epochs=8, learning_rate=3e-3))
    return splits, model, training.accuracy(model, validation)


def test_an_inherited_label_of_the_teacher_itself_is_the_teachers_accuracy(trained):
    splits, model, accuracy = trained
    config = child_training.ProxyConfig(init="inherit", epochs=0)
    narrow = sampler.apply_choices(SMALL_TEACHER, width_multipliers=0.25)
    results = child_training.train_children([SMALL_TEACHER, narrow], [0, 1], splits.for_search(), config,
                                            batch_size=64, seed=0, teacher=model)
    assert [r.status for r in results] == ["ok", "ok"]
    assert results[0].val_accuracy == pytest.approx(accuracy, abs=1e-9) and accuracy > 0.5
    assert results[1].val_accuracy < accuracy
    # Recalibration and a short fine-tune (10 steps here) recover part of the narrowed child.
    tuned = child_training.train_children([narrow], [1], splits.for_search(), dataclasses.replace(
        config, epochs=2, recalibrate_batches=5, learning_rate=3e-3), batch_size=64, seed=0, teacher=model)
    assert tuned[0].val_accuracy > results[1].val_accuracy + 0.1


def test_the_inherited_recipe_needs_the_teacher_and_allows_zero_epochs():
    with pytest.raises(ValueError, match="needs the trained teacher"):
        child_training.train_children([SMALL_TEACHER], [0], data.load(DATA).for_search(),
                                      child_training.ProxyConfig(init="inherit"), batch_size=64, seed=0)
    with pytest.raises(ValueError, match="epochs must be >= 1 from scratch"):
        child_training.ProxyConfig(epochs=0)
    with pytest.raises(ValueError, match="init must be one of"):
        child_training.ProxyConfig(init="pretrained")
    assert child_training.ProxyConfig(init="inherit", epochs=0).epochs == 0


def test_the_recipe_is_pinned_and_a_scratch_recipe_keeps_the_old_metadata():
    scratch = child_training.ProxyConfig().recipe()
    assert "init" not in scratch and "importance" not in scratch and "pack" not in scratch
    inherited = child_training.ProxyConfig(init="inherit", recalibrate_batches=20).recipe()
    assert inherited["init"] == "inherit" and inherited["recalibrate_batches"] == 20
    assert child_training.ProxyConfig.from_recipe(inherited, pack=2) == child_training.ProxyConfig(
        init="inherit", recalibrate_batches=20, pack=2)


def test_a_corpus_of_one_recipe_never_resumes_under_another(trained, tmp_path):
    splits, model, _ = trained
    inherited = corpus_generation.CorpusConfig(num_children=2, replicate_fraction=0.0, proxy=child_training.ProxyConfig(
        init="inherit", epochs=0, recalibrate_batches=2, pack=2))
    directory = str(tmp_path / "corpus")
    stored = corpus_generation.generate(directory, SMALL_TEACHER, splits.for_search(), DATA, inherited, seed=0,
                                        teacher_model=model)
    assert stored.metadata["proxy"]["init"] == "inherit"
    assert all(r.status == "ok" for r in stored.records)
    scratch = dataclasses.replace(inherited, proxy=child_training.ProxyConfig(epochs=1, pack=2))
    with pytest.raises(corpus.MetadataMismatchError, match=r'proxy\.init: stored "inherit", given <missing>'):
        corpus_generation.generate(directory, SMALL_TEACHER, splits.for_search(), DATA, scratch, seed=0,
                                   teacher_model=model)
    other = dataclasses.replace(inherited, proxy=dataclasses.replace(inherited.proxy, importance="bn_scale"))
    with pytest.raises(corpus.MetadataMismatchError, match=r"proxy\.importance"):
        corpus_generation.generate(directory, SMALL_TEACHER, splits.for_search(), DATA, other, seed=0,
                                   teacher_model=model)


def test_an_inherited_finalist_starts_from_the_teacher(trained):
    splits, model, accuracy = trained
    train, validation = data.search_datasets(splits.for_search(), DATA)
    config = finalists.FinalistConfig(train=training.TrainConfig(epochs=1, learning_rate=1e-5), init="inherit",
                                      recalibrate_batches=0)
    child, summary = finalists.train_spec(SMALL_TEACHER, train, validation, splits.info, config, seed=0,
                                          teacher_model=model)
    # One epoch at a tiny learning rate: still (nearly) the teacher; from scratch it would be near chance.
    assert summary["val_accuracy"] > accuracy - 0.05
    with pytest.raises(ValueError, match="need the trained teacher"):
        finalists.train_spec(SMALL_TEACHER, train, validation, splits.info, config, seed=0)


def test_inheritance_under_several_replicas_is_refused_before_any_work(trained):
    import types  # pylint: disable=import-outside-toplevel
    _, model, _ = trained
    two_replicas = types.SimpleNamespace(num_replicas_in_sync=2)
    with pytest.raises(ValueError, match="not supported under a multi-replica strategy"):
        finalists.check_teacher(finalists.inherited(), model, two_replicas)
    finalists.check_teacher(finalists.FinalistConfig(), model, two_replicas)  # scratch: fine
    with pytest.raises(ValueError, match="not supported under a multi-replica strategy"):
        child_training.train_children([SMALL_TEACHER], [0], data.load(DATA).for_search(),
                                      child_training.ProxyConfig(init="inherit"), batch_size=64, seed=0,
                                      teacher=model, strategy=two_replicas)


# -- keras.applications kinds ---------------------------------------------------------
MOBILE_SHAPE = (16, 16, 3)


def _teacher_of(spec, input_shape=MOBILE_SHAPE, seed=3):
    model = build(spec, seed=seed, input_shape=input_shape)
    randomise_statistics(model)
    return model, inheritance.canonical_weights(model, spec, input_shape, CLASSES)


@pytest.mark.parametrize("name", ["mobilenet_like", "resnet_v1_like", "separable_like"])
def test_a_child_equal_to_the_teacher_computes_what_the_teacher_computes(name):
    spec = getattr(specs, name)()
    model, tensors = _teacher_of(spec)
    child, report = child_of(spec, spec, tensors, input_shape=MOBILE_SHAPE)
    assert report.fresh == 0 and report.positional == 0
    x = np.random.default_rng(0).normal(size=(4, *MOBILE_SHAPE)).astype(np.float32)
    np.testing.assert_allclose(child(x), model(x), rtol=1e-5, atol=1e-6)


def _top_l1(kernel, count):
    return np.sort(np.argsort(-np.abs(kernel).sum(axis=(0, 1, 2)), kind="stable")[:count])


def test_an_inverted_block_keeps_the_most_important_expanded_channels():
    spec = specs.mobilenet_like()
    _, tensors = _teacher_of(spec)
    # Unit 4 (layer 6: 16 wide, strided, expansion 6 on 12 channels) at expansion 3 and half width;
    # the residual blocks after it (layers 7, 8) follow its width.
    child_spec = sampler.apply_choices(spec, width_multipliers={4: 0.5}, expansion_choices={4: 3})
    assert child_spec[6] == a.inverted(8, expansion=3, stride=2) and child_spec[7] == a.inverted(8)
    child, report = child_of(spec, child_spec, tensors, input_shape=MOBILE_SHAPE)
    assert report.fresh == 0 and report.positional == 0
    expand = tensors["l6_block_expand"][0]                       # (1, 1, 12, 72)
    wide = _top_l1(expand, 36)
    np.testing.assert_array_equal(weights(child, "l6_block_expand")[0], expand[..., wide])
    np.testing.assert_array_equal(weights(child, "l6_block_dwconv")[0], tensors["l6_block_dwconv"][0][:, :, wide])
    np.testing.assert_array_equal(weights(child, "l6_block_dw_bn")[0], tensors["l6_block_dw_bn"][0][wide])
    project = tensors["l6_block_project"][0]
    outputs = _top_l1(project, 8)
    np.testing.assert_array_equal(weights(child, "l6_block_project")[0], project[:, :, wide][..., outputs])
    # The next (residual) block reads those channels and writes back to the same positions.
    expand7 = tensors["l7_block_expand"][0]
    wide7 = _top_l1(expand7, 48)
    np.testing.assert_array_equal(weights(child, "l7_block_expand")[0], expand7[:, :, outputs][..., wide7])
    np.testing.assert_array_equal(weights(child, "l7_block_project")[0],
                                  tensors["l7_block_project"][0][:, :, wide7][..., outputs])


def test_a_depthwise_convolution_follows_its_input_channels():
    spec = specs.separable_like()
    _, tensors = _teacher_of(spec)
    child_spec = sampler.apply_choices(spec, width_multipliers={1: 0.5})  # the sepconv before the dwconv
    child, report = child_of(spec, child_spec, tensors, input_shape=MOBILE_SHAPE)
    assert report.fresh == 0 and report.positional == 0
    pointwise = tensors["l3_sepconv"][1]
    kept = np.sort(np.argsort(-np.abs(pointwise).sum(axis=(0, 1, 2)), kind="stable")[:16])
    np.testing.assert_array_equal(weights(child, "l3_sepconv")[1], pointwise[..., kept])
    np.testing.assert_array_equal(weights(child, "l3_sepconv")[2], tensors["l3_sepconv"][2][kept])
    np.testing.assert_array_equal(weights(child, "l6_dwconv")[0], tensors["l6_dwconv"][0][:, :, kept])
    np.testing.assert_array_equal(weights(child, "l7_bn")[0], tensors["l7_bn"][0][kept])
    np.testing.assert_array_equal(weights(child, "l9_sepconv")[0], tensors["l9_sepconv"][0][:, :, kept])


@pytest.mark.parametrize("name, options", [("ResNet50", {}), ("MobileNetV2", {"alpha": 0.35})])
def test_children_of_keras_applications_inherit_their_weights(name, options):
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=CLASSES, **options)
    spec, tensors = inheritance.source(model, (32, 32, 3), CLASSES)
    children = sampler.sample_children(spec, input_shape=(32, 32, 3), num_classes=CLASSES, count=2, seed=4)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    for child_spec in children:
        child, report = child_of(spec, child_spec, tensors, input_shape=(32, 32, 3))
        assert report.aligned > report.positional + report.fresh
        assert np.isfinite(np.asarray(child(x))).all()
