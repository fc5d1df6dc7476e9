"""Distribution strategies: TF_CONFIG checks, two workers training one model, children and fits on two replicas.

Tests marked slow here run in .ci/run's last step (with the fault suite's SIGKILL cases), not in
the default run, which must stay under 15 minutes on 2 cores.

The two-worker tests start two processes of a binary on 127.0.0.1 (CPU) with a TF_CONFIG
each, the way a cluster runs them, and check that they trained one model together: the
same trainable weights at the end although each worker saw its own half of every batch.
The two-replica tests run in a subprocess that splits the CPU into two logical devices
(TensorFlow must be told before it starts), so MirroredStrategy has two replicas.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from acompress import distribution
from acompress import embedding as embedding_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(REPO_ROOT, "testdata", "digits_corpus")
SMOKE = "--flagfile=" + os.path.join(REPO_ROOT, "flags", "smoke.flags")
TIMEOUT = 420


# -- TF_CONFIG and strategy selection ------------------------------------------------------

def tf_config(workers, index, kind="worker", chief=None):
    cluster = {"worker": workers}
    if chief:
        cluster["chief"] = chief
    return json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})


@pytest.mark.parametrize("raw, message", [
    (None, "needs TF_CONFIG"),
    ("{not json", "not JSON"),
    ("[1, 2]", "JSON object"),
    (json.dumps({"task": {"type": "worker", "index": 0}}), "no cluster"),
    (json.dumps({"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}), "host:port"),
    (json.dumps({"cluster": {"worker": ["a:1"]}}), "no task"),
    (json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}), "not in the cluster"),
    (json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}), "out of range"),
    (json.dumps({"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}),
     "'chief' and 'worker' tasks only"),
])
def test_bad_tf_config_is_a_clear_error(raw, message):
    environ = {} if raw is None else {"TF_CONFIG": raw}
    with pytest.raises(distribution.DistributionError, match=message):
        distribution.parse_tf_config(environ)


def test_good_tf_config_parses():
    parsed = distribution.parse_tf_config({"TF_CONFIG": tf_config(["a:1", "b:2"], 1)})
    assert parsed["task"] == {"type": "worker", "index": 1}


def test_unknown_strategy_is_refused():
    with pytest.raises(distribution.DistributionError, match="unknown strategy 'tpu'"):
        distribution.make_strategy("tpu")


def test_default_strategy_leaves_the_stored_runtime_config_as_before():
    # Run directories made before --strategy existed must still resume (config.json is compared).
    from acompress.flags import runtime_flags
    values = type("Flags", (), {"seed": 0, "output_dir": "/runs/x", "precision": "auto", "intra_op_threads": 0,
                                "inter_op_threads": 0, "strategy": "default"})()
    assert set(runtime_flags.runtime_from_flags(values)) == {"seed", "output_dir", "precision", "intra_op_threads",
                                                            "inter_op_threads"}
    values.strategy = "mirrored"
    assert runtime_flags.runtime_from_flags(values, None)["strategy"]["name"] == "mirrored"


def test_only_errors_a_worker_can_survive_are_isolated():
    import tensorflow as tf
    op_error = tf.errors.InternalError(None, None, "collective failed")
    assert distribution.isolatable(ValueError("bad spec"), None)
    assert distribution.isolatable(op_error, None)  # one device: recorded as a failed network
    assert not distribution.isolatable(distribution.WorkerMismatchError("x"), None)


def test_default_strategy_changes_nothing():
    assert distribution.make_strategy("default") is None
    assert distribution.replicas(None) == 1
    assert distribution.is_chief(None)
    assert distribution.output_dir_for("/runs/x", None) == "/runs/x"
    assert distribution.describe(None, "default") == {"name": "default", "replicas": 1}
    distribution.agree(None, "anything")  # a no-op outside a multi-worker run
    with distribution.scope(None):
        pass


def test_mirrored_strategy_on_a_cpu_machine_has_one_replica():
    strategy = distribution.make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 1
    assert distribution.is_chief(strategy)
    assert distribution.describe(strategy, "mirrored") == {"name": "mirrored", "replicas": 1}


# -- two replicas in one process -------------------------------------------------------------

TWO_REPLICAS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from acompress import archspec, child_training, data, distribution, finalists, keras_builder, training
    search = data.load(data.DataConfig()).for_search()
    children = [archspec.ArchSpec([archspec.conv_bn_act(16), archspec.maxpool(), archspec.conv_bn_act(32),
                                   archspec.gap()]),
                archspec.ArchSpec([archspec.conv_bn_act(16), archspec.maxpool(), archspec.flatten(),
                                   archspec.dense(64), archspec.act()])]
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out = {"replicas": mirrored.num_replicas_in_sync}
    for name, strategy in (("one", None), ("two", mirrored)):
        results = child_training.train_children(children, [0, 1], search, child_training.ProxyConfig(),
                                                batch_size=64, seed=0, strategy=strategy)
        out[name + "_children"] = [[r.status, r.val_accuracy] for r in results]
        train, validation = data.search_datasets(search, data.DataConfig())
        _, summary = finalists.train_spec(children[0], train, validation, search.info,
                                          finalists.FinalistConfig(train=training.TrainConfig(epochs=3)),
                                          seed=1, strategy=strategy)
        out[name + "_fit"] = summary["val_accuracy"]
        # One epoch of plain SGD with distillation, on batches in a fixed order (a strategy
        # rewrites the input pipeline, so a shuffle would draw another order): gradients are
        # linear in the loss, so a replica-scaling mistake in any loss term shows in the weights.
        keras.utils.set_random_seed(0)
        teacher = keras_builder.build_model(children[1], search.info.input_shape, search.info.num_classes)
        train = data.make_dataset(search.x_train, search.y_train, batch_size=64, training=False)
        recipe = finalists.FinalistConfig(train=training.TrainConfig(epochs=1, optimizer="sgd", learning_rate=0.05),
                                          distill=True)
        model, _ = finalists.train_spec(children[0], train, None, search.info, recipe, seed=1,
                                        teacher_model=teacher, strategy=strategy)
        out[name + "_sgd"] = [w.tolist() for w in model.get_weights()]
    # Loss scaling: replica 1's gradients overflow, replica 0's do not: both must skip the step.
    keras.mixed_precision.set_global_policy("mixed_float16")
    with mirrored.scope():
        variable = keras.Variable(np.zeros(3, np.float32))
        optimizer = distribution.ReplicaSafeLossScaleOptimizer(keras.optimizers.SGD(0.1))
        optimizer.build([variable])
    def step():
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        gradient = tf.where(replica > 0, tf.fill([3], float("inf")), tf.ones([3]))
        optimizer.apply([gradient], [variable])
    scale = float(optimizer.dynamic_scale.numpy())
    tf.function(lambda: mirrored.run(step))()
    out["lso"] = {"weights": variable.numpy().tolist(), "scale_before": scale,
                  "scale_after": float(optimizer.dynamic_scale.numpy())}
    keras.mixed_precision.set_global_policy("float32")
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def two_replicas():
    result = subprocess.run([sys.executable, "-c", TWO_REPLICAS], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=TIMEOUT, env={**os.environ, "PYTHONPATH": REPO_ROOT})
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.slow  # with the fault suite's SIGKILL cases, .ci/run runs it after the default suite
def test_children_train_on_two_replicas_like_on_one(two_replicas):
    assert two_replicas["replicas"] == 2
    one, two = two_replicas["one_children"], two_replicas["two_children"]
    assert [status for status, _ in two] == ["ok", "ok"]
    for (_, accuracy_one), (_, accuracy_two) in zip(one, two):
        # The same global batches and gradient (Adam hides a gradient scale: see the SGD test).
        assert accuracy_two > 0.5
        assert abs(accuracy_two - accuracy_one) < 0.08


@pytest.mark.slow  # with the fault suite's SIGKILL cases, .ci/run runs it after the default suite
def test_keras_fit_trains_on_two_replicas_like_on_one(two_replicas):
    assert two_replicas["two_fit"] > 0.5
    assert abs(two_replicas["two_fit"] - two_replicas["one_fit"]) < 0.08


@pytest.mark.slow  # with the fault suite's SIGKILL cases, .ci/run runs it after the default suite
def test_distilled_sgd_epoch_on_two_replicas_equals_one_device(two_replicas):
    # Synchronised batch norm, the global batch split in two, gradients summed: the same weights
    # as on one device up to floating-point order (a term scaled twice would be far off).
    one, two = two_replicas["one_sgd"], two_replicas["two_sgd"]
    assert len(one) == len(two) > 0
    for a, b in zip(one, two):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-3, atol=2e-4)


@pytest.mark.slow  # with the fault suite's SIGKILL cases, .ci/run runs it after the default suite
def test_an_overflow_on_any_replica_skips_the_step_on_all(two_replicas):
    lso = two_replicas["lso"]
    assert lso["weights"] == [0.0, 0.0, 0.0]  # not applied (Keras' own would apply replica 0's verdict)
    assert lso["scale_after"] == lso["scale_before"] / 2


# -- two workers, separate processes ---------------------------------------------------------

def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_workers(binary, args, count=2, per_worker=None):
    """Runs `count` workers of `binary` with one TF_CONFIG cluster; returns (exit code, stdout, stderr) each.

    `per_worker[i]`: extra arguments of worker i.
    """
    workers = [f"127.0.0.1:{port}" for port in free_ports(count)]
    processes = []
    for index in range(count):
        env = {**os.environ, "TF_CONFIG": tf_config(workers, index), "PYTHONPATH": REPO_ROOT,
               "CUDA_VISIBLE_DEVICES": ""}
        extra = per_worker[index] if per_worker else []
        processes.append(subprocess.Popen([sys.executable, "-m", f"binaries.{binary}", *args, *extra,
                                           "--strategy=multi_worker"], cwd=REPO_ROOT, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=TIMEOUT)
            outputs.append((process.returncode, stdout, stderr))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return outputs


def trainable_weights(model):
    return [np.asarray(v) for v in model.trainable_weights]


@pytest.fixture(scope="module")
def two_worker_embedding(tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp("mw") / "run")
    args = [SMOKE, f"--corpus_dir={CORPUS}", f"--output_dir={output_dir}", "--embedding_epochs=3",
            "--unlabeled_architectures=64", "--embedding_batch_size=32"]
    return output_dir, run_workers("train_embedding", args)


@pytest.mark.slow
def test_two_workers_train_one_embedding_together(two_worker_embedding):
    output_dir, outputs = two_worker_embedding
    for code, _, stderr in outputs:
        assert code == 0, stderr[-3000:]
    chief_dir = os.path.join(output_dir, "embedding")
    worker_dir = os.path.join(output_dir + distribution.WORKERS_SUFFIX, "worker_1", "embedding")
    chief = embedding_lib.Embedding.load(chief_dir)
    worker = embedding_lib.Embedding.load(worker_dir)
    chief_weights, worker_weights = trainable_weights(chief.model), trainable_weights(worker.model)
    assert len(chief_weights) == len(worker_weights) > 0
    # All-reduced gradients: the two workers hold one model, although each saw half of every batch.
    for a, b in zip(chief_weights, worker_weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    config = json.load(open(os.path.join(chief_dir, "config.json")))
    assert config["runtime"]["strategy"] == {"name": "multi_worker", "replicas": 2, "chief": True,
                                             "task": {"type": "worker", "index": 0}}
    worker_config = json.load(open(os.path.join(worker_dir, "config.json")))
    assert worker_config["runtime"]["strategy"]["chief"] is False
    metrics = json.load(open(os.path.join(chief_dir, "metrics.json")))
    assert metrics["replicas"] == 2 and metrics["epochs_run"] == 3


@pytest.mark.slow  # with the fault suite's SIGKILL cases, .ci/run runs it after the default suite
def test_two_workers_train_teacher_and_children_together(tmp_path):
    output_dir = str(tmp_path / "run")
    outputs = run_workers("generate_corpus", [SMOKE, f"--output_dir={output_dir}", "--num_children=4",
                                              "--replicate_fraction=0", "--teacher_epochs=1"])
    for code, _, stderr in outputs:
        assert code == 0, stderr[-3000:]
    import keras
    worker_dir = output_dir + distribution.WORKERS_SUFFIX + "/worker_1"
    teachers = [keras.saving.load_model(os.path.join(d, "teacher", "teacher.keras"), safe_mode=True)
                for d in (output_dir, worker_dir)]
    for a, b in zip(trainable_weights(teachers[0]), trainable_weights(teachers[1])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    summaries = [json.load(open(os.path.join(d, "corpus_summary.json"))) for d in (output_dir, worker_dir)]
    assert summaries[0]["num_records"] == summaries[1]["num_records"] == 4
    assert summaries[0]["counts"] == summaries[1]["counts"]
    # Synchronised batch norm: the same moving statistics on both workers, so the same scores.
    for key in ("min", "median", "max"):
        assert summaries[0]["val_accuracy"][key] == pytest.approx(summaries[1]["val_accuracy"][key], abs=1e-6)


@pytest.mark.slow
def test_workers_about_to_train_different_things_stop_together(tmp_path):
    # Two workers whose runs differ (here: their seeds, as when their directories are at different
    # stages) must not wait on each other forever: both stop with the same one-line error.
    args = [SMOKE, f"--corpus_dir={CORPUS}", f"--output_dir={tmp_path / 'run'}", "--embedding_epochs=1",
            "--unlabeled_architectures=0"]
    outputs = run_workers("train_embedding", args, per_worker=[["--seed=0"], ["--seed=1"]])
    for code, _, stderr in outputs:
        assert code == 2, stderr[-3000:]
        assert stderr.strip().splitlines()[-1].startswith("error: the workers disagree about the next training")
        assert "Traceback" not in stderr


@pytest.mark.slow
def test_multi_worker_without_tf_config_is_a_one_line_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    result = subprocess.run([sys.executable, "-m", "binaries.train_embedding", f"--corpus_dir={CORPUS}",
                             f"--output_dir={tmp_path / 'run'}", "--strategy=multi_worker"], cwd=REPO_ROOT,
                            env={**env, "PYTHONPATH": REPO_ROOT}, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --strategy=multi_worker needs TF_CONFIG")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_tune_baseline_refuses_multi_worker(tmp_path):
    result = subprocess.run([sys.executable, "-m", "binaries.tune_baseline", SMOKE, f"--output_dir={tmp_path / 'x'}",
                             "--strategy=multi_worker"], cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": REPO_ROOT},
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2
    assert "Keras Tuner's distributed mode" in result.stderr


@pytest.mark.slow
def test_two_workers_run_the_whole_pipeline_together(tmp_path):
    # Teacher, corpus, embedding, search, refinement, finalists and export on two workers: every
    # decision (candidates, refinement picks, finalists, the choice) is the same on both, so they
    # never wait on each other, and both report the same network. ~5 min alone on 2 cores.
    output_dir = str(tmp_path / "run")
    outputs = run_workers("pipeline", [SMOKE, f"--output_dir={output_dir}", "--finalist_init=scratch",
                                       "--embedding_epochs=5",
                                       "--unlabeled_architectures=64", "--refine_children=4", "--refine_epochs=3",
                                       "--finalist_epochs=2", "--num_finalists=2"])
    for code, _, stderr in outputs:
        assert code == 0, stderr[-3000:]
    worker_dir = output_dir + distribution.WORKERS_SUFFIX + "/worker_1"
    reports = [json.load(open(os.path.join(d, "compressed", "report.json"))) for d in (output_dir, worker_dir)]
    for key in ("params", "test_accuracy", "val_accuracy"):
        assert reports[0]["chosen"][key] == pytest.approx(reports[1]["chosen"][key], abs=1e-6)
    assert [f["spec_hash"] for f in reports[0]["finalists"]] == [f["spec_hash"] for f in reports[1]["finalists"]]
