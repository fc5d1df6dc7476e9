"""Keras Tuner baselines: the hypermodel is the sampler's child space, objectives, budgets, finalists,
uniform scaling, the tune_baseline binary, and a distributed search (slow)."""

import json
import os
import re
import socket
import subprocess
import sys
import types

import keras_tuner
import numpy as np
import pytest

from acompress import archspec as a
from acompress import baselines
from acompress import data
from acompress import finalists
from acompress import keras_builder
from acompress import sampler
from acompress import search_space
from acompress import training
from acompress import tuner
from acompress import uniform
from acompress import zoo
from acompress.flags import baseline_flags

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = (8, 8, 1)
DIGITS_TEACHER = zoo.get("digits_cnn", DIGITS, 10)
SMALL_TEACHER = a.load(os.path.join(REPO_ROOT, "testdata", "specs", "small_cnn.json"))
RESNET18 = a.load(os.path.join(REPO_ROOT, "testdata", "specs", "resnet18_cifar.json"))
TINY_DATA = data.DataConfig(max_examples=100)  # digits: 100 / 288 / 360
ONE_EPOCH = tuner.TunerConfig(trial=finalists.FinalistConfig(train=training.TrainConfig(epochs=1)))


def sample_values(hypermodel, count, seed=0):
    """`count` configurations drawn the way Keras Tuner's random oracle draws them."""
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    rng = np.random.default_rng(seed)
    return [{p.name: p.random_sample(int(rng.integers(1 << 30))) for p in hp.space} for _ in range(count)]


# -- the child space ----------------------------------------------------------------------------

def test_hypermodel_declares_one_hyperparameter_per_sampler_choice():
    model = tuner.ChildHyperModel(DIGITS_TEACHER, DIGITS, 10)
    groups = sampler.width_groups(DIGITS_TEACHER)
    removable = sampler.removable_units(DIGITS_TEACHER, DIGITS)
    kernel_units = [u.index for u in sampler.units(DIGITS_TEACHER) if u.has_kernel]
    hp = keras_tuner.HyperParameters()
    model.declare_hyperparameters(hp)
    names = [p.name for p in hp.space]
    assert names == ([f"width_{g}" for g in range(len(groups))] + [f"remove_u{u}" for u in removable]
                     + [f"kernel_u{u}" for u in kernel_units])
    assert model.width_groups == groups
    width = hp.space[0]
    assert list(width.values) == list(sampler.SamplerConfig().width_grid) and width.default == 1.0
    assert all(list(hp.space[names.index(f"kernel_u{u}")].values) == [3, 1] for u in kernel_units)
    # The default configuration is the teacher.
    assert model.spec(keras_tuner.HyperParameters()) == DIGITS_TEACHER
    per_unit = tuner.ChildHyperModel(DIGITS_TEACHER, DIGITS, 10, per_unit_widths=True, tune_kernels=False)
    scalable = [u.index for u in sampler.units(DIGITS_TEACHER) if u.scalable]
    assert per_unit.width_names == tuple(f"width_u{u}" for u in scalable) and per_unit.kernel_options == ()


@pytest.mark.parametrize("teacher, input_shape, num_classes", [
    (DIGITS_TEACHER, DIGITS, 10), (SMALL_TEACHER, DIGITS, 10), (RESNET18, (32, 32, 3), 10),
], ids=["digits_cnn", "small_cnn", "resnet18"])
def test_every_sampled_configuration_is_a_valid_child_or_rejected_cleanly(teacher, input_shape, num_classes):
    model = tuner.ChildHyperModel(teacher, input_shape, num_classes)
    space = search_space.SearchSpace()
    teacher_params = teacher.count_params(input_shape, num_classes)
    valid = invalid = 0
    for values in sample_values(model, 300):
        choices = model.choices(values)
        try:
            child = model.spec_from_values(values)
        except tuner.InvalidChildError as error:
            invalid += 1
            assert isinstance(error, keras_tuner.errors.FailedTrialError)
            with pytest.raises((ValueError, search_space.OutOfSearchSpaceError)):  # the sampler refuses it too
                space.check(sampler.apply_choices(teacher, input_shape=input_shape, **choices))
            continue
        valid += 1
        # The one mapping: exactly what the corpus sampler's apply_choices makes of these choices.
        assert child == sampler.apply_choices(teacher, input_shape=input_shape, **choices)
        assert space.contains(child)
        child.output_shapes(input_shape)
        assert child.count_params(input_shape, num_classes) <= teacher_params
    assert valid > 200, (valid, invalid)


def test_a_configuration_without_convolutions_is_an_invalid_child_and_builds_nothing():
    model = tuner.ChildHyperModel(SMALL_TEACHER, DIGITS, 10)
    conv_units = [u.index for u in sampler.units(SMALL_TEACHER) if u.kind == sampler.CONV]
    values = {model.removal_name(u): True for u in conv_units}
    with pytest.raises(tuner.InvalidChildError, match="no conv or block unit"):
        model.spec_from_values(values)
    hp = keras_tuner.HyperParameters()
    model.declare_hyperparameters(hp)
    hp.values.update(values)
    with pytest.raises(keras_tuner.errors.FailedTrialError):
        model.build(hp)


def test_build_gives_the_child_model():
    model = tuner.ChildHyperModel(DIGITS_TEACHER, DIGITS, 10)
    hp = keras_tuner.HyperParameters()
    model.declare_hyperparameters(hp)
    hp.values.update({"width_0": 0.25, "remove_u6": True})
    spec = model.spec_from_values(hp.values)
    assert model.build(hp).count_params() == spec.count_params(DIGITS, 10) < model.teacher_params


# -- objectives -------------------------------------------------------------------------------------

def test_log_tradeoff_pays_tradeoff_per_halving():
    score = lambda acc, params: tuner.objective_value("log_tradeoff", val_accuracy=acc, params=params,  # noqa
                                                          teacher_params=1024, tradeoff=0.01)
    assert score(0.9, 1024) == pytest.approx(0.9)
    assert score(0.9, 256) == pytest.approx(0.92)
    assert score(0.95, 512) == pytest.approx(score(0.94, 256))


def test_target_objective_ranks_every_child_that_meets_the_target_first():
    score = lambda acc, params: tuner.objective_value("target", val_accuracy=acc, params=params,  # noqa
                                                          teacher_params=1000, target_ratio=10)
    assert score(0.80, 100) == 0.80  # exactly 10x
    assert score(0.01, 50) > score(0.99, 101) > score(0.99, 500)  # meeting it beats any accuracy; closer is better
    assert score(0.99, 101) < 0


def test_n2n_reward_and_its_pitfall_past_14x():
    assert tuner.n2n_compression_term(1.0) == 0.0
    assert tuner.n2n_compression_term(2.0) == pytest.approx(0.75)
    assert tuner.n2n_compression_term(14.0) < 0.995 < tuner.n2n_compression_term(14.2)
    assert tuner.n2n_compression_term(80.0) > 0.9998
    n2n = lambda acc, params: tuner.objective_value("n2n", val_accuracy=acc, params=params,  # noqa
                                                        teacher_params=250_000, teacher_accuracy=0.98)
    assert n2n(0.98, 250_000 // 4) == pytest.approx(0.9375)
    # The pitfall: half a point of accuracy outweighs 15x -> 250x.
    assert n2n(0.955, 250_000 // 15) > n2n(0.95, 1000)
    # log_tradeoff separates them.
    tradeoff = lambda acc, params: tuner.objective_value("log_tradeoff", val_accuracy=acc,  # noqa
                                                             params=params, teacher_params=250_000)
    assert tradeoff(0.95, 1000) > tradeoff(0.955, 250_000 // 15)
    with pytest.raises(ValueError, match="objective"):
        tuner.objective_value("accuracy", val_accuracy=1, params=1, teacher_params=1)


def test_configs_refuse_bad_values_and_a_search_without_budget():
    assert not tuner.Budget().limited and tuner.Budget(child_epochs=5).limited
    with pytest.raises(ValueError, match="budget"):
        baselines.BaselineConfig(method="random")
    baselines.BaselineConfig(method="uniform")  # uniform scaling has no search
    with pytest.raises(ValueError, match="wall-time budget"):
        tuner.Budget(wall_seconds=0)
    with pytest.raises(ValueError, match="objective"):
        tuner.TunerConfig(objective="reward")
    with pytest.raises(ValueError, match="width_grid"):
        tuner.TunerConfig(width_grid=(0.5, 0.25, 1.0))


def test_default_search_budget_is_what_the_corpus_costs_under_the_same_flags():
    flag_values = types.SimpleNamespace(num_children=500, replicate_fraction=0.1, proxy_epochs=3, seed=0,
                                        proxy_init="inherit", supernet_children=2,
                                        budget_seconds=None, budget_child_epochs=None, budget_trials=None)
    assert baseline_flags.budget_from_flags(flag_values) == tuner.Budget(child_epochs=(500 + 50) * 3)
    # Supernet labels train no child: the corpus costs the supernet's epochs, each the whole network and
    # the smallest + 2 random children (what the pipeline's report counts).
    flag_values.proxy_init, flag_values.proxy_epochs = "supernet", 10
    assert baseline_flags.budget_from_flags(flag_values) == tuner.Budget(child_epochs=10 * (2 + 2))
    flag_values.budget_seconds = 600.0  # any explicit limit replaces the default
    assert baseline_flags.budget_from_flags(flag_values) == tuner.Budget(wall_seconds=600.0)


# -- the budget (an oracle driven by hand, a fake clock) -----------------------------------------------

def oracle_for(method, budget, tmp_path, *, epochs=10):
    config = tuner.TunerConfig(trial=finalists.FinalistConfig(train=training.TrainConfig(epochs=epochs)))
    oracle = tuner._make_oracle(method, config, budget, tuner_seed=1)  # pylint: disable=protected-access
    oracle._set_project_dir(str(tmp_path), method)  # pylint: disable=protected-access
    hp = oracle.get_space()
    tuner.ChildHyperModel(SMALL_TEACHER, DIGITS, 10).declare_hyperparameters(hp)
    oracle.update_space(hp)
    now = [100.0]
    oracle.clock = lambda: now[0]
    return oracle, now


def finish(oracle, trial, epochs, score=0.5):
    oracle.update_trial(trial.trial_id, {tuner.SCORE: score, "child_epochs": epochs})
    trial.status = keras_tuner.engine.trial.TrialStatus.COMPLETED
    oracle.end_trial(trial)


STOPPED, RUNNING = "STOPPED", "RUNNING"


def test_wall_budget_stops_new_trials_and_counts_from_the_first_trial(tmp_path):
    oracle, now = oracle_for("random", tuner.Budget(wall_seconds=100), tmp_path)
    now[0] = 500.0  # time before the search is not counted
    started = []
    while True:
        trial = oracle.create_trial("tuner0")
        if trial.status == STOPPED:
            break
        started.append(trial.trial_id)
        now[0] += 30
        finish(oracle, trial, 10)
    assert len(started) == 4  # at 0, 30, 60, 90 s; at 120 s the budget is spent
    assert oracle.search_seconds() == 120 and oracle.child_epochs_run() == 40

    oracle.save()  # a rerun resumes the wall clock where it was
    again, later = oracle_for("random", tuner.Budget(wall_seconds=200), tmp_path)
    again.reload()
    assert again.elapsed_seconds() == 120 and again.child_epochs_run() == 40
    later[0] = 9000.0
    trial = again.create_trial("tuner0")
    assert trial.status == RUNNING and trial.trial_id not in started
    later[0] += 50
    finish(again, trial, 10)
    assert again.search_seconds() == 170


def test_epoch_budget_counts_running_trials_as_committed(tmp_path):
    oracle, _ = oracle_for("random", tuner.Budget(child_epochs=25), tmp_path, epochs=10)
    # Three workers ask at once: 0 + 10 + 10 committed epochs < 25 lets the third start, not a fourth.
    trials = [oracle.create_trial(f"tuner{k}") for k in range(3)]
    assert [t.status for t in trials] == [RUNNING] * 3
    assert oracle.create_trial("tuner3").status == STOPPED
    assert oracle.create_trial("tuner0") is trials[0]  # a worker keeps its running trial
    finish(oracle, trials[0], 3)  # diverged early: 3 epochs run; 3 + 20 committed < 25
    assert oracle.create_trial("tuner0").status == RUNNING
    assert oracle.spent() is not None and "child-epoch budget" in oracle.spent()


def test_trial_budget(tmp_path):
    oracle, _ = oracle_for("bayesian", tuner.Budget(max_trials=2), tmp_path)
    for _ in range(2):
        finish(oracle, oracle.create_trial("tuner0"), 1)
    assert oracle.create_trial("tuner0").status == STOPPED


# -- real searches on tiny data ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    return data.load(TINY_DATA)


def search(tiny, method, budget, directory, config=ONE_EPOCH, teacher=SMALL_TEACHER):
    return tuner.run_tuner(method, teacher, tiny.for_search(), TINY_DATA, config, seed=0,
                               budget=budget, directory=str(directory))


def test_random_search_stops_at_the_epoch_budget_and_resumes(tiny, tmp_path):
    first = search(tiny, "random", tuner.Budget(child_epochs=3), tmp_path)
    assert first.role == "single" and first.tuner_seed == 1 and first.objective == "log_tradeoff"
    assert first.child_epochs == 3 == sum(t["child_epochs"] for t in first.trials)
    completed = [t for t in first.trials if t["status"] == "COMPLETED"]
    assert len(completed) == 3 and all(t["child_epochs"] == 1 for t in completed)
    for t in first.trials:
        if t["status"] == "FAILED":  # an invalid configuration: no spec, no epochs
            assert t["spec"] is None and t["child_epochs"] == 0 and "not a valid child" in t["message"]
        else:
            spec = a.ArchSpec.from_dict(t["spec"])
            assert t["spec_hash"] == spec.hash and t["params"] == spec.count_params(DIGITS, 10)
            assert t["ratio"] == pytest.approx(SMALL_TEACHER.count_params(DIGITS, 10) / t["params"])
            assert t["score"] == pytest.approx(tuner.objective_value(
                "log_tradeoff", val_accuracy=t["val_accuracy"], params=t["params"],
                teacher_params=SMALL_TEACHER.count_params(DIGITS, 10)))
    assert first.budget_dict()["epoch_limit"] == 3 and first.wall_seconds > 0

    resumed = search(tiny, "random", tuner.Budget(child_epochs=5), tmp_path)
    assert resumed.trials[:len(first.trials)] == first.trials  # kept, not run again
    assert resumed.child_epochs == 5 and resumed.wall_seconds > first.wall_seconds
    specs = tuner.top_distinct(resumed.trials, 10)
    assert len({s.hash for s in specs}) == len(specs) >= 1


def test_hyperband_counts_the_epochs_each_trial_actually_ran(tiny, tmp_path):
    config = tuner.TunerConfig(trial=finalists.FinalistConfig(train=training.TrainConfig(epochs=3)))
    # The digits teacher: an invalid configuration (all five convs removed) is rare, so the first
    # bracket's three 1-epoch trials complete and the best is continued to 3 epochs.
    outcome = search(tiny, "hyperband", tuner.Budget(child_epochs=8), tmp_path, config, DIGITS_TEACHER)
    trials = outcome.trials
    assert outcome.child_epochs == sum(t["child_epochs"] for t in trials)
    assert 8 <= outcome.child_epochs < 8 + 3  # stops once spent; overshoots by less than one trial
    continued = [t for t in trials if t["initial_epoch"] > 0]
    assert continued, [t["hyperparameters"] for t in trials]
    for t in continued:
        past = trials[int(t["hyperparameters"]["tuner/trial_id"])]
        assert t["spec_hash"] == past["spec_hash"] and t["initial_epoch"] == past["epochs"]
        assert t["child_epochs"] == t["hyperparameters"]["tuner/epochs"] - t["initial_epoch"] < t["epochs"]
        assert os.path.exists(os.path.join(tmp_path, "hyperband", f"trial_{past['trial_id']}",
                                           tuner.WEIGHTS_FILE))
    # The same network at several epochs is one finalist candidate.
    hashes = [s.hash for s in tuner.top_distinct(trials, 100)]
    assert len(hashes) == len(set(hashes)) == len({t["spec_hash"] for t in trials if t["status"] == "COMPLETED"})


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # a GP fit on 2 points
def test_bayesian_search_runs_its_gaussian_process(tiny, tmp_path):
    config = tuner.TunerConfig(objective="target", target_ratio=4, bayesian_initial_points=2,
                                   trial=ONE_EPOCH.trial)
    outcome = search(tiny, "bayesian", tuner.Budget(max_trials=4), tmp_path, config)
    assert len(outcome.trials) == 4 and outcome.objective == "target"
    assert sum(t["status"] == "COMPLETED" for t in outcome.trials) >= 2


def test_distilled_trials_need_and_use_the_teacher(tiny, tmp_path):
    teacher = keras_builder.build_model(SMALL_TEACHER, DIGITS, 10)  # untrained: a teacher is a teacher here
    config = tuner.TunerConfig(trial=finalists.FinalistConfig(train=training.TrainConfig(epochs=1),
                                                                  distill=True))
    with pytest.raises(ValueError, match="teacher"):
        search(tiny, "random", tuner.Budget(max_trials=2), tmp_path, config)
    outcome = tuner.run_tuner("random", SMALL_TEACHER, tiny.for_search(), TINY_DATA, config, seed=0,
                                  budget=tuner.Budget(max_trials=2), directory=str(tmp_path),
                                  teacher_model=teacher)
    assert [t["status"] for t in outcome.trials].count("COMPLETED") >= 1


def test_run_tuner_refuses_the_test_split_and_no_budget(tiny, tmp_path):
    with pytest.raises(TypeError, match="SearchSplits"):
        tuner.run_tuner("random", SMALL_TEACHER, tiny, TINY_DATA, ONE_EPOCH, seed=0,
                            budget=tuner.Budget(max_trials=1), directory=str(tmp_path))
    with pytest.raises(ValueError, match="budget"):
        search(tiny, "random", tuner.Budget(), tmp_path)
    with pytest.raises(ValueError, match="method"):
        search(tiny, "grid", tuner.Budget(max_trials=1), tmp_path)


def test_top_distinct_ranks_completed_trials_by_score_and_drops_repeats():
    spec = lambda width: a.ArchSpec([a.conv(width), a.gap()]).to_dict()  # noqa: E731
    record = lambda tid, status, score, width: {"trial_id": tid, "status": status, "score": score,  # noqa: E731
                                                "spec": None if width is None else spec(width)}
    trials = [record("0", "COMPLETED", 0.5, 8), record("1", "COMPLETED", 0.9, 16), record("2", "FAILED", None, None),
              record("3", "COMPLETED", 0.9, 8), record("4", "COMPLETED", 0.7, 16), record("5", "COMPLETED", 0.8, 4)]
    top = tuner.top_distinct(trials, 2)
    assert [s.to_dict() for s in top] == [spec(16), spec(8)]  # 16 first (tie broken by trial id)
    assert len(tuner.top_distinct(trials, 10)) == 3


def test_tuner_role_reads_keras_tuner_environment(monkeypatch):
    for name in ("KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"):
        monkeypatch.delenv(name, raising=False)
    assert tuner.tuner_role() == "single"
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    with pytest.raises(ValueError, match="KERASTUNER_ORACLE_PORT"):
        tuner.tuner_role()
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "8000")
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    assert tuner.tuner_role() == "chief"
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner1")
    assert tuner.tuner_role() == "worker"


# -- uniform width scaling ---------------------------------------------------------------------------

@pytest.mark.parametrize("target", [2.0, 10.0, 40.0])
def test_uniform_scaling_is_the_widest_uniform_child_that_meets_the_target(target):
    teacher_params = DIGITS_TEACHER.count_params(DIGITS, 10)
    scaled = uniform.uniform_width_scaling(DIGITS_TEACHER, DIGITS, 10, target_ratio=target)
    assert scaled.reached and scaled.ratio >= target and scaled.params == scaled.spec.count_params(DIGITS, 10)
    assert scaled.spec == sampler.apply_choices(DIGITS_TEACHER, width_multipliers=scaled.alpha)
    # Every width is the teacher's times alpha, snapped: one uniform multiplier.
    teacher_widths = [layer.filters for layer in DIGITS_TEACHER if layer.kind == "conv"]
    widths = [layer.filters for layer in scaled.spec if layer.kind == "conv"]
    space = search_space.SearchSpace()
    assert widths == [min(space.snap_width(w * scaled.alpha), w) for w in teacher_widths]
    # A hair wider misses the target: alpha is the largest that meets it.
    wider = sampler.apply_choices(DIGITS_TEACHER, width_multipliers=min(1.0, scaled.alpha * 1.001))
    assert teacher_params / wider.count_params(DIGITS, 10) < target


def test_uniform_scaling_edges():
    same = uniform.uniform_width_scaling(DIGITS_TEACHER, DIGITS, 10, target_ratio=1.0)
    assert same.alpha == 1.0 and same.spec == DIGITS_TEACHER and same.reached
    unreachable = uniform.uniform_width_scaling(DIGITS_TEACHER, DIGITS, 10, target_ratio=1e9)
    assert not unreachable.reached and unreachable.alpha == uniform.MIN_ALPHA
    with pytest.raises(ValueError, match="target_ratio"):
        uniform.uniform_width_scaling(DIGITS_TEACHER, DIGITS, 10, target_ratio=0.5)


# -- the binary ----------------------------------------------------------------------------------------

SMOKE = "--flagfile=flags/smoke.flags"
TINY_RUN = ["--max_examples=100", "--teacher_epochs=1", "--trial_epochs=1", "--finalist_epochs=1"]
RESULT_KEYS = {"schema_version", "method", "seed", "tuner_seed", "objective", "objective_config", "teacher",
               "chosen", "selection", "finalists", "trials", "budget"}


def tune_baseline(output_dir, *args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "binaries.tune_baseline", SMOKE, f"--output_dir={output_dir}",
                           *TINY_RUN, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                          env=env)


def describe(result):
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-5000:]}"


def read_json(path):
    with open(path) as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp("baseline") / "random")
    result = tune_baseline(output_dir, "--budget_trials=3", "--num_finalists=2")
    assert result.returncode == 0, describe(result)
    return output_dir, result


def test_binary_writes_the_shared_result_schema(random_run):
    output_dir, run = random_run
    result = read_json(os.path.join(output_dir, "result.json"))
    assert set(result) == RESULT_KEYS
    assert result["method"] == "random" and result["seed"] == 0 and result["tuner_seed"] == 1
    teacher = read_json(os.path.join(output_dir, "teacher", "metrics.json"))
    assert result["teacher"]["params"] == teacher["params"] == 559_306
    assert result["teacher"]["test_accuracy"] == teacher["test_accuracy"]
    assert len(result["trials"]) == 3 and result["budget"]["trials"] == 3 and result["budget"]["trial_limit"] == 3
    assert result["budget"]["child_epochs"] == sum(t["child_epochs"] for t in result["trials"])
    assert 1 <= len(result["finalists"]) <= 2
    assert result["chosen"]["spec_hash"] in {f["spec_hash"] for f in result["finalists"]}
    assert result["selection"]["split"] == "validation"
    for finalist in result["finalists"]:
        assert finalist["epochs"] == 1 and finalist["ratio"] == pytest.approx(559_306 / finalist["params"])
    config = read_json(os.path.join(output_dir, "config.json"))
    assert config["binary"] == "tune_baseline" and config["baseline"]["method"] == "random"
    assert config["baseline"]["budget"] == {"child_epochs": None, "max_trials": 3, "wall_seconds": None}
    assert os.path.isdir(os.path.join(output_dir, "tuner", "random"))
    printed = json.loads(run.stdout)  # stdout holds the summary and nothing else
    assert printed["chosen"]["spec_hash"] == result["chosen"]["spec_hash"] and "spec" not in printed["chosen"]


def test_binary_rerun_resumes_without_training_again(random_run):
    output_dir, first = random_run
    before = read_json(os.path.join(output_dir, "result.json"))
    again = tune_baseline(output_dir, "--budget_trials=3", "--num_finalists=2")
    assert again.returncode == 0, describe(again)
    assert "teacher: reusing" in again.stderr and "already trained" in again.stderr
    assert re.search(r"trial \d+: ", again.stderr) is None  # no trial trained again
    after = read_json(os.path.join(output_dir, "result.json"))
    assert after["trials"] == before["trials"] and after["finalists"] == before["finalists"]


def test_binary_uniform_reuses_a_teacher_dir(random_run, tmp_path):
    source, _ = random_run
    output_dir = str(tmp_path / "uniform")
    run = tune_baseline(output_dir, "--method=uniform", "--target_ratio=8", f"--teacher_dir={source}/teacher")
    assert run.returncode == 0, describe(run)
    result = read_json(os.path.join(output_dir, "result.json"))
    assert result["teacher"] == read_json(os.path.join(source, "result.json"))["teacher"]  # the same teacher
    assert result["trials"] == [] and result["tuner_seed"] is None and result["budget"]["child_epochs"] == 0
    assert result["uniform"]["reached"] and result["chosen"]["ratio"] >= 8
    assert "teacher: copied from" in run.stderr and "teacher: reusing" in run.stderr


@pytest.mark.slow  # 30 s; tests/test_pruning.py covers run_baseline's l1_prune in the default run
def test_binary_l1_prune_prunes_the_same_teacher_and_fine_tunes_it(random_run, tmp_path):
    source, _ = random_run
    output_dir = str(tmp_path / "l1")
    run = tune_baseline(output_dir, "--method=l1_prune", "--target_ratio=8", "--pruning_grid=0.5,0.25",
                        "--pruning_eval_examples=64", f"--teacher_dir={source}/teacher")
    assert run.returncode == 0, describe(run)
    result = read_json(os.path.join(output_dir, "result.json"))
    assert result["teacher"] == read_json(os.path.join(source, "result.json"))["teacher"]
    assert result["method"] == "l1_prune" and result["trials"] == [] and len(result["finalists"]) == 1
    pruned = result["pruning"]
    assert pruned["reached"] and result["chosen"]["ratio"] >= 8 and pruned["spec_hash"] == result["chosen"]["spec_hash"]
    assert result["budget"]["evaluations"] == pruned["evaluations"] == 1 + 5 * 2
    assert set(pruned["sensitivity"]) == {"0", "1", "3", "4", "6"}
    assert "inherits the teacher's weights" in run.stderr


BINARY_USER_ERRORS = {
    "zero-budget": (["--budget_seconds=0"], "--budget_seconds must be > 0"),
    "missing-teacher-dir": (["--method=uniform", "--teacher_dir=/nonexistent"], "holds no trained teacher"),
}


@pytest.fixture(scope="module")
def binary_refusals(tmp_path_factory):
    """{case: (result, output dir)} of the binary on every case of BINARY_USER_ERRORS, in one process."""
    from tests.test_binaries import batched_refusals
    cases = {name: [SMOKE, "--output_dir={run}", *TINY_RUN, *args] for name, (args, _) in BINARY_USER_ERRORS.items()}
    return batched_refusals("tune_baseline", cases, tmp_path_factory)


@pytest.mark.parametrize("case", list(BINARY_USER_ERRORS))
def test_binary_user_errors_are_one_line(case, binary_refusals):
    result, output_dir = binary_refusals[case]
    assert result.returncode == 2, describe(result)
    assert "Traceback" not in result.stderr and result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert BINARY_USER_ERRORS[case][1] in result.stderr and result.stdout.strip() == ""
    assert not os.path.exists(output_dir)


def test_binary_accepts_the_digits_flagfile(random_run, tmp_path):
    # Every flag of flags/digits.flags is defined; the run then fails on purpose, at the
    # teacher check, because the smoke teacher was trained with other flags.
    source, _ = random_run
    result = subprocess.run([sys.executable, "-m", "binaries.tune_baseline", "--flagfile=flags/digits.flags",
                             f"--output_dir={tmp_path / 'run'}", f"--teacher_dir={source}/teacher"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, describe(result)
    assert "holds a teacher made with other settings (differs in: data, train)" in result.stderr, describe(result)


# -- distributed ---------------------------------------------------------------------------------------

def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_distributed_search_with_a_chief_and_two_workers_records_every_trial_once(tmp_path):
    """40-55 s on 2 shared cores (run with -m slow): three TensorFlow processes, and Keras Tuner's chief,
    once a worker has stopped, checks only every 20 s whether the others have."""
    output_dir = str(tmp_path / "distributed")
    port = free_port()
    processes = {}
    for tuner_id in ("chief", "tuner0", "tuner1"):
        env = dict(os.environ, KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP="127.0.0.1",
                   KERASTUNER_ORACLE_PORT=str(port))
        processes[tuner_id] = subprocess.Popen(
            [sys.executable, "-m", "binaries.tune_baseline", SMOKE, f"--output_dir={output_dir}", *TINY_RUN,
             "--budget_trials=4", "--num_finalists=1"],
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outputs = {}
    try:
        for tuner_id, process in processes.items():
            stdout, stderr = process.communicate(timeout=600)
            outputs[tuner_id] = (process.returncode, stdout, stderr)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    for tuner_id, (code, stdout, stderr) in outputs.items():
        assert code == 0, f"{tuner_id}: exit {code}\n{stderr[-5000:]}"
    assert outputs["tuner0"][1].strip() == outputs["tuner1"][1].strip() == ""  # workers write no result
    result = read_json(os.path.join(output_dir, "result.json"))
    ids = [t["trial_id"] for t in result["trials"]]
    assert sorted(ids) == ["0", "1", "2", "3"] and len(set(ids)) == 4
    assert result["budget"]["child_epochs"] == sum(t["child_epochs"] for t in result["trials"])
    # Every trial ran in exactly one worker; the chief ran none.
    ran = [match for tuner_id in ("tuner0", "tuner1")
           for match in re.findall(r"\] trial (\d+): [0-9a-f]{16}", outputs[tuner_id][2])]
    failed = [t["trial_id"] for t in result["trials"] if t["status"] == "FAILED" and t["spec"] is None]
    assert sorted(ran + failed) == ids
    assert re.search(r"\] trial \d+: [0-9a-f]{16}", outputs["chief"][2]) is None
    assert all(t["status"] in ("COMPLETED", "FAILED") for t in result["trials"])
