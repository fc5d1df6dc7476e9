"""Children trained in worker processes: same results as in-process, restarts, dead workers, errors."""

import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from acompress import archspec
from acompress import child_training
from acompress import child_workers
from acompress import data

DATA = data.DataConfig(max_examples=300)  # digits, a small training split
CONFIG = child_training.ProxyConfig(epochs=1, pack=2)
CHILDREN = [
    archspec.ArchSpec([archspec.flatten(), archspec.dense(16), archspec.act()]),
    archspec.ArchSpec([archspec.conv_bn_act(8), archspec.gap()]),
    archspec.ArchSpec([archspec.flatten(), archspec.dense(32), archspec.act()]),
    archspec.ArchSpec([archspec.conv_bn_act(8), archspec.maxpool(), archspec.flatten(), archspec.dense(16),
                       archspec.act()]),
]
INDICES = [3, 7, 8, 12]  # corpus indices, not positions: seeds derive from them
SEED = 1


@pytest.fixture(scope="module")
def search():
    return data.load(DATA).for_search()


@pytest.fixture(scope="module")
def in_process(search):
    return child_training.train_children(CHILDREN, INDICES, search, CONFIG, batch_size=DATA.batch_size, seed=SEED)


def in_workers(search, work_dir, **kwargs):
    return child_workers.train_children_in_workers(CHILDREN, INDICES, search, CONFIG, batch_size=DATA.batch_size,
                                                   seed=SEED, work_dir=str(work_dir), **kwargs)


@pytest.fixture(scope="module")
def one_group_per_worker(search, tmp_path_factory):
    """The four children (two groups) with a new worker for every group."""
    work_dir = tmp_path_factory.mktemp("workers")
    groups, workers = [], []
    results = in_workers(search, work_dir, groups_per_worker=1, on_result=groups.append,
                         on_worker=lambda pid, indices: workers.append((pid, indices)))
    return results, groups, workers, work_dir


def test_worker_results_equal_in_process_results(in_process, one_group_per_worker):
    results, groups, _, work_dir = one_group_per_worker
    assert [r.status for r in in_process] == [child_training.OK] * 4
    assert [r.index for r in results] == INDICES
    assert [r.spec for r in results] == CHILDREN
    assert [r.status for r in results] == [r.status for r in in_process]
    assert [r.seed for r in results] == [r.seed for r in in_process]
    assert [r.epochs for r in results] == [r.epochs for r in in_process]
    assert [r.val_accuracy for r in results] == [r.val_accuracy for r in in_process]
    # on_result: once per group, in order, with that group's results.
    assert [[r.index for r in group] for group in groups] == [INDICES[:2], INDICES[2:]]
    assert [r for group in groups for r in group] == results
    assert os.listdir(work_dir) == []  # the temporary arrays are gone


def test_a_new_worker_trains_each_group_when_groups_per_worker_is_one(one_group_per_worker):
    _, _, workers, _ = one_group_per_worker
    assert [indices for _, indices in workers] == [INDICES[:2], INDICES[2:]]
    pids = [pid for pid, _ in workers]
    assert len(set(pids)) == 2 and os.getpid() not in pids


@pytest.mark.slow  # several worker starts; .ci/run runs it
def test_a_child_that_keeps_killing_its_worker_is_recorded_failed_and_its_group_mates_are_not(
        search, in_process, tmp_path, monkeypatch):
    monkeypatch.setenv(child_workers.KILL_CHILD_ENV, str(INDICES[3]))
    groups = []
    results = in_workers(search, tmp_path, max_retries=1, on_result=groups.append)
    assert [r.index for r in results] == INDICES
    # The group dies twice, then its children are trained one at a time: only the culprit fails.
    assert [r.status for r in results] == [child_training.OK] * 3 + [child_training.FAILED]
    assert [r.val_accuracy for r in results[:3]] == [r.val_accuracy for r in in_process[:3]]
    assert math.isnan(results[3].val_accuracy) and results[3].epochs == 0
    assert results[3].reason == ("worker process died (exit code -9) while training this child alone; "
                                 "retried 1 time(s)")
    assert [r.seed for r in results] == [r.seed for r in in_process]
    assert [[r.index for r in group] for group in groups] == [INDICES[:2], INDICES[2:]]


@pytest.mark.slow  # several worker starts; .ci/run runs it
def test_a_group_whose_worker_died_once_is_retried(search, in_process, tmp_path, monkeypatch):
    marker = tmp_path / "killed"
    monkeypatch.setenv(child_workers.KILL_CHILD_ENV, str(INDICES[0]))
    monkeypatch.setenv(child_workers.KILL_ONCE_ENV, str(marker))
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    results = in_workers(search, work_dir, max_retries=1)
    assert marker.exists()  # the first attempt was killed
    assert [r.status for r in results] == [child_training.OK] * 4
    assert [r.val_accuracy for r in results] == [r.val_accuracy for r in in_process]


def test_an_exception_in_a_worker_reaches_the_caller(search, tmp_path):
    not_a_model = tmp_path / "teacher.keras"
    not_a_model.write_text("not a model")
    # The thread pools are set before the teacher is loaded: had TensorFlow started its pools
    # already (an op before cpu_threads.configure), the error would be about them instead.
    with pytest.raises(ValueError, match="cannot load a Keras model"):
        in_workers(search, tmp_path, teacher_path=str(not_a_model), intra_op_threads=1, inter_op_threads=2)
    assert os.listdir(tmp_path) == ["teacher.keras"]


def test_bad_arguments_are_refused_before_any_worker_starts(search, tmp_path):
    with pytest.raises(ValueError, match="3 specs but 4 indices"):
        child_workers.train_children_in_workers(CHILDREN[:3], INDICES, search, CONFIG, batch_size=64, seed=0)
    with pytest.raises(ValueError, match="teacher"):
        child_workers.train_children_in_workers(CHILDREN, INDICES, search,
                                                child_training.ProxyConfig(epochs=1, distill=True),
                                                batch_size=64, seed=0)
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        in_workers(search, tmp_path, teacher_path=str(tmp_path / "missing.keras"))
    with pytest.raises(ValueError, match="groups_per_worker"):
        in_workers(search, tmp_path, groups_per_worker=0)
    with pytest.raises(TypeError, match="SearchSplits"):
        child_workers.train_children_in_workers(CHILDREN, INDICES, data.load(DATA), CONFIG, batch_size=64, seed=0)
    with pytest.raises(ValueError, match="max_retries"):
        in_workers(search, tmp_path, max_retries=-1)
    assert os.listdir(tmp_path) == []  # refused before the arrays are written


def test_worker_setup_shares_the_arrays_and_defaults_to_this_process_settings(search, tmp_path):
    # pylint: disable=protected-access
    child_workers._save_arrays(search, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["x_train.npy", "x_val.npy", "y_train.npy", "y_val.npy"]
    np.testing.assert_array_equal(np.load(tmp_path / "x_val.npy", mmap_mode="r"), search.x_val)
    setup = child_workers._worker_setup(str(tmp_path), search.info, "teacher.keras", None, None, None)
    assert setup.intra_op_threads == tf.config.threading.get_intra_op_parallelism_threads()
    assert setup.inter_op_threads == tf.config.threading.get_inter_op_parallelism_threads()
    assert setup.precision_policy == keras.mixed_precision.global_policy().name
    assert setup.teacher_path == os.path.abspath("teacher.keras") and setup.array_dir == str(tmp_path)
    given = child_workers._worker_setup(str(tmp_path), search.info, None, 1, 2, "mixed_float16")
    assert (given.intra_op_threads, given.inter_op_threads, given.precision_policy, given.teacher_path) == (
        1, 2, "mixed_float16", None)


@pytest.mark.slow  # several worker starts; .ci/run runs it
def test_a_script_without_a_main_guard_gets_a_clear_error(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from acompress import child_training, child_workers, data\n"
        "from tests import test_child_workers as t\n"
        "search = data.load(t.DATA).for_search()\n"
        "child_workers.train_children_in_workers(t.CHILDREN[:1], t.INDICES[:1], search, t.CONFIG, batch_size=64,\n"
        f"                                        seed=0, work_dir={str(tmp_path)!r})\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": root}, cwd=root)
    assert result.returncode != 0
    assert "WorkerStartError" in result.stderr and 'if __name__ == "__main__":' in result.stderr, result.stderr[-3000:]
