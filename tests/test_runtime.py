"""Precision policy, output directories and progress reporting."""

import io
import json

import keras
import pytest

from acompress import precision
from acompress import progress
from acompress import rundir


def test_precision_auto_picks_by_device():
    assert precision.resolve("auto", gpus=[]) == "float32"
    assert precision.resolve("auto", gpus=["/physical_device:GPU:0"]) == "mixed_float16"
    assert precision.resolve("mixed_bfloat16", gpus=["gpu"]) == "mixed_bfloat16"
    import tensorflow as tf
    expected = "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    assert precision.resolve("auto") == expected  # by the devices of the machine the tests run on
    with pytest.raises(ValueError, match="unknown precision policy 'half'"):
        precision.resolve("half")


def test_precision_apply_sets_global_policy():
    try:
        assert precision.apply("mixed_bfloat16") == "mixed_bfloat16"
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_rundir_refuses_silent_overwrite(tmp_path):
    out = str(tmp_path / "run")
    rundir.prepare(out, {"seed": 0})
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == {"seed": 0}
    (tmp_path / "run" / "model.keras").write_text("x")
    with pytest.raises(rundir.OutputExistsError, match="already holds results.*--overwrite"):
        rundir.prepare(out, {"seed": 0})
    rundir.prepare(out, {"seed": 0}, resume=True)  # same config: resumable
    assert (tmp_path / "run" / "model.keras").exists()
    with pytest.raises(rundir.OutputExistsError, match="differs in: seed"):
        rundir.prepare(out, {"seed": 1}, resume=True)
    rundir.prepare(out, {"seed": 1}, overwrite=True)
    assert not (tmp_path / "run" / "model.keras").exists()
    with pytest.raises(ValueError, match="--output_dir"):
        rundir.prepare("", {})


def test_json_is_sorted_and_handles_numpy(tmp_path):
    import numpy as np
    path = str(tmp_path / "x.json")
    rundir.write_json(path, {"b": np.float32(0.5), "a": np.arange(2), "c": {2, 1}})
    text = (tmp_path / "x.json").read_text()
    assert text.index('"a"') < text.index('"b"') < text.index('"c"')
    assert rundir.read_json(path) == {"a": [0, 1], "b": 0.5, "c": [1, 2]}


def test_progress_reports_rate_and_eta():
    stream = io.StringIO()
    bar = progress.Progress(total=4, label="children", unit="children", stream=stream)
    bar.update(2)
    line = bar.line()
    assert "2/4" in line and "children/min" in line and "ETA" in line
    assert bar.eta_seconds() is not None and bar.eta_seconds() >= 0
    bar.update(2)
    assert bar.eta_seconds() == 0
    assert progress.format_seconds(3725) == "1:02:05" and progress.format_seconds(65) == "01:05"


def test_cpu_threads_reject_bad_counts_and_late_changes():
    import tensorflow as tf
    from acompress import cpu_threads
    with pytest.raises(ValueError, match="must be >= 0"):
        cpu_threads.configure(-1, 0)
    cpu_threads.configure(0, 0)  # keeps the defaults: always allowed
    tf.constant(1.0) + 1.0  # TensorFlow has started its pools
    current = tf.config.threading.get_intra_op_parallelism_threads()
    with pytest.raises(ValueError, match="after it has started"):
        cpu_threads.configure(current + 3, 0)


def test_relative_and_absolute_paths_are_one_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert rundir.normalize("runs/x") == str(tmp_path / "runs" / "x")
    assert rundir.normalize("gs://bucket/runs/x") == "gs://bucket/runs/x"
    rundir.prepare(rundir.normalize("runs/x"), {"output_dir": rundir.normalize("runs/x")})
    (tmp_path / "runs" / "x" / "result").write_text("x")
    absolute = rundir.normalize(str(tmp_path / "runs" / "x"))
    rundir.prepare(absolute, {"output_dir": absolute}, resume=True)  # the same run: resumable


def test_stored_runtime_config_leaves_out_overwrite():
    import types
    from acompress.flags import runtime_flags
    values = types.SimpleNamespace(seed=0, output_dir="runs/x", overwrite=True, precision="auto",
                                   intra_op_threads=1, inter_op_threads=2, strategy="default")
    stored = runtime_flags.runtime_from_flags(values)
    assert "overwrite" not in stored  # a killed --overwrite run resumes without the flag
    assert stored["seed"] == 0 and stored["output_dir"] == rundir.normalize("runs/x")
