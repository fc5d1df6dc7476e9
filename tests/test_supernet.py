"""The teacher as a supernet: ordering, masks equal to built children, labels, sandwich training, storage."""

import json
import logging
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from acompress import archspec as a
from acompress import child_training
from acompress import corpus_generation
from acompress import data
from acompress import inheritance
from acompress import keras_builder
from acompress import sampler
from acompress import supernet

SHAPE = (8, 8, 1)
CLASSES = 10
# Every kind a supernet masks: kernels of 5 (centre 3 and 1), a pool, a flatten into a hidden dense layer, dropout.
TEACHER = a.ArchSpec([a.conv(12, 5), a.bn(), a.act(), a.maxpool(), a.conv(16, 3), a.bn(), a.act(),
                      a.flatten(), a.dense(24), a.bn(), a.act(), a.dropout(0.1)])
CHILD = a.ArchSpec([a.conv(5, 3), a.bn(), a.act(), a.maxpool(), a.conv(7, 1), a.bn(), a.act(),
                    a.flatten(), a.dense(9), a.bn(), a.act(), a.dropout(0.1)])
DATA = data.DataConfig(max_examples=320)


@pytest.fixture
def absl_logs(caplog):
    caplog.set_level(logging.INFO, logger="absl")
    return caplog


@pytest.fixture(scope="module")
def splits():
    return data.load(DATA)


def _teacher(seed=0):
    """The teacher with random weights and batch-norm statistics far from (0, 1), so that they matter."""
    keras.utils.set_random_seed(seed)
    model = keras_builder.build_model(TEACHER, SHAPE, CLASSES)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in layer.get_weights()])
    return model


def _tensors(masks):
    return [tf.constant(c) for c in masks.channels], [tf.constant(k) for k in masks.kernels]


@pytest.fixture(scope="module")
def teacher():
    return _teacher()


@pytest.fixture(scope="module")
def net(teacher):
    return supernet.from_teacher(teacher, SHAPE, CLASSES)


def test_ordering_keeps_the_function_and_puts_the_largest_l1_filters_first(teacher, net):
    x = np.random.default_rng(1).normal(size=(16, *SHAPE)).astype(np.float32)
    np.testing.assert_allclose(net.model(x, training=False), teacher(x, training=False), atol=1e-5)
    for index, layer in enumerate(TEACHER):
        if layer.kind in ("conv", "dense"):
            kernel = net.model.get_layer(f"l{index}_{layer.kind}").get_weights()[0]
            norms = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)
            assert np.all(np.diff(norms) <= 1e-6), f"layer {index}: filters not in decreasing L1 norm"
    # The same filters as L1 inheritance from the teacher: the first conv's first 5 filters are the teacher's top 5.
    teacher_kernel = teacher.get_layer("l0_conv").get_weights()[0]
    top = np.argsort(-np.abs(teacher_kernel).reshape(-1, 12).sum(axis=0), kind="stable")[:5]
    np.testing.assert_array_equal(net.model.get_layer("l0_conv").get_weights()[0][..., :5], teacher_kernel[..., top])


def test_a_masked_pass_computes_what_the_built_child_computes(net):
    masks = net.masks(CHILD)
    assert [int(c.sum()) for c in masks.channels] == [5, 7, 9]
    assert [int(k.sum()) for k in masks.kernels] == [9, 1]
    channels, kernels = _tensors(masks)
    x = tf.constant(np.random.default_rng(2).normal(size=(32, *SHAPE)).astype(np.float32))
    _, stats = net.forward(x, channels, kernels, training=False, collect=True)
    mine = net.forward(x, channels, kernels, training=False, stats=stats)
    # The child built by keras_builder, inheriting the supernet's first filters and kernel centres, with the
    # same batch-norm statistics.
    child = keras_builder.build_model(CHILD, SHAPE, CLASSES)
    spec, tensors = inheritance.source(net.model, SHAPE, CLASSES)
    report = inheritance.inherit(child, CHILD, spec, tensors, SHAPE, importance="first")
    assert report.fresh == 0 and report.positional == 0
    norms = [layer for layer in child.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for norm, (mean, variance) in zip(norms, stats):
        width = norm.moving_mean.shape[0]
        norm.moving_mean.assign(mean.numpy()[:width])
        norm.moving_variance.assign(variance.numpy()[:width])
    theirs = keras_builder.logits_model(child)(x, training=False)
    np.testing.assert_allclose(mine, theirs, atol=1e-4)
    # The whole network's masks are the model itself.
    full = _tensors(net.full_masks())
    model_stats = [(n.moving_mean, n.moving_variance) for n in net.model.layers
                   if isinstance(n, keras.layers.BatchNormalization)]
    np.testing.assert_allclose(net.forward(x, *full, training=False, stats=model_stats),
                               keras_builder.logits_model(net.model)(x, training=False), atol=1e-5)


@pytest.mark.parametrize("child, message", [
    (a.ArchSpec(list(TEACHER)[:3] + list(TEACHER)[4:]), "layers"),          # a removed pool
    (a.ArchSpec([a.conv(13, 5)] + list(TEACHER)[1:]), "13 filters"),          # wider than the teacher
    (a.ArchSpec([a.conv(12, 4)] + list(TEACHER)[1:]), "not the centre"),      # an even difference
    (a.ArchSpec([a.conv(12, 5, stride=2)] + list(TEACHER)[1:]), "differs"),   # another stride
])
def test_what_is_not_a_sub_network_is_refused(net, child, message):
    with pytest.raises(supernet.NotASubnetwork, match=message):
        net.masks(child)


def test_a_strided_kernel_change_is_refused():
    spec = a.ArchSpec([a.conv(8, 3, stride=2), a.bn(), a.act(), a.gap()])
    net = supernet.Supernet(keras_builder.build_model(spec, SHAPE, CLASSES), spec, SHAPE, CLASSES)
    with pytest.raises(supernet.NotASubnetwork, match="stride 2"):
        net.masks(a.ArchSpec([a.conv(8, 1, stride=2), a.bn(), a.act(), a.gap()]))


def test_teachers_with_blocks_are_refused_by_name():
    spec = a.ArchSpec([a.conv_bn_act(8), a.basic(8, shortcut="identity"), a.gap()])
    with pytest.raises(supernet.UnsupportedTeacher, match="layer 3 of the teacher is 'basic'"):
        supernet.check_teacher(spec)


def test_a_label_is_the_built_childs_accuracy_after_the_same_recalibration(net, splits):
    search = splits.for_search()
    labeller = supernet.Labeller(net, search, recalibrate_batches=3, batch_size=32, seed=0)
    label = labeller.accuracy(CHILD)
    # By hand: the child's statistics from the same 96 images (the first 3 batches of epoch 0, as one batch).
    batches = data.EpochBatches(search.x_train, search.y_train, batch_size=32, seed=0)
    x = tf.concat([x for x, _ in batches.for_epoch(0).take(3)], axis=0)
    channels, kernels = _tensors(net.masks(CHILD))
    _, stats = net.forward(x, channels, kernels, training=False, collect=True)
    logits = net.forward(tf.constant(search.x_val), channels, kernels, training=False, stats=stats)
    expected = float(np.mean(np.argmax(logits, -1) == search.y_val))
    assert label == pytest.approx(expected)
    # Another epoch's batches (a replicate) give other statistics.
    other = supernet.Labeller(net, search, recalibrate_batches=3, batch_size=32, seed=0, epoch=1)
    assert not np.array_equal(other._calibration.numpy(), labeller._calibration.numpy())


def _pool(count=12, seed=0, max_ratio=64):
    config = sampler.SamplerConfig(p_remove=0.0, width_jitter=1.0, max_ratio=max_ratio)
    return sampler.sample_children(TEACHER, input_shape=SHAPE, num_classes=CLASSES, count=count, seed=seed,
                                   config=config)


def test_sandwich_training_makes_the_children_work_on_their_own(splits):
    search = splits.for_search()
    net = supernet.from_teacher(_teacher(3), SHAPE, CLASSES)
    pool = _pool(max_ratio=6)
    small = supernet.smallest(pool)
    assert all(net.masks(child) for child in pool)
    assert small.count_params(SHAPE, CLASSES) <= min(c.count_params(SHAPE, CLASSES) for c in pool)

    def labels():
        labeller = supernet.Labeller(net, search, recalibrate_batches=4, batch_size=32, seed=0)
        return np.array([labeller.accuracy(child) for child in [small, *pool[:6], TEACHER]])

    before = labels()
    metrics = supernet.train(net, pool, search, epochs=6, learning_rate=3e-3, schedule="cosine",
                             children_per_step=2, batch_size=32, seed=0)
    after = labels()
    assert metrics["pool_subnetworks"] == len(pool) and len(metrics["loss_per_epoch"]) == 6
    assert all(np.isfinite(metrics["loss_per_epoch"]))
    assert metrics["loss_per_epoch"][-1] < metrics["loss_per_epoch"][0]
    # From chance (random weights) to working networks: the whole one, the smallest child, and the others.
    assert np.all(before < 0.3), before
    assert after[-1] > 0.75 and after[0] > 0.35 and np.mean(after[1:-1]) > 0.5, after


def test_train_or_load_trains_once_and_again_on_other_settings(splits, tmp_path, absl_logs):
    search = splits.for_search()
    teacher, pool = _teacher(4), _pool(6)
    kwargs = dict(epochs=1, learning_rate=1e-3, schedule="cosine", children_per_step=1, recalibrate_batches=2,
                  batch_size=64, seed=0)
    directory = str(tmp_path / "supernet")
    first = supernet.train_or_load(directory, teacher, pool, search, **kwargs)
    info = json.load(open(os.path.join(directory, supernet.INFO_FILE)))
    assert info["metrics"]["epochs"] == 1 and 0 <= info["metrics"]["full_val_accuracy"] <= 1
    again = supernet.train_or_load(directory, teacher, pool, search, **kwargs)
    assert "loaded from" in absl_logs.text
    for mine, theirs in zip(first.weights, again.weights):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
    # Trained weights moved away from the (ordered) teacher's; other settings train again.
    ordered = supernet.from_teacher(teacher, SHAPE, CLASSES).model
    assert not np.array_equal(ordered.get_layer("l0_conv").get_weights()[0], first.get_layer("l0_conv").get_weights()[0])
    supernet.train_or_load(directory, teacher, pool, search, **{**kwargs, "seed": 1})
    assert "other settings" in absl_logs.text
    assert json.load(open(os.path.join(directory, supernet.INFO_FILE)))["key"]["seed"] == 1
    with pytest.raises(FileNotFoundError, match="no trained supernet"):
        supernet.load_trained(str(tmp_path / "elsewhere"))


@pytest.mark.parametrize("kwargs, message", [
    (dict(recalibrate_batches=0), "recalibrate_batches must be >= 1"),
    (dict(recalibrate_batches=4, importance="bn_scale"), "importance must be 'l1'"),
    (dict(recalibrate_batches=4, distill=True), "distill must be off"),
    (dict(recalibrate_batches=4, epochs=0), "epochs must be >= 1"),
    (dict(recalibrate_batches=4, supernet_children=-1), "supernet_children"),
])
def test_the_supernet_recipe_is_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        child_training.ProxyConfig(init="supernet", **kwargs)


def test_a_supernet_corpus_costs_its_training_not_its_children():
    # 30 epochs, each the whole network, the smallest child and 2 random ones: whatever the corpus size.
    assert child_training.corpus_child_epochs("supernet", 30, 2, trainings=440) == 120
    assert child_training.corpus_child_epochs("supernet", 30, 2, trainings=2200) == 120
    assert child_training.corpus_child_epochs("inherit", 2, 2, trainings=440) == 880
    assert child_training.corpus_child_epochs("scratch", 3, 0, trainings=10) == 30


def test_the_recipe_pins_supernet_fields_only_for_a_supernet():
    assert "supernet_children" in child_training.ProxyConfig(init="supernet", recalibrate_batches=2).recipe()
    assert "supernet_children" not in child_training.ProxyConfig(init="inherit").recipe()
    assert "supernet_children" not in child_training.ProxyConfig().recipe()


@pytest.mark.parametrize("kwargs, message", [
    (dict(sampler=sampler.SamplerConfig(p_remove=0.1)), "--p_remove=0"),
    (dict(sampler=sampler.SamplerConfig(p_remove=0.0), num_shards=2), "num_shards"),
])
def test_a_supernet_corpus_refuses_what_it_cannot_label(kwargs, message):
    proxy = child_training.ProxyConfig(init="supernet", recalibrate_batches=2)
    with pytest.raises(ValueError, match=message):
        corpus_generation.CorpusConfig(proxy=proxy, **kwargs)


def test_a_supernet_corpus_labels_its_children_and_keeps_its_supernet(splits, tmp_path):
    search = splits.for_search()
    proxy = child_training.ProxyConfig(init="supernet", epochs=1, learning_rate=1e-3, recalibrate_batches=2,
                                       supernet_children=1, pack=4)
    config = corpus_generation.CorpusConfig(num_children=6, replicate_fraction=0.34, proxy=proxy,
                                            sampler=sampler.SamplerConfig(p_remove=0.0), groups_per_worker=2)
    directory = str(tmp_path / "corpus")
    stored = corpus_generation.generate(directory, TEACHER, search, DATA, config, seed=0, teacher_model=_teacher(5))
    assert stored.meta.proxy["init"] == "supernet" and stored.meta.proxy["supernet_children"] == 1
    ok = stored.select(["ok"])
    assert len(ok.records) == len(stored.records) == 9  # 6 children, 3 of them labelled twice
    assert all(r.epochs == 0 and 0 <= r.val_accuracy <= 1 for r in stored.records)
    model = supernet.load_trained(supernet.corpus_supernet_dir(directory))
    assert model.count_params() == TEACHER.count_params(SHAPE, CLASSES)
    # A changed recipe is refused against the stored corpus, naming the field.
    other = corpus_generation.CorpusConfig(num_children=6, replicate_fraction=0.34,
                                           proxy=child_training.ProxyConfig(init="supernet", epochs=2,
                                                                            recalibrate_batches=2,
                                                                            supernet_children=1, pack=4),
                                           sampler=sampler.SamplerConfig(p_remove=0.0))
    with pytest.raises(Exception, match="epochs"):
        corpus_generation.generate(directory, TEACHER, search, DATA, other, seed=0, teacher_model=_teacher(5))
