"""Finalists: distinct candidates, full-budget training with one test evaluation, the choice rule."""

import math

import numpy as np
import pytest

from acompress import archspec as a
from acompress import data
from acompress import finalists
from acompress import training

DATA = data.DataConfig()  # digits, seed 0: 1,149 / 288 / 360
CHANCE = 0.1

SMALL = a.ArchSpec([a.conv_bn_act(16), a.maxpool(), a.conv_bn_act(32), a.gap()])
FLAT = a.ArchSpec([a.conv_bn_act(16), a.maxpool(), a.flatten(), a.dense(64), a.act()])
# Valid as a spec, but 8 -> 4 -> 2 -> 1 -> (no 2x2 window fits): cannot be built on 8x8 inputs.
TOO_MANY_POOLS = a.ArchSpec([a.conv(4)] + [a.maxpool() for _ in range(4)] + [a.gap()])
SHORT = finalists.FinalistConfig(train=training.TrainConfig(epochs=3, learning_rate=3e-3))


@pytest.fixture(scope="module")
def splits():
    return data.load(DATA)


def result(params, val, test=0.5, *, status=finalists.OK, width=8):
    """A synthetic finalist (a spec per width keeps hashes distinct)."""
    spec = a.ArchSpec([a.conv(width), a.gap()])
    return finalists.FinalistResult(spec, params, 10 * params, val, test, 1.0, 40, 1, status)


# -- distinct ---------------------------------------------------------------------------

def test_distinct_drops_repeats_and_keeps_first_occurrences_in_order():
    one, two, three = (a.ArchSpec([a.conv(w), a.gap()]) for w in (4, 8, 16))
    same_as_two = a.ArchSpec.from_json(two.to_json())  # another object, the same network
    assert finalists.distinct([two, one, same_as_two, three, one]) == [two, one, three]
    assert finalists.distinct([]) == []


def test_finalist_seed_depends_on_the_run_seed_and_spec_only():
    assert finalists.finalist_seed(0, SMALL) == finalists.finalist_seed(0, a.ArchSpec.from_json(SMALL.to_json()))
    assert finalists.finalist_seed(0, SMALL) != finalists.finalist_seed(1, SMALL)
    assert finalists.finalist_seed(0, SMALL) != finalists.finalist_seed(0, FLAT)
    assert 1 <= finalists.finalist_seed(0, SMALL) < 2 ** 31


# -- choose -------------------------------------------------------------------------------

def test_choose_takes_the_smallest_finalist_within_the_drop():
    results = [result(1000, 0.97, width=8), result(200, 0.955, width=16), result(50, 0.90, width=32),
               result(400, 0.985, width=64)]
    chosen = finalists.choose(results, teacher_accuracy=0.97, max_accuracy_drop=0.02)
    assert chosen is results[1]  # 200 params, 1.5 points below: within 2; the 50-param one is 7 below
    assert finalists.choose(results, teacher_accuracy=0.97, max_accuracy_drop=0.0) is results[3]
    assert finalists.choose(results, teacher_accuracy=0.97, max_accuracy_drop=0.1) is results[2]


def test_choose_decides_on_validation_accuracy_never_on_test():
    # The small network is within the drop on validation but far below on test;
    # the large one the other way round. Test accuracy must not change the choice.
    small = result(100, val=0.96, test=0.50, width=8)
    large = result(900, val=0.90, test=0.99, width=16)
    assert finalists.choose([small, large], teacher_accuracy=0.97, max_accuracy_drop=0.01) is small
    assert finalists.choose([large, small], teacher_accuracy=0.97, max_accuracy_drop=0.01) is small


def test_choose_falls_back_to_the_most_accurate_when_none_is_within_the_drop():
    results = [result(100, 0.80, width=8), result(900, 0.90, width=16), result(300, 0.90, width=32)]
    chosen = finalists.choose(results, teacher_accuracy=0.99, max_accuracy_drop=0.01)
    assert chosen is results[2]  # the most accurate; between equals, the smaller
    assert not finalists.within_drop(chosen, teacher_accuracy=0.99, max_accuracy_drop=0.01)


def test_choose_boundary_ties_and_failures():
    at_the_edge = result(100, 0.95, width=8)
    assert finalists.within_drop(at_the_edge, teacher_accuracy=0.97, max_accuracy_drop=0.02)
    assert finalists.choose([result(500, 0.99, width=16), at_the_edge], teacher_accuracy=0.97,
                            max_accuracy_drop=0.02) is at_the_edge
    # Equal sizes: the more accurate.
    low, high = result(100, 0.96, width=8), result(100, 0.97, width=16)
    assert finalists.choose([low, high], teacher_accuracy=0.97, max_accuracy_drop=0.02) is high
    # Failed and diverged finalists are never chosen, however small.
    nan = float("nan")
    broken = [result(1, nan, nan, status=finalists.FAILED, width=32),
              result(2, nan, nan, status=finalists.DIVERGED, width=64)]
    assert finalists.choose(broken + [high], teacher_accuracy=0.97, max_accuracy_drop=0.5) is high
    with pytest.raises(ValueError, match="none of the 2 finalists"):
        finalists.choose(broken, teacher_accuracy=0.97, max_accuracy_drop=0.5)
    with pytest.raises(ValueError, match="max_accuracy_drop"):
        finalists.choose([high], teacher_accuracy=0.97, max_accuracy_drop=-0.1)


def test_result_json_round_trip_writes_nan_as_null():
    nan = float("nan")
    failed = finalists.FinalistResult(SMALL, 123, 456, nan, nan, 0.5, 0, 7, finalists.FAILED, "ShapeError: x")
    record = failed.to_dict()
    assert record["val_accuracy"] is None and record["test_accuracy"] is None
    assert record["spec_hash"] == SMALL.hash and record["spec"] == SMALL.to_dict()
    back = finalists.FinalistResult.from_dict(record)
    assert back.spec == SMALL and back.status == finalists.FAILED and math.isnan(back.val_accuracy)
    ok = result(10, 0.5)
    assert finalists.FinalistResult.from_dict(ok.to_dict()) == ok


def test_config_validation():
    assert finalists.FinalistConfig().train == training.TrainConfig(epochs=40, learning_rate=1e-3)
    assert finalists.FinalistConfig().bn_momentum == 0.9
    with pytest.raises(ValueError, match="distill_alpha"):
        finalists.FinalistConfig(distill_alpha=1.5)
    with pytest.raises(ValueError, match="label_smoothing"):
        finalists.FinalistConfig(distill=True, train=training.TrainConfig(label_smoothing=0.1))
    config = finalists.FinalistConfig(distill=True, train=training.TrainConfig(epochs=3))
    assert finalists.FinalistConfig.from_dict(config.to_dict()) == config


# -- training -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(splits):
    """SMALL, the unbuildable spec and FLAT trained with a short budget (and SMALL again, alone)."""
    reported = []
    results = finalists.train_finalists([SMALL, TOO_MANY_POOLS, FLAT], splits, DATA, SHORT, seed=0,
                                        on_result=reported.append)
    alone = finalists.train_finalists([FLAT], splits, DATA, SHORT, seed=0, keep_models=False)
    return results, reported, alone


def test_finalists_train_far_above_chance_and_are_tested_once(trained, splits):
    results, reported, _ = trained
    assert [r.spec for r in results] == [SMALL, TOO_MANY_POOLS, FLAT]
    assert reported == results
    info = splits.info
    for r in (results[0], results[2]):
        assert r.status == finalists.OK and r.reason == "" and r.epochs == SHORT.train.epochs
        assert r.val_accuracy > 5 * CHANCE and r.test_accuracy > 5 * CHANCE, r
        assert r.params == r.spec.count_params(info.input_shape, info.num_classes) == r.model.count_params()
        assert r.flops == r.spec.count_flops(info.input_shape, info.num_classes)
        assert r.seed == finalists.finalist_seed(0, r.spec)
        # The kept model is the trained one: its test accuracy is the reported one.
        test = data.make_dataset(splits.x_test, splits.y_test, batch_size=256, training=False)
        assert training.accuracy(r.model, test) == r.test_accuracy
        assert r.to_dict()["status"] == "ok" and "model" not in r.to_dict()


def test_a_finalist_that_fails_is_recorded_and_the_others_train(trained):
    failed = trained[0][1]
    assert failed.status == finalists.FAILED and failed.reason.startswith("ShapeError")
    assert math.isnan(failed.val_accuracy) and math.isnan(failed.test_accuracy) and failed.model is None
    assert not failed.ok


def test_a_finalist_does_not_depend_on_the_others_or_its_position(trained):
    results, _, alone = trained
    assert alone[0].model is None  # keep_models=False
    assert alone[0].val_accuracy == results[2].val_accuracy
    assert alone[0].test_accuracy == results[2].test_accuracy


def test_distilled_finalists_leave_the_teacher_untouched(trained, splits):
    teacher = trained[0][2].model  # FLAT, trained above, plays the teacher
    before = [w.copy() for w in teacher.get_weights()]
    config = finalists.FinalistConfig(train=SHORT.train, distill=True, distill_temperature=2.0)
    distilled = finalists.train_finalists([SMALL], splits, DATA, config, seed=0, teacher_model=teacher)[0]
    assert distilled.status == finalists.OK and distilled.val_accuracy > 5 * CHANCE
    assert all(np.array_equal(x, y) for x, y in zip(before, teacher.get_weights()))
    assert distilled.model.count_params() == SMALL.count_params((8, 8, 1), 10)  # the student alone
    plain = trained[0][0]  # the same spec, seed and batches without the teacher: the soft loss changed the weights
    assert distilled.seed == plain.seed
    assert not all(np.array_equal(x, y) for x, y in zip(distilled.model.get_weights(), plain.model.get_weights()))
    with pytest.raises(ValueError, match="teacher"):
        finalists.train_finalists([SMALL], splits, DATA, config, seed=0)
