"""Compression: the finalist ladder, the choice, export and reload, the unreachable target."""

import dataclasses
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from acompress import archspec
from acompress import compression
from acompress import finalists
from acompress import keras_builder

TEACHER_PARAMS = 1000


def make_pool(params, scores, measured=None):
    pool = compression.Pool()
    for index, (p, s) in enumerate(zip(params, scores)):
        spec = archspec.ArchSpec([archspec.conv_bn_act(index + 1), archspec.gap()])
        pool.add(spec, p, p * 10, s, "test", None if measured is None else measured[index])
    return pool


def test_config_validation():
    with pytest.raises(ValueError, match="target"):
        compression.CompressConfig(target_ratio=None, max_accuracy_drop=None)
    with pytest.raises(ValueError):
        compression.CompressConfig(target_ratio=0.5)
    with pytest.raises(ValueError):
        compression.CompressConfig(max_accuracy_drop=1.5)
    with pytest.raises(ValueError):
        compression.CompressConfig(rung_factor=1.0)


def test_ladder_takes_the_best_of_each_rung():
    # ratios: 100, 50, 40, 25, 20, 12.5, 10 ; rungs from 10, factor 2: [10,20) [20,40) [40,80) [80,inf)
    params = [10, 20, 25, 40, 50, 80, 100]
    scores = [0.5, 0.6, 0.9, 0.7, 0.8, 0.95, 0.99]
    pool = make_pool(params, scores)
    config = compression.CompressConfig(min_ratio=10, rung_factor=2, num_finalists=4)
    picked = compression.pick_finalists(pool, TEACHER_PARAMS, config)
    assert [pool.params[i] for i in picked] == [100, 50, 25, 10]  # largest first; one per rung


def test_ladder_fills_empty_rungs_with_runners_up_and_respects_the_target():
    params = [10, 11, 12, 500]
    scores = [0.5, 0.9, 0.7, 0.99]
    pool = make_pool(params, scores)
    config = compression.CompressConfig(target_ratio=50, rung_factor=4, num_finalists=3)
    picked = compression.pick_finalists(pool, TEACHER_PARAMS, config)
    assert sorted(pool.params[i] for i in picked) == [10, 11, 12]  # 500 params (2x) is below the target
    assert compression.pick_finalists(make_pool([900], [0.9]), TEACHER_PARAMS, config) == []


def test_measured_proxy_accuracy_outranks_the_prediction():
    pool = make_pool([20, 21], [0.99, 0.5], measured=[0.6, None])
    config = compression.CompressConfig(min_ratio=10, rung_factor=100, num_finalists=1)
    picked = compression.pick_finalists(pool, TEACHER_PARAMS, config)
    assert pool.params[picked[0]] == 20 or pool.score()[picked[0]] == max(pool.score())
    assert pool.score().tolist() == [0.6, 0.5]


def result(params, val, test=0.9):
    spec = archspec.ArchSpec([archspec.conv_bn_act(params % 64 + 1), archspec.gap()])
    return finalists.FinalistResult(spec, params, params, val, test, 1.0, 1, 0)


def test_choose_smallest_within_drop_and_reports_misses():
    teacher = {"val_accuracy": 0.95}
    results = [result(100, 0.95), result(50, 0.945), result(20, 0.90)]
    config = compression.CompressConfig(max_accuracy_drop=0.01)
    chosen, met = compression.choose(results, teacher, config, TEACHER_PARAMS)
    assert chosen.params == 50 and met
    strict = compression.CompressConfig(max_accuracy_drop=0.0, target_ratio=40)
    chosen, met = compression.choose(results, teacher, strict, TEACHER_PARAMS)
    assert chosen.params == 20 and not met  # only one meets the ratio; it misses the accuracy
    ratio_only = compression.CompressConfig(max_accuracy_drop=None, target_ratio=15)
    chosen, met = compression.choose(results, teacher, ratio_only, TEACHER_PARAMS)
    assert chosen.params == 50 and met  # the most accurate at >= 15x


def test_trained_front_keeps_what_no_smaller_finalist_beats_on_validation():
    nan = float("nan")
    failed = dataclasses.replace(result(10, nan), status=finalists.FAILED)
    results = [result(100, 0.95), result(50, 0.945), result(60, 0.93), result(20, 0.90), result(30, 0.90),
               failed, result(200, 0.95)]
    front = compression.trained_front(results)
    # 30 ties 20 at 0.90, 60 is beaten by 50, 200 ties 100: off the front; the failed one is never on it.
    assert [r.params for r in front] == [20, 50, 100]
    teacher = {"val_accuracy": 0.95}
    for drop in (0.0, 0.01, 0.1):
        chosen, _ = compression.choose(results[:5], teacher, compression.CompressConfig(max_accuracy_drop=drop),
                                       TEACHER_PARAMS)
        assert chosen in front
    assert compression.trained_front([failed]) == []


def test_export_reloads_to_identical_outputs_with_raw_inputs(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras_builder.build_model(archspec.ArchSpec([archspec.conv_bn_act(8), archspec.maxpool(),
                                                         archspec.conv_bn_act(16), archspec.gap()]), (8, 8, 1), 10)
    raw = np.random.default_rng(0).uniform(0, 16, (5, 8, 8, 1)).astype(np.float32)
    normalisation = {"mean": [4.0], "std": [6.0]}
    out = compression.export(model, str(tmp_path), raw, normalisation=normalisation)
    assert out["max_abs_difference"] <= 1e-5 and out["raw_inputs"]
    loaded = tf.saved_model.load(out["saved_model"])  # keep a reference: its variables die with it
    served = loaded.serve(tf.constant(raw)).numpy()
    np.testing.assert_allclose(served, model((raw - 4.0) / 6.0).numpy(), atol=1e-5)
    reloaded = keras.saving.load_model(out["keras"], safe_mode=True)
    np.testing.assert_allclose(reloaded(raw).numpy(), served, atol=1e-6)
    assert os.path.exists(os.path.join(out["saved_model"], "saved_model.pb"))
