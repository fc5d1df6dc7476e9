"""Faults and bad input, met through the binaries as a user meets them (`python -m binaries.<name>`).

Every case ends either in one clear line `error: ...` on stderr with exit status 2 and no
traceback (a user mistake), or in a correct run / resume. Cases already asserted through a
binary elsewhere are not repeated here: tests/test_binaries.py (generate_corpus: unknown flag,
--proxy_epochs=0, unknown zoo name, spec without a kernel, missing .keras teacher, bad shard index,
another seed on a finished run, --overwrite, SIGKILL during corpus generation), tests/test_comparison.py
(compare refuses an output directory that holds a comparison), tests/test_baselines.py
(tune_baseline: zero budget, missing --teacher_dir) and tests/test_pipeline.py (compress: unreachable
target, no embedding, refusing the pipeline's results).

Most cases reuse the committed corpus testdata/digits_corpus (copied, never changed in place): it was
made with flags/smoke.flags and --num_children=48, so it is "the same data and teacher" for those flags.
The SIGKILL tests of the pipeline are marked slow (run them with -m slow; .ci/run does).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from acompress import corpus
from acompress import corpus_generation
from tests.test_binaries import REPO_ROOT
from tests.test_binaries import SMOKE
from tests.test_binaries import assert_one_line_error
from tests.test_binaries import describe
from tests.test_binaries import part_files
from tests.test_binaries import read_json
from tests.test_binaries import run_binary
from tests.test_binaries import batched_refusals

TESTDATA_CORPUS = os.path.join(REPO_ROOT, "testdata", "digits_corpus")
TESTDATA_CHILDREN = 48  # testdata/digits_corpus holds children of flags/smoke.flags with --num_children=48
TESTDATA_TRAININGS = TESTDATA_CHILDREN + 12  # and 12 replicates (--replicate_fraction=0.25)
# A few epochs of a small embedding: enough to train and save one.
EMBEDDING = ["--embedding_epochs=2", "--embedding_min_steps_per_epoch=2", "--unlabeled_architectures=20",
             "--embedding_patience=2"]


def assert_flag_error(result, flag):
    """absl's own refusal of a flag: non-zero exit, no traceback, the flag named, nothing on stdout."""
    assert result.returncode != 0, describe(result)
    assert "Traceback" not in result.stderr + result.stdout, describe(result)
    assert flag in result.stderr, describe(result)
    assert result.stdout.strip() == "", describe(result)


def copy_corpus(tmp_path, name="corpus"):
    target = str(tmp_path / name)
    shutil.copytree(TESTDATA_CORPUS, target)
    return target


def snapshot(directory):
    """{file name: (size, mtime_ns)} of a directory's files: to show a refused command changed nothing."""
    return {name: (os.stat(os.path.join(directory, name)).st_size, os.stat(os.path.join(directory, name)).st_mtime_ns)
            for name in sorted(os.listdir(directory))}


def reads_despite_chmod_000(tmp_path):
    """True where permissions do not stop reads (root, some container file systems)."""
    probe = tmp_path / "probe"
    probe.write_text("x")
    probe.chmod(0)
    try:
        with open(probe) as handle:
            handle.read()
        return True
    except PermissionError:
        return False
    finally:
        probe.chmod(0o644)


@pytest.fixture(scope="module")
def other_dataset(tmp_path_factory):
    """Another data set of the digits' shape and classes (8x8x1, 10 classes): random images as a .npz."""
    rng = np.random.RandomState(0)
    path = tmp_path_factory.mktemp("other_data") / "other.npz"
    np.savez(path, x=rng.uniform(0, 16, size=(200, 8, 8, 1)).astype(np.float32), y=np.arange(200) % 10)
    return str(path)


@pytest.fixture(scope="module")
def bad_teachers(tmp_path_factory):
    """Teacher files a user might pass by mistake."""
    import keras  # only this fixture builds a model

    folder = tmp_path_factory.mktemp("bad_teachers")
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Reshape((8, 8), name="to_sequence")(inputs)
    hidden = keras.layers.Conv1D(8, 3, activation="relu", name="conv1d_body")(hidden)
    hidden = keras.layers.GlobalAveragePooling1D(name="pool1d")(hidden)
    outputs = keras.layers.Dense(10, activation="softmax")(hidden)
    keras.Model(inputs, outputs).save(folder / "conv1d.keras")
    (folder / "garbage.keras").write_bytes(b"this is not a zip archive\n" * 10)
    (folder / "broken.json").write_text('{"format_version": 1, "layers": [{"kind": "conv", "filters": 8,')
    (folder / "bad_field.json").write_text(json.dumps(
        {"format_version": 1, "layers": [{"kind": "conv", "filters": 8, "kernel": 3, "stride": 1,
                                          "padding": "same", "use_bias": True},
                                         {"kind": "act", "activation": "no_such_activation"}, {"kind": "gap"}]}))
    (folder / "bad_kind.json").write_text(json.dumps({"format_version": 1, "layers": [{"kind": "lstm", "units": 8}]}))
    return folder


# -- 1. flags ------------------------------------------------------------------------------------

BAD_FLAGS = [
    ("pipeline", ["--num_children=0"], "--num_children=0"),
    ("compress", ["--max_accuracy_drop=2"], "--max_accuracy_drop=2"),
    # Slow (each binary start is 10-15 s; the default run keeps three, in the batches below): .ci/run's slow
    # step runs them.
    pytest.param("train_embedding", ["--embedding_epochs=0"], "--embedding_epochs=0", marks=pytest.mark.slow),
    pytest.param("tune_baseline", ["--method=gradient_descent"], "--method", marks=pytest.mark.slow),
    pytest.param("compare", ["--results=a,b", "--max_test_drop=-1"], "--max_test_drop=-1", marks=pytest.mark.slow),
    pytest.param("corpus", ["--corpus_dir=x", "--no_such_flag=1"], "no_such_flag", marks=pytest.mark.slow),
    ("pipeline", ["--no_such_flag=1"], "no_such_flag"),
]
BAD_FLAG_IDS = ["pipeline-num_children-0", "compress-max_accuracy_drop-2", "train_embedding-epochs-0",
                "tune_baseline-unknown-method", "compare-negative-drop", "corpus-unknown-flag", "pipeline-unknown-flag"]


def bad_flag_args(binary, args, output_dir):
    output = [] if binary == "corpus" else [f"--output_dir={output_dir}"]
    flagfile = [SMOKE] if binary not in ("compare", "corpus") else []
    return [*flagfile, *output, *args]


def default_bad_flags(binary):
    """{id: args} of the default run's bad-flag cases of `binary`."""
    cases = {}
    for name, case in zip(BAD_FLAG_IDS, BAD_FLAGS):
        if not hasattr(case, "marks") and case[0] == binary:  # a pytest.param: slow
            cases[name] = bad_flag_args(binary, case[1], "{run}")
    return cases


@pytest.mark.parametrize("binary, args, flag", BAD_FLAGS, ids=BAD_FLAG_IDS)
def test_bad_flags_are_refused_before_anything_runs(binary, args, flag, request, tmp_path):
    case = request.node.callspec.id
    if binary in ("pipeline", "compress"):  # with the other refusals of the binary, in one process
        result, output_dir = request.getfixturevalue(f"{binary}_refusals")[case]
    else:
        output_dir = str(tmp_path / "run")
        result = run_binary(binary, *bad_flag_args(binary, args, output_dir))
    assert_flag_error(result, flag)
    assert not os.path.exists(output_dir)


# -- 2. teachers -----------------------------------------------------------------------------------

BAD_TEACHERS = {
    "missing-keras": ("/nonexistent.keras", "no Keras model at '/nonexistent.keras'"),
    "garbage-keras": ("{bad}/garbage.keras", "cannot load a Keras model from"),
    "unsupported-layer": ("{bad}/conv1d.keras", "supported:"),
    "broken-json": ("{bad}/broken.json", "not valid JSON"),
    "bad-field": ("{bad}/bad_field.json", "layer 1, field 'activation'"),
    "bad-kind": ("{bad}/bad_kind.json", "layer 0"),
    "missing-json": ("{bad}/missing.json", "cannot read spec file"),
}


@pytest.fixture(scope="module")
def pipeline_refusals(bad_teachers, other_dataset, tmp_path_factory):
    """The pipeline binary's refusals below, in one process: bad flags, bad teachers, another data set's corpus
    (this one trains a teacher for an epoch first)."""
    cases = default_bad_flags("pipeline")
    cases.update({name: [SMOKE, "--output_dir={run}", f"--teacher={teacher.format(bad=bad_teachers)}"]
                  for name, (teacher, _) in BAD_TEACHERS.items()})
    corpus_dir = copy_corpus(tmp_path_factory.mktemp("other_data_corpus"))
    cases["other-data-set"] = [SMOKE, f"--num_children={TESTDATA_CHILDREN}", f"--dataset={other_dataset}",
                               f"--corpus_dir={corpus_dir}", "--teacher_epochs=1", "--output_dir={run}"]
    before = snapshot(corpus_dir)
    refused = batched_refusals("pipeline", cases, tmp_path_factory)
    refused["other-data-set"] += (corpus_dir, before)
    return refused


@pytest.mark.parametrize("case", list(BAD_TEACHERS))
def test_bad_teachers_are_one_line_errors_and_write_nothing(case, pipeline_refusals):
    result, output_dir = pipeline_refusals[case]
    assert_one_line_error(result, BAD_TEACHERS[case][1])
    # Nothing written: the corrected command is not refused as "a different configuration".
    assert not os.path.exists(output_dir)


def test_unsupported_layer_is_named(pipeline_refusals):
    result, _ = pipeline_refusals["unsupported-layer"]
    named = r"'(to_sequence|conv1d_body|pool1d)' \((Reshape|Conv1D|GlobalAveragePooling1D)\)"
    assert re.search(named, result.stderr), describe(result)


def test_unreadable_teacher_file(bad_teachers, tmp_path):
    if reads_despite_chmod_000(tmp_path):
        pytest.skip("chmod 000 does not stop reads here (running as root): an unreadable file cannot be made")
    teacher = tmp_path / "locked.keras"
    shutil.copy(bad_teachers / "conv1d.keras", teacher)
    teacher.chmod(0)
    try:
        result = run_binary("pipeline", SMOKE, f"--output_dir={tmp_path / 'run'}", f"--teacher={teacher}")
    finally:
        teacher.chmod(0o644)
    assert_one_line_error(result, str(teacher))
    assert not os.path.exists(tmp_path / "run")


@pytest.fixture(scope="module")
def compress_refusals(other_dataset, tmp_path_factory):
    """The compress binary's refusals below, in one process, each on its own copy of testdata's corpus."""
    corpora = {name: copy_corpus(tmp_path_factory.mktemp(name))
               for name in ("missing-teacher", "other-data-set", "other-teacher")}
    on = lambda name: [SMOKE, f"--num_children={TESTDATA_CHILDREN}", "--output_dir={run}",
                       f"--corpus_dir={corpora[name]}"]
    cases = default_bad_flags("compress")
    cases["missing-teacher"] = [*on("missing-teacher"), "--teacher=/nonexistent.keras"]
    cases["other-data-set"] = [*on("other-data-set"), f"--dataset={other_dataset}"]
    spec = os.path.join(REPO_ROOT, "testdata", "specs", "small_cnn.json")
    cases["other-teacher"] = [*on("other-teacher"), f"--teacher={spec}"]
    return batched_refusals("compress", cases, tmp_path_factory)


def test_compress_with_a_missing_teacher_writes_nothing(compress_refusals):
    result, output_dir = compress_refusals["missing-teacher"]
    assert_one_line_error(result, "no Keras model at '/nonexistent.keras'")
    assert not os.path.exists(os.path.join(output_dir, "compressed"))


# -- 3. corpora --------------------------------------------------------------------------------------

def test_pipeline_refuses_a_corpus_of_another_data_set(pipeline_refusals):
    result, _, corpus_dir, before = pipeline_refusals["other-data-set"]
    assert_one_line_error(result, "the corpus in")
    assert re.search(r"error: dataset\.[a-z_.]+\[?\d*\]?: stored ", result.stderr), describe(result)
    assert snapshot(corpus_dir) == before  # the external corpus is not touched


def test_compress_refuses_a_corpus_of_another_data_set(compress_refusals):
    result, output_dir = compress_refusals["other-data-set"]
    assert_one_line_error(result, "the corpus in")
    assert re.search(r"error: dataset\.[a-z_.]+\[?\d*\]?: stored ", result.stderr), describe(result)
    assert not os.path.exists(os.path.join(output_dir, "compressed"))


def test_compress_refuses_a_corpus_of_another_teacher(compress_refusals):
    result, output_dir = compress_refusals["other-teacher"]
    assert_one_line_error(result, "teacher.hash: stored ")
    assert not os.path.exists(os.path.join(output_dir, "compressed"))


def test_train_embedding_on_an_empty_corpus(tmp_path):
    corpus_dir = tmp_path / "empty"
    corpus_dir.mkdir()
    shutil.copy(os.path.join(TESTDATA_CORPUS, corpus.METADATA_FILE), corpus_dir)
    result = run_binary("train_embedding", SMOKE, *EMBEDDING, f"--corpus_dir={corpus_dir}",
                        f"--output_dir={tmp_path / 'run'}")
    assert_one_line_error(result, "the corpus has 0 training and 0 held-out ok records")


@pytest.mark.slow
def test_train_embedding_after_a_kill_while_it_saved_its_backup(tmp_path):
    # What kill -9 during Keras' first backup leaves: a cut-short weights file and no epoch file.
    output_dir = tmp_path / "run"
    backup = output_dir / "embedding" / "backup"
    backup.mkdir(parents=True)
    (backup / "latest.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))
    # The marker the stage wrote before it started (rundir.prepare), so the directory is known as a run.
    (output_dir / "embedding" / ".acompress_run").write_text("")
    result = run_binary("train_embedding", SMOKE, *EMBEDDING, f"--corpus_dir={copy_corpus(tmp_path)}",
                        f"--output_dir={output_dir}")
    assert result.returncode == 0, describe(result)
    assert "discarding the incomplete backup" in result.stderr
    assert os.path.exists(output_dir / "embedding" / "embedding.keras") and not backup.exists()


@pytest.fixture(scope="module")
def truncated(tmp_path_factory):
    """A copy of the test corpus with one part file cut in half, and an embedding trained on it."""
    root = tmp_path_factory.mktemp("truncated")
    corpus_dir = copy_corpus(root)
    victim = os.path.join(corpus_dir, part_files(corpus_dir)[2])
    with open(victim, "rb") as handle:
        content = handle.read()
    lost = {(r.child_index, r.replicate) for r in _records_of(victim)}
    with open(victim, "wb") as handle:
        handle.write(content[:len(content) // 2])
    output_dir = str(root / "run")
    result = run_binary("train_embedding", SMOKE, *EMBEDDING, f"--corpus_dir={corpus_dir}",
                        f"--output_dir={output_dir}")
    return dict(corpus_dir=corpus_dir, victim=victim, lost=lost, output_dir=output_dir, result=result)


def _records_of(path):
    """The records of one intact part file."""
    return [corpus.from_example(raw) for raw in tf.data.TFRecordDataset(path).as_numpy_iterator()]


@pytest.mark.slow
def test_corpus_binary_reports_a_truncated_part_file(truncated):
    result = run_binary("corpus", f"--corpus_dir={truncated['corpus_dir']}")
    assert result.returncode == 0, describe(result)
    summary = json.loads(result.stdout)
    assert summary["corrupt_files"] == [truncated["victim"]]
    assert summary["num_records"] == TESTDATA_TRAININGS - len(truncated["lost"])
    assert summary["num_duplicates"] == 0
    assert "Skipping corrupt corpus part file" in result.stderr


@pytest.mark.slow
def test_embedding_trains_on_the_rest_of_a_corpus_with_a_truncated_part_file(truncated):
    result = truncated["result"]
    assert result.returncode == 0, describe(result)
    assert "Skipping corrupt corpus part file" in result.stderr
    metrics = read_json(os.path.join(truncated["output_dir"], "embedding", "metrics.json"))
    ok = corpus.read_corpus(truncated["corpus_dir"]).select(["ok"])
    assert metrics["records"]["train"] + metrics["records"]["heldout"] == len(ok)


@pytest.mark.slow
def test_generate_corpus_retrains_the_children_of_a_truncated_part_file(truncated, tmp_path):
    corpus_dir = str(tmp_path / "corpus")
    shutil.copytree(truncated["corpus_dir"], corpus_dir)
    victim = os.path.join(corpus_dir, os.path.basename(truncated["victim"]))
    kept = corpus.read_corpus(corpus_dir).records
    result = run_binary("generate_corpus", SMOKE, f"--num_children={TESTDATA_CHILDREN}", "--teacher_epochs=1",
                        f"--corpus_dir={corpus_dir}", f"--output_dir={tmp_path / 'run'}")
    assert result.returncode == 0, describe(result)
    total = TESTDATA_TRAININGS
    assert f"{len(truncated['lost'])} of {total} trainings to do" in result.stderr, describe(result)
    stored = corpus.read_corpus(corpus_dir)
    assert stored.corrupt_files == (victim,)  # still reported, never read
    assert stored.duplicates == () and len(stored) == total
    assert all(record in stored.records for record in kept)
    assert json.loads(result.stdout)["num_children_missing"] == 0


# -- 4. output directories --------------------------------------------------------------------------

@pytest.mark.slow
def test_train_embedding_refuses_another_corpus_then_overwrite_replaces(truncated, tmp_path):
    assert truncated["result"].returncode == 0, describe(truncated["result"])
    embedding_dir = os.path.join(truncated["output_dir"], "embedding")
    before = snapshot(embedding_dir)
    other = copy_corpus(tmp_path, "intact")
    refused = run_binary("train_embedding", SMOKE, *EMBEDDING, f"--corpus_dir={other}",
                         f"--output_dir={truncated['output_dir']}")
    assert_one_line_error(refused, "was made with a different configuration (differs in: corpus_dir)")
    assert "--overwrite" in refused.stderr
    assert snapshot(embedding_dir) == before
    # --overwrite replaces an embedding directory made with other settings (a copy of the one above).
    output_dir = str(tmp_path / "run")
    shutil.copytree(truncated["output_dir"], output_dir)
    replaced = run_binary("train_embedding", SMOKE, *EMBEDDING, f"--corpus_dir={other}", f"--output_dir={output_dir}",
                          "--overwrite")
    assert replaced.returncode == 0, describe(replaced)
    copied = os.path.join(output_dir, "embedding")
    assert read_json(os.path.join(copied, "config.json"))["corpus_dir"] == other
    metrics = read_json(os.path.join(copied, "metrics.json"))
    assert metrics["records"]["train"] + metrics["records"]["heldout"] == len(corpus.read_corpus(other).select(["ok"]))


def write_result(directory, params):
    os.makedirs(directory, exist_ok=True)
    teacher = {"params": 100000, "test_accuracy": 0.99, "val_accuracy": 0.98, "flops": 1}
    with open(os.path.join(directory, "result.json"), "w") as handle:
        json.dump({"method": "random", "seed": 0, "teacher": teacher,
                   "budget": {"child_epochs": 10, "wall_seconds": 1.0},
                   "chosen": {"params": params, "flops": params, "test_accuracy": 0.98, "val_accuracy": 0.97}},
                  handle)
    return directory


@pytest.mark.slow
def test_compare_overwrite_replaces_the_comparison(tmp_path):
    first = write_result(str(tmp_path / "a"), 5000)
    second = write_result(str(tmp_path / "b"), 2000)
    out = str(tmp_path / "cmp")
    assert run_binary("compare", f"--results={first}", f"--output_dir={out}").returncode == 0
    refused = run_binary("compare", f"--results={second}", f"--output_dir={out}")
    assert_one_line_error(refused, "already holds results")
    assert [r["params"] for r in read_json(os.path.join(out, "comparison.json"))["rows"]] == [5000]
    replaced = run_binary("compare", f"--results={second}", f"--output_dir={out}", "--overwrite")
    assert replaced.returncode == 0, describe(replaced)
    assert [r["params"] for r in read_json(os.path.join(out, "comparison.json"))["rows"]] == [2000]


@pytest.mark.slow
def test_compare_with_a_missing_or_broken_result(tmp_path):
    missing = run_binary("compare", f"--results={tmp_path / 'nothing'}", f"--output_dir={tmp_path / 'cmp'}")
    assert_one_line_error(missing, str(tmp_path / "nothing"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "result.json").write_text('{"method": "random", ')
    result = run_binary("compare", f"--results={broken}", f"--output_dir={tmp_path / 'cmp'}")
    assert_one_line_error(result, "result.json")
    assert not os.path.exists(tmp_path / "cmp")


@pytest.mark.slow
@pytest.mark.parametrize("binary", ["compare", "generate_corpus"])
def test_output_dir_below_a_file(binary, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    if binary == "compare":
        args = [f"--results={write_result(str(tmp_path / 'a'), 5000)}"]
    else:
        args = [SMOKE, "--num_children=1", "--replicate_fraction=0"]
    result = run_binary(binary, *args, f"--output_dir={blocker}/run")
    assert_one_line_error(result, str(blocker))
    assert blocker.read_text() == "not a directory"


@pytest.mark.slow
def test_output_dir_that_is_a_file(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    result = run_binary("compare", f"--results={write_result(str(tmp_path / 'a'), 5000)}",
                        f"--output_dir={blocker}")
    assert_one_line_error(result, str(blocker))
    assert blocker.read_text() == "not a directory"


@pytest.mark.slow
@pytest.mark.parametrize("binary, overwrite", [("compare", False), ("compare", True), ("generate_corpus", True)],
                         ids=["compare", "compare-overwrite", "generate_corpus-overwrite"])
def test_a_directory_that_is_not_a_run_is_left_alone(binary, overwrite, tmp_path):
    # A user's own directory (here: their file, and a config.json that is not a run's) is never written
    # into, resumed or deleted: --output_dir=. with --overwrite must not wipe a working directory.
    users = tmp_path / "mine"
    users.mkdir()
    (users / "notes.txt").write_text("my own file")
    (users / "config.json").write_text("[1, 2, 3]")
    if binary == "compare":
        args = [f"--results={write_result(str(tmp_path / 'a'), 5000)}"]
    else:
        args = [SMOKE, "--num_children=1", "--replicate_fraction=0"]
    result = run_binary(binary, *args, f"--output_dir={users}", *(["--overwrite"] if overwrite else []))
    assert_one_line_error(result, "not a run of acompress")
    assert sorted(os.listdir(users)) == ["config.json", "notes.txt"]
    assert (users / "notes.txt").read_text() == "my own file"


@pytest.mark.slow
def test_overwrite_still_replaces_a_run(tmp_path):
    out = tmp_path / "cmp"
    first = run_binary("compare", f"--results={write_result(str(tmp_path / 'a'), 5000)}", f"--output_dir={out}")
    assert first.returncode == 0, describe(first)
    assert os.path.exists(out / ".acompress_run")
    (out / "stale.txt").write_text("from the old run")
    again = run_binary("compare", f"--results={write_result(str(tmp_path / 'b'), 4000)}", f"--output_dir={out}",
                       "--overwrite")
    assert again.returncode == 0, describe(again)
    assert not os.path.exists(out / "stale.txt")


def test_read_only_output_dir(tmp_path):
    parent = tmp_path / "read_only"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        if os.access(parent, os.W_OK):
            pytest.skip("chmod 555 does not stop writes here (running as root); see test_output_dir_below_a_file")
        result = run_binary("compare", f"--results={write_result(str(tmp_path / 'a'), 5000)}",
                            f"--output_dir={parent}/run")
    finally:
        parent.chmod(0o755)
    assert_one_line_error(result, str(parent))


# -- 5. a child whose loss becomes NaN ------------------------------------------------------------------

@pytest.mark.slow
def test_diverging_children_are_recorded_and_the_run_completes(tmp_path):
    output_dir = str(tmp_path / "run")
    result = run_binary("generate_corpus", SMOKE, f"--output_dir={output_dir}", "--num_children=4",
                        "--replicate_fraction=0", "--teacher_epochs=1", "--proxy_learning_rate=1e9")
    assert result.returncode == 0, describe(result)
    summary = json.loads(result.stdout)
    assert summary["num_records"] == 4 and summary["num_children_missing"] == 0
    assert summary["counts"] == {"diverged": 4, "failed": 0, "ok": 0}  # a rate of 1e9 breaks every child
    stored = corpus.read_corpus(os.path.join(output_dir, "corpus"))
    assert len(stored) == 4 and stored.duplicates == () and stored.corrupt_files == ()
    for record in stored.records:
        assert record.status == "diverged" and np.isnan(record.val_accuracy) and "NaN or infinite" in record.reason
    # Nothing to learn from: the next stage says so in one line.
    embedding = run_binary("train_embedding", SMOKE, *EMBEDDING, f"--output_dir={output_dir}")
    assert_one_line_error(embedding, "0 training and 0 held-out ok records")


# -- 6. SIGKILL in each stage of the pipeline, then the same command again ----------------------------

# The pipeline with tiny stages, long enough in each to be killed half-way: 4 part files of
# children, 30 embedding epochs and 3 finalists.
KILL_ARGS = [SMOKE, "--embedding_epochs=30", "--embedding_min_steps_per_epoch=10",
             "--unlabeled_architectures=40", "--embedding_patience=30", "--search_steps=20", "--snapshot_every=5",
             "--rounds=2", "--refine_children=2", "--refine_epochs=1", "--num_finalists=3", "--finalist_epochs=4",
             "--min_ratio=2", "--max_accuracy_drop=0.5"]
NUM_CHILDREN = 12
REPLICATED = corpus_generation.replicated_indices(NUM_CHILDREN, 0.25, 0)
TRAININGS = NUM_CHILDREN + len(REPLICATED)


@pytest.fixture(scope="module")
def kill_run(tmp_path_factory):
    """One pipeline output directory, killed in each stage in turn by the tests below."""
    return {"output_dir": str(tmp_path_factory.mktemp("killed") / "run")}


def pipeline_command(output_dir):
    return [sys.executable, "-m", "binaries.pipeline", *KILL_ARGS, f"--output_dir={output_dir}"]


def kill_when(output_dir, ready, what, timeout=420):
    """Starts the pipeline, SIGKILLs it as soon as `ready()` holds; returns its stderr so far."""
    log_path = os.path.join(os.path.dirname(output_dir), "killed.log")
    with open(log_path, "w") as log:
        process = subprocess.Popen(pipeline_command(output_dir), cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                                   stderr=log)
        try:
            deadline = time.monotonic() + timeout
            while not ready():
                assert process.poll() is None, (f"the pipeline exited ({process.returncode}) before {what}:\n"
                                                + open(log_path).read()[-5000:])
                assert time.monotonic() < deadline, f"no {what} after {timeout} s"
                time.sleep(0.02)
            os.kill(process.pid, signal.SIGKILL)
            assert process.wait(timeout=60) == -signal.SIGKILL
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    with open(log_path) as handle:
        return handle.read()


def finalist_lines(output_dir):
    path = os.path.join(output_dir, "compressed", "finalists.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.mark.slow
def test_sigkill_during_the_corpus_stage(kill_run):
    output_dir = kill_run["output_dir"]
    corpus_dir = os.path.join(output_dir, "corpus")
    kill_when(output_dir, lambda: os.path.isdir(corpus_dir) and part_files(corpus_dir), "part file")
    killed = corpus.read_corpus(corpus_dir)
    assert 0 < len(killed) < TRAININGS and killed.corrupt_files == () and killed.duplicates == ()
    assert not os.path.exists(os.path.join(output_dir, "embedding", "embedding.keras"))
    kill_run["corpus_records"] = killed.records


@pytest.mark.slow
def test_sigkill_during_the_embedding_stage(kill_run):
    output_dir = kill_run["output_dir"]
    # A finished epoch: Keras' BackupAndRestore has written its weights and then this file.
    epoch_file = os.path.join(output_dir, "embedding", "backup", "training_metadata.json")
    log = kill_when(output_dir, lambda: os.path.exists(epoch_file), "finished embedding epoch")
    if "corpus_records" in kill_run:  # the corpus resumed: only what the first kill left to do
        assert f"{TRAININGS - len(kill_run['corpus_records'])} of {TRAININGS} trainings to do" in log, log[-5000:]
    stored = corpus.read_corpus(os.path.join(output_dir, "corpus"))
    assert len(stored) == TRAININGS and stored.duplicates == () and stored.corrupt_files == ()
    assert not os.path.exists(os.path.join(output_dir, "embedding", "metrics.json"))


@pytest.mark.slow
def test_sigkill_during_compression_then_the_same_command_completes(kill_run):
    output_dir = kill_run["output_dir"]
    kill_when(output_dir, lambda: len(finalist_lines(output_dir)) >= 1, "trained finalist")
    before = finalist_lines(output_dir)
    assert 1 <= len(before) < 3
    assert not os.path.exists(os.path.join(output_dir, "compressed", "report.json"))
    # The embedding that compression started from is finished and saved.
    assert not os.path.exists(os.path.join(output_dir, "embedding", "backup"))

    result = subprocess.run(pipeline_command(output_dir), cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, describe(result)
    summary = json.loads(result.stdout)
    for path in ("pipeline_config.json", "timings.json", "teacher/metrics.json", "corpus_summary.json",
                 "embedding/embedding.keras", "embedding/metrics.json", "compressed/report.json",
                 "compressed/model.keras", "compressed/saved_model/saved_model.pb", "compressed/candidates.json"):
        assert os.path.exists(os.path.join(output_dir, path)), path
    # The corpus holds every training exactly once, and the first kill's records as they were.
    stored = corpus.read_corpus(os.path.join(output_dir, "corpus"))
    assert stored.duplicates == () and stored.corrupt_files == ()
    assert sorted(r.key for r in stored.records) == sorted(
        [(i, 0) for i in range(NUM_CHILDREN)] + [(i, 1) for i in REPLICATED])
    assert all(record in stored.records for record in kill_run.get("corpus_records", ()))
    assert "trainings to do" not in result.stderr or f"0 of {TRAININGS} trainings to do" in result.stderr
    # Finalists: each trained once; those trained before the kill are kept, not trained again.
    after = finalist_lines(output_dir)
    hashes = [line["spec_hash"] for line in after]
    assert len(hashes) == len(set(hashes)) == 3
    assert after[:len(before)] == before
    report = read_json(os.path.join(output_dir, "compressed", "report.json"))
    assert sorted(f["spec_hash"] for f in report["finalists"]) == sorted(hashes)
    retrained = re.findall(r"finalist \d+/\d+ ([0-9a-f]{16})", result.stderr)
    # None is trained again, not even the chosen one to export it: finalists/ kept every model.
    assert not {line["spec_hash"] for line in before} & set(retrained), result.stderr[-5000:]
    assert "retraining the chosen network" not in result.stderr
    assert summary["chosen_params"] == report["chosen"]["params"]
