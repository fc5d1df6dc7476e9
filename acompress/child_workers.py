"""Training children in short-lived worker processes, so memory stays bounded.

Why: `child_training.train_children` traces a new `tf.function` for every packed
group, and TensorFlow never gives a traced function's memory back
(tensorflow#62854): measured on digits with packs of 8, a process holds ~1.0 GB
after the first group and grows ~190 MB per group (2.0 GB after six).
`keras.backend.clear_session()` and `gc.collect()` do not help (measured). A
2,000-child corpus (250 groups) in one process would need ~50 GB. Here every
group trains in a worker process started with the ``spawn`` method, and a worker
is replaced after `groups_per_worker` groups, so a worker's memory is bounded by
what that many groups leak, whatever the corpus size.

What a restart costs: the old worker's exit (~1.5 s), then spawning the new one,
importing TensorFlow and Keras and loading the search arrays (memory-mapped from
``.npy`` files the parent writes once) and the teacher (~4 s). Measured on 2 CPU
cores with digits, where a group of 8 children trains in ~6.5 s per proxy epoch: 6
groups of 8 in-process peaked at 2.0 GB and took 45 s; in workers with
``groups_per_worker=2`` the parent stayed at 0.63 GB (TensorFlow's import), each
worker peaked at 1.24 GB, and the run took 60 s. With the default
``groups_per_worker=8`` a worker peaks near 0.6 GB + 0.2-0.3 GB per group, and the
restarts cost ~10% of a 1-epoch proxy's time (less for longer proxies).

Determinism: a group's result depends only on its specs, corpus indices, seed and
replicate (see `child_training`: batch order and augmentation are pure functions
of the seed and epoch, initialisations of the per-child seed), never on what the
process trained before. Groups are formed exactly as `train_children` forms them
(consecutive runs of ``config.pack`` children), so with the same thread settings
and dtype policy the results equal those of in-process `train_children`.

A worker that dies (a segfault, SIGKILL, the OOM killer) never loses children
silently: the group it held is retried in a fresh worker up to `max_retries` times;
if it dies every time, its children are retried one at a time, and a child that
still kills its worker on its own is recorded ``failed`` with the reason (so one
child too large for memory does not take its group with it); the remaining groups
go on in a fresh worker. A first worker that dies with exit code 1 before training
anything (spawn's bootstrap failed: typically a script without an
``if __name__ == "__main__":`` guard) raises `WorkerStartError`. A Python exception raised in
a worker propagates to the caller (`train_children` already records a child that
cannot be built or trained as failed, without raising).

Workers are started with ``spawn``, which imports the caller's main module in
each worker: a script that calls this must keep its work under
``if __name__ == "__main__":`` (absl's ``app.run`` binaries do).

Test hook: ``ACOMPRESS_TEST_KILL_CHILD=<corpus index>`` makes a worker SIGKILL
itself when it receives the group holding that child; with
``ACOMPRESS_TEST_KILL_ONCE=<path>`` as well it does so only while `path` does not
exist (it creates the file first), so the retry succeeds.
"""

import concurrent.futures
import dataclasses
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from typing import Callable, List, NamedTuple, Optional, Sequence

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from acompress import archspec
from acompress import child_training
from acompress import data

KILL_CHILD_ENV = "ACOMPRESS_TEST_KILL_CHILD"
KILL_ONCE_ENV = "ACOMPRESS_TEST_KILL_ONCE"
_ARRAYS = ("x_train", "y_train", "x_val", "y_val")


class _GroupOutcome(NamedTuple):
    """What a worker sends back for one group."""

    pid: int
    results: List[child_training.ChildResult]


@dataclasses.dataclass(frozen=True)
class _WorkerSetup:
    """What every worker loads once, in its initializer."""

    array_dir: str
    info: data.DatasetInfo
    teacher_path: Optional[str]
    intra_op_threads: int
    inter_op_threads: int
    precision_policy: str


def train_children_in_workers(specs: Sequence[archspec.ArchSpec], indices: Sequence[int],
                              search: data.SearchSplits, config: child_training.ProxyConfig, *,
                              batch_size: int, seed: int, replicate: int = 0,
                              teacher_path: Optional[str] = None,
                              on_result: Optional[Callable[[List[child_training.ChildResult]], None]] = None,
                              groups_per_worker: int = 8,
                              intra_op_threads: Optional[int] = None, inter_op_threads: Optional[int] = None,
                              precision_policy: Optional[str] = None, max_retries: int = 1,
                              work_dir: Optional[str] = None,
                              on_worker: Optional[Callable[[int, List[int]], None]] = None
                              ) -> List[child_training.ChildResult]:
    """`child_training.train_children`, each packed group in a worker process; same contract.

    Returns one ChildResult per spec, in order; `on_result` is called in this process
    with each group's results, in order, as the group finishes. One worker trains at a
    time (a group already uses the machine's cores).

    Args:
      specs, indices, search, config, batch_size, seed, replicate, on_result: as for
        `child_training.train_children`.
      teacher_path: the trained teacher as a ``.keras`` file, required when `config.distill` or
        `config.init` is "inherit".
      groups_per_worker: groups a worker trains before it is replaced (bounds its memory).
      intra_op_threads, inter_op_threads: the workers' TensorFlow thread pools (see
        `cpu_threads`; 0 is TensorFlow's default). None: this process's settings.
      precision_policy: the workers' Keras dtype policy. None: this process's global policy.
      max_retries: times a group whose worker died is retried in a fresh worker.
      work_dir: where the temporary copy of the search arrays goes (None: the system's
        temporary directory); removed at the end.
      on_worker: called with (worker pid, the group's corpus indices) for each group a
        worker trained (monitoring; tests use it to see the restarts).

    Raises:
      ValueError, TypeError: as `train_children` does for bad arguments, or a bad
        `groups_per_worker` / `max_retries`.
      FileNotFoundError: `teacher_path` does not exist.
      Any exception a worker raised while setting up or training a group.
    """
    _check_arguments(specs, indices, search, config, teacher_path, groups_per_worker, max_retries)
    array_dir = tempfile.mkdtemp(prefix="child_workers_", dir=work_dir)
    workers = None
    try:
        _save_arrays(search, array_dir)
        setup = _worker_setup(array_dir, search.info, teacher_path, intra_op_threads, inter_op_threads,
                              precision_policy)
        workers = _Workers(setup, (config, batch_size, seed, replicate), groups_per_worker, max_retries, on_worker)
        results = _train_groups(workers, specs, indices, config.pack, on_result)
        workers.close()
        return results
    finally:
        if workers is not None:
            workers.close(kill=True)  # leaving on an exception: do not wait for a group nobody will read
        shutil.rmtree(array_dir, ignore_errors=True)


def _check_arguments(specs, indices, search, config: child_training.ProxyConfig, teacher_path: Optional[str],
                     groups_per_worker: int, max_retries: int) -> None:
    """Raises what `train_children_in_workers` documents for bad arguments, before any worker starts."""
    if len(specs) != len(indices):
        raise ValueError(f"{len(specs)} specs but {len(indices)} indices")
    if not isinstance(search, data.SearchSplits):
        raise TypeError(f"train_children_in_workers takes data.SearchSplits (Splits.for_search()), "
                        f"got {type(search).__name__}")
    if config.needs_teacher and teacher_path is None:
        raise ValueError("distillation and init='inherit' need the trained teacher (teacher_path)")
    if teacher_path is not None and not os.path.exists(teacher_path):
        raise FileNotFoundError(f"no Keras model at {teacher_path!r}: the file does not exist")
    if groups_per_worker < 1:
        raise ValueError(f"groups_per_worker must be >= 1, got {groups_per_worker}")
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")


def _save_arrays(search: data.SearchSplits, array_dir: str) -> None:
    """Writes the search arrays to ``<array_dir>/<name>.npy``, once, for every worker to memory-map."""
    for name in _ARRAYS:
        np.save(os.path.join(array_dir, f"{name}.npy"), np.asarray(getattr(search, name)))


def _worker_setup(array_dir: str, info: data.DatasetInfo, teacher_path: Optional[str],
                  intra_op_threads: Optional[int], inter_op_threads: Optional[int],
                  precision_policy: Optional[str]) -> _WorkerSetup:
    """What workers load; thread pools and dtype policy left None are this process's."""
    if intra_op_threads is None:
        intra_op_threads = tf.config.threading.get_intra_op_parallelism_threads()
    if inter_op_threads is None:
        inter_op_threads = tf.config.threading.get_inter_op_parallelism_threads()
    if precision_policy is None:
        precision_policy = keras.mixed_precision.global_policy().name
    return _WorkerSetup(array_dir, info, None if teacher_path is None else os.path.abspath(teacher_path),
                        int(intra_op_threads), int(inter_op_threads), precision_policy)


def _train_groups(workers: "_Workers", specs: Sequence[archspec.ArchSpec], indices: Sequence[int], pack: int,
                  on_result: Optional[Callable[[List[child_training.ChildResult]], None]]
                  ) -> List[child_training.ChildResult]:
    """Trains `specs` in groups of `pack` consecutive children (as `train_children` groups them), one group
    at a time; `on_result` gets each group's results as it finishes."""
    results = []
    for start in range(0, len(specs), pack):
        stop = min(start + pack, len(specs))
        group_results = workers.train(list(specs[start:stop]), [int(i) for i in indices[start:stop]])
        results.extend(group_results)
        if on_result is not None:
            on_result(group_results)
    return results


class WorkerStartError(RuntimeError):
    """A worker process died before it was ready (e.g. a script without ``if __name__ == "__main__":``)."""


class _Workers:
    """One worker process at a time, replaced after `groups_per_worker` groups: the old one exits (and
    frees its memory) before the next starts, and none is started that would have nothing to train."""

    def __init__(self, setup: _WorkerSetup, task_args: tuple, groups_per_worker: int, max_retries: int,
                 on_worker: Optional[Callable[[int, List[int]], None]]):
        self.setup, self.task_args = setup, task_args
        self.groups_per_worker, self.max_retries, self.on_worker = groups_per_worker, max_retries, on_worker
        self.pool: Optional[concurrent.futures.ProcessPoolExecutor] = None
        self.groups_in_pool = 0
        self.trained_any = False

    def train(self, specs: List[archspec.ArchSpec], indices: List[int]) -> List[child_training.ChildResult]:
        """The group's results. A worker that dies is replaced and the group retried `max_retries` times; then
        a group of several children is retried one child at a time, and a child that still kills its worker
        on its own is recorded failed (it is that child, not the machine: e.g. too large for memory)."""
        for attempt in range(self.max_retries + 1):
            exit_code, outcome = self._submit(specs, indices)
            if outcome is not None:
                return outcome.results
            if not self.trained_any and exit_code == 1:  # spawn's bootstrap failed, not a kill or a crash
                raise WorkerStartError(
                    f"the first worker process died (exit code {exit_code}) before training anything; a script "
                    "that trains children in worker processes must keep its work under "
                    "`if __name__ == \"__main__\":` (workers are started with 'spawn')")
            logging.warning("worker process died (exit code %s) while training children %s%s", exit_code, indices,
                            f"; retrying in a fresh worker ({attempt + 1} of {self.max_retries})"
                            if attempt < self.max_retries else "")
        if len(specs) > 1:
            logging.warning("training children %s one at a time to find the one that kills its worker", indices)
            return [result for spec, index in zip(specs, indices) for result in self.train([spec], [index])]
        reason = (f"worker process died (exit code {exit_code}) while training this child alone; "
                  f"retried {self.max_retries} time(s)")
        logging.error("child %s failed: %s", indices[0], reason)
        _, _, seed, replicate = self.task_args
        return [child_training.ChildResult(indices[0], specs[0], child_training.child_seed(seed, indices[0], replicate),
                                           float("nan"), 0, 0.0, child_training.FAILED, reason)]

    def _submit(self, specs, indices):
        """(None, outcome) when the worker trained the group; (exit code, None) when it died."""
        if self.pool is None:
            self.pool, self.groups_in_pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                initargs=(self.setup,)), 0
        future = self.pool.submit(_train_group, specs, indices, *self.task_args)
        try:
            outcome = future.result()
        except concurrent.futures.process.BrokenProcessPool:
            exit_code = _shut_down_broken(self.pool)
            self.pool = None
            return exit_code, None
        self.trained_any = True
        logging.info("worker %d trained children %s", outcome.pid, indices)
        if self.on_worker is not None:
            self.on_worker(outcome.pid, indices)
        self.groups_in_pool += 1
        if self.groups_in_pool == self.groups_per_worker:
            self.close()
        return None, outcome

    def close(self, kill: bool = False) -> None:
        if self.pool is None:
            return
        if kill:
            _kill_workers(self.pool)
        self.pool.shutdown(wait=True, cancel_futures=kill)
        self.pool = None


def _shut_down_broken(pool: concurrent.futures.ProcessPoolExecutor):
    """Shuts a broken pool down; returns the dead worker's exit code (None if unknown)."""
    processes = getattr(pool, "_processes", None) or {}  # shutdown() drops the executor's reference
    pool.shutdown(wait=True)  # joins the workers, so their exit codes are final
    codes = [p.exitcode for p in list(processes.values())]
    return next((code for code in codes if code not in (None, 0)), next((c for c in codes if c is not None), None))


def _kill_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.kill()


# -- in the worker ----------------------------------------------------------------------

_search: Optional[data.SearchSplits] = None
_teacher: Optional[keras.Model] = None
_setup_error: Optional[BaseException] = None


def _init_worker(setup: _WorkerSetup) -> None:
    """Sets the thread pools (before any TensorFlow op) and the dtype policy; loads the data and teacher.

    An error is kept and raised by the first task, so it reaches the caller as an
    exception rather than as a dead worker.
    """
    global _search, _teacher, _setup_error  # pylint: disable=global-statement
    try:
        start = time.perf_counter()
        from acompress import cpu_threads  # pylint: disable=import-outside-toplevel
        from acompress import keras_parser  # pylint: disable=import-outside-toplevel
        cpu_threads.configure(setup.intra_op_threads, setup.inter_op_threads)
        keras.mixed_precision.set_global_policy(setup.precision_policy)
        arrays = {name: np.load(os.path.join(setup.array_dir, f"{name}.npy"), mmap_mode="r") for name in _ARRAYS}
        _search = data.SearchSplits(info=setup.info, **arrays)
        if setup.teacher_path is not None:
            _teacher = keras_parser.load_keras_model(setup.teacher_path)
        logging.info("worker %d ready in %.1fs", os.getpid(), time.perf_counter() - start)
    except Exception as error:  # noqa: BLE001 - re-raised by the task
        _setup_error = error


def _train_group(specs, indices, config, batch_size, seed, replicate) -> _GroupOutcome:
    if _setup_error is not None:
        raise _setup_error
    _test_kill_hook(indices)
    results = child_training.train_children(specs, indices, _search, config, batch_size=batch_size, seed=seed,
                                            replicate=replicate, teacher=_teacher)
    return _GroupOutcome(os.getpid(), results)


def _test_kill_hook(indices) -> None:
    """Test hook (see the module docstring): SIGKILLs this worker for the group of a chosen child."""
    target = os.environ.get(KILL_CHILD_ENV)
    if target is None or int(target) not in indices:
        return
    marker = os.environ.get(KILL_ONCE_ENV)
    if marker:
        if os.path.exists(marker):
            return
        open(marker, "w", encoding="utf-8").close()
    os.kill(os.getpid(), signal.SIGKILL)
