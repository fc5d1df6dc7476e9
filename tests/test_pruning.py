"""L1-norm filter pruning (Li et al.): the allocation rule, the sensitivity analysis, the kept filters."""

import keras
import numpy as np
import pytest

from acompress import baselines
from acompress import data
from acompress import finalists
from acompress import inheritance
from acompress import keras_builder
from acompress import pruning
from acompress import sampler
from acompress import training
from acompress import tuner
from tests import specs

SHAPE = specs.DIGITS_SHAPE
TEACHER = specs.digits_teacher()
TINY = data.DataConfig(max_examples=100, batch_size=32)


def params(spec):
    return spec.count_params(SHAPE, 10)


def test_prunable_units_are_the_scalable_ones():
    # digits teacher: 0 conv64, 1 conv64, 2 pool, 3 conv128, 4 conv128, 5 pool, 6 conv256, 7 gap
    assert pruning.prunable_units(TEACHER) == (0, 1, 3, 4, 6)
    residual = specs.residual()
    identity = [unit.index for unit in sampler.units(residual)
                if unit.kind == sampler.BLOCK and unit.primary.shortcut == "identity"]
    assert identity and not set(identity) & set(pruning.prunable_units(residual))


def flat_table(value=0.9, **overrides):
    """Every unit loses nothing down to 1/16 except those in overrides: unit -> {fraction: accuracy}."""
    table = {unit: {fraction: value for fraction in (0.5, 0.25, 0.125, 0.0625)}
             for unit in pruning.prunable_units(TEACHER)}
    for unit, row in overrides.items():
        table[int(unit[1:])].update(row)
    return table


@pytest.mark.parametrize("target", [2.0, 8.0, 30.0])
def test_allocation_meets_the_ratio_and_spares_the_sensitive_unit(target):
    # Unit 6 (conv256, the most parameters) collapses when pruned at all; the others cost nothing.
    table = flat_table(u6={0.5: 0.1, 0.25: 0.1, 0.125: 0.1, 0.0625: 0.1})
    keep, spec, reached = pruning.allocate(TEACHER, SHAPE, 10, target_ratio=target, base_accuracy=0.9,
                                           table=table)
    assert reached and params(TEACHER) / params(spec) >= target
    assert spec == pruning.pruned_spec(TEACHER, keep)
    if target <= 8.0:  # reachable without touching unit 6
        assert 6 not in keep
    else:
        assert keep  # it had to go down there too, but last
        assert all(fraction <= 0.125 for unit, fraction in keep.items() if unit != 6)


def test_allocation_takes_the_cheapest_loss_per_parameter_first():
    # Unit 1 (64 -> 128 channels in) and unit 4 differ only in what pruning them costs.
    table = flat_table(u1={0.5: 0.89}, u4={0.5: 0.5}, u3={0.5: 0.5}, u6={0.5: 0.5}, u0={0.5: 0.5})
    teacher_params = params(TEACHER)
    one_step = teacher_params / params(pruning.pruned_spec(TEACHER, {1: 0.5}))
    keep, _, reached = pruning.allocate(TEACHER, SHAPE, 10, target_ratio=one_step, base_accuracy=0.9, table=table)
    assert reached and keep == {1: 0.5}


def test_allocation_edges():
    table = flat_table()
    keep, spec, reached = pruning.allocate(TEACHER, SHAPE, 10, target_ratio=1.0, base_accuracy=0.9, table=table)
    assert keep == {} and spec == TEACHER and reached
    keep, spec, reached = pruning.allocate(TEACHER, SHAPE, 10, target_ratio=1e6, base_accuracy=0.9, table=table)
    assert not reached and set(keep.values()) == {0.0625}
    with pytest.raises(ValueError, match="target_ratio"):
        pruning.allocate(TEACHER, SHAPE, 10, target_ratio=0.5, base_accuracy=0.9, table=table)


def test_config_refuses_bad_values():
    assert pruning.PruningConfig(grid=(0.25, 0.5, 0.5)).grid == (0.5, 0.25)
    for bad in [dict(grid=()), dict(grid=(1.0,)), dict(grid=(0.0,)), dict(recalibrate_batches=-1),
                dict(importance="random"), dict(eval_examples=0)]:
        with pytest.raises(ValueError):
            pruning.PruningConfig(**bad)


@pytest.fixture(scope="module")
def tiny_teacher():
    splits = data.load(TINY)
    keras.utils.set_random_seed(0)
    model = keras_builder.build_model(TEACHER, SHAPE, 10)
    train, validation, _ = data.pipelines(splits, TINY)
    training.fit(model, train, validation, training.TrainConfig(epochs=2))
    return splits, model


def test_sensitivity_scores_the_teacher_and_every_unit_at_every_fraction(tiny_teacher):
    splits, model = tiny_teacher
    config = pruning.PruningConfig(grid=(0.5, 0.25), recalibrate_batches=0, eval_examples=64)
    base, table, evaluations = pruning.sensitivity(model, splits.for_search(), TINY, config)
    assert evaluations == 1 + 5 * 2 and set(table) == {0, 1, 3, 4, 6}
    assert all(set(row) == {0.5, 0.25} for row in table.values())
    assert all(0.0 <= value <= 1.0 for row in table.values() for value in row.values())
    # Without recalibration, the unpruned copy is the teacher itself: the same accuracy on the same examples.
    chosen = np.sort(np.random.default_rng(TINY.seed).choice(len(splits.y_val), 64, replace=False))
    same = data.make_dataset(splits.x_val[chosen], splits.y_val[chosen], batch_size=32, training=False)
    assert base == pytest.approx(training.accuracy(model, same))


def test_the_pruned_network_keeps_the_largest_l1_filters(tiny_teacher):
    splits, model = tiny_teacher
    result = pruning.prune(model, splits.for_search(), TINY, target_ratio=4.0,
                           config=pruning.PruningConfig(grid=(0.5, 0.25), recalibrate_batches=2, eval_examples=64))
    assert result.reached and result.ratio >= 4.0 and result.params == params(result.spec)
    assert result.to_dict()["keep"] and result.evaluations == 11 and result.seconds > 0
    # The finalist procedure (init=inherit) starts the pruned network from the teacher's largest-L1 filters.
    teacher_spec, tensors = inheritance.source(model, SHAPE, 10)
    child = keras_builder.build_model(result.spec, SHAPE, 10)
    inheritance.inherit(child, result.spec, teacher_spec, tensors, SHAPE)
    previous = None  # the teacher channels the current layer receives (None: the image)
    pruned_any = False
    for unit in sampler.units(result.spec):
        if unit.kind != sampler.CONV:
            continue
        name = f"l{unit.start}_conv"
        teacher_kernel, teacher_bias = tensors[name]
        kernel, bias = child.get_layer(name).get_weights()
        kept = np.sort(np.argsort(-np.abs(teacher_kernel).sum(axis=(0, 1, 2)), kind="stable")[:kernel.shape[-1]])
        pruned_any |= len(kept) < teacher_kernel.shape[-1]
        inputs = teacher_kernel if previous is None else teacher_kernel[:, :, previous, :]
        np.testing.assert_array_equal(kernel, inputs[..., kept])
        np.testing.assert_array_equal(bias, teacher_bias[kept])
        previous = kept
    assert pruned_any


@pytest.mark.slow  # a finalist trained; the allocation, sensitivity and kept filters stay in the default run
def test_run_baseline_prunes_and_fine_tunes_one_finalist(tiny_teacher, tmp_path):
    splits, model = tiny_teacher
    config = baselines.BaselineConfig(
        method=baselines.L1_PRUNE, tuner=tuner.TunerConfig(target_ratio=6.0),
        finalist=finalists.FinalistConfig(train=training.TrainConfig(epochs=1), init="inherit",
                                          recalibrate_batches=2),
        pruning=pruning.PruningConfig(grid=(0.5, 0.25), recalibrate_batches=2, eval_examples=64))
    metrics = {"val_accuracy": 0.5, "test_accuracy": 0.5}
    result = baselines.run_baseline(config, TEACHER, splits, TINY, seed=0, teacher_metrics=metrics,
                                    directory=str(tmp_path), teacher_model=model)
    assert result["method"] == "l1_prune" and len(result["finalists"]) == 1
    assert result["chosen"]["ratio"] >= 6.0 and result["pruning"]["reached"]
    assert result["budget"]["evaluations"] == 11 and result["budget"]["finalist_epochs"] == 1
    with pytest.raises(ValueError, match="needs teacher_model|need the trained teacher"):
        baselines.run_baseline(config, TEACHER, splits, TINY, seed=0, teacher_metrics=metrics,
                               directory=str(tmp_path / "none"))
