"""Corpus storage: record schema, durable shards, resume, metadata pinning, corruption, tf.data."""

import dataclasses
import json
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from acompress import archspec
from acompress import corpus
from acompress import rundir
from acompress import sampler
from acompress import search_space
from tests import specs

TOKENS_SHAPE = (4, 3)
NUM_CHILDREN = 12
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- shared helpers (also used by the writer subprocess below) -------------------

def make_test_metadata(num_children=NUM_CHILDREN, **overrides):
    teacher = specs.digits_teacher()
    args = dict(
        dataset={"name": "digits", "config": {"validation_fraction": 0.2}, "info": {"num_classes": 10}},
        teacher=corpus.describe_teacher(teacher, params=teacher.count_params(specs.DIGITS_SHAPE, 10)),
        search_space=search_space.SearchSpace(max_layers=TOKENS_SHAPE[0]),
        sampler={"kind": "random", "max_removals": 2},
        proxy={"epochs": 5, "learning_rate": 0.001},
        seed=7,
        num_children=num_children,
        tokens_shape=TOKENS_SHAPE,
    )
    args.update(overrides)
    return corpus.make_metadata(**args)


def make_record(child_index, replicate=0, status="ok"):
    """A deterministic record of child `child_index` (any status)."""
    spec = specs.digits_teacher()
    ok = status == "ok"
    return corpus.ChildRecord.from_spec(
        spec,
        child_index=child_index,
        tokens=np.arange(12).reshape(TOKENS_SHAPE) + child_index,
        val_accuracy=(0.5 + (child_index % 32) / 64 - replicate / 128) if ok else float("nan"),
        params=1000 + 10 * child_index,
        flops=50_000 + child_index,
        epochs=5 if ok else 1,
        train_seconds=2.5,
        seed=7 + child_index + 1000 * replicate,
        status=status,
        reason="" if ok else f"{status}: loss is nan at step {child_index}",
        replicate=replicate,
    )


def write_shards(corpus_dir, metadata, num_shards=2, batch=2):
    for shard in range(num_shards):
        writer = corpus.CorpusWriter(corpus_dir, metadata, shard, num_shards)
        indices = corpus.shard_indices(metadata["num_children"], num_shards, shard)
        for start in range(0, len(indices), batch):
            writer.write([make_record(i) for i in indices[start:start + batch]])


def part_files(directory):
    return sorted(name for name in os.listdir(directory) if name.endswith(".tfrecord"))


@pytest.fixture
def absl_logs(caplog):
    caplog.set_level(logging.INFO, logger="absl")
    return caplog


# -- record schema ---------------------------------------------------------------

@pytest.mark.parametrize("status", ["ok", "failed", "diverged"])
def test_example_round_trip(status):
    record = make_record(3, replicate=1, status=status)
    back = corpus.from_example(corpus.to_example(record).SerializeToString())
    assert back == record  # NaN accuracies compare equal
    assert back.tokens == tuple(range(3, 15)) and back.key == (3, 1)
    assert back.spec().hash == back.spec_hash == specs.digits_teacher().hash
    if status != "ok":
        assert math.isnan(back.val_accuracy) and back.reason.startswith(status)


def test_floats_are_stored_as_float32():
    record = corpus.ChildRecord(**{**make_record(0).to_dict(), "val_accuracy": 0.1})
    back = corpus.from_example(corpus.to_example(record))
    assert back.val_accuracy == float(np.float32(0.1))


def test_record_validation_names_the_field():
    fields = make_record(0).to_dict()
    with pytest.raises(ValueError, match="status must be one of"):
        corpus.ChildRecord(**{**fields, "status": "maybe"})
    with pytest.raises(ValueError, match="reason must be empty"):
        corpus.ChildRecord(**{**fields, "reason": "why"})
    with pytest.raises(ValueError, match="reason must say why"):
        corpus.ChildRecord(**{**fields, "status": "failed"})
    with pytest.raises(ValueError, match="val_accuracy must be in"):
        corpus.ChildRecord(**{**fields, "val_accuracy": float("nan")})
    with pytest.raises(ValueError, match="child_index must be >= 0"):
        corpus.ChildRecord(**{**fields, "child_index": -1})
    with pytest.raises(ValueError, match="params must be an integer"):
        corpus.ChildRecord(**{**fields, "params": 1.5})
    assert corpus.ChildRecord(**{**fields, "params": np.int64(3)}).params == 3


def test_from_example_rejects_missing_features_and_garbage():
    example = corpus.to_example(make_record(0))
    del example.features.feature["params"]
    with pytest.raises(ValueError, match="'params' is missing"):
        corpus.from_example(example)
    with pytest.raises(ValueError, match="not a tf.train.Example"):
        corpus.from_example(b"\xff\xff garbage")


# -- writing and reading ---------------------------------------------------------

def test_writer_reader_round_trip_across_two_shards(tmp_path):
    directory = str(tmp_path / "corpus")
    metadata = make_test_metadata()
    write_shards(directory, metadata, num_shards=2, batch=4)
    # 6 children per shard, batches of 4: two part files per shard.
    assert part_files(directory) == [corpus.part_file_name(s, 2, p) for s in (0, 1) for p in (0, 1)]
    stored = rundir.read_json(os.path.join(directory, "metadata.json"))
    assert stored == metadata
    read = corpus.read_corpus(directory, metadata)
    assert [r.key for r in read.records] == [(i, 0) for i in range(NUM_CHILDREN)]
    assert list(read.records) == [make_record(i) for i in range(NUM_CHILDREN)]
    assert read.corrupt_files == () and read.duplicates == ()
    np.testing.assert_array_equal(read.params, [1000 + 10 * i for i in range(NUM_CHILDREN)])
    assert read.tokens.shape == (NUM_CHILDREN,) + TOKENS_SHAPE and read.tokens.dtype == np.int32
    np.testing.assert_array_equal(read.tokens[5], np.arange(12).reshape(TOKENS_SHAPE) + 5)
    np.testing.assert_allclose(read.val_accuracy, [0.5 + i / 64 for i in range(NUM_CHILDREN)])


def test_statuses_filter_and_counts(tmp_path):
    directory = str(tmp_path / "corpus")
    writer = corpus.CorpusWriter(directory, make_test_metadata())
    writer.write([make_record(0), make_record(1, status="failed"), make_record(2, status="diverged"),
                  make_record(0, replicate=1)])
    everything = corpus.read_corpus(directory)
    assert everything.counts() == {"ok": 2, "failed": 1, "diverged": 1}
    assert [r.key for r in everything.ok()] == [(0, 0), (0, 1)]
    only_failed = corpus.read_corpus(directory, statuses=["failed"])
    assert [r.key for r in only_failed.records] == [(1, 0)]
    assert [r.key for r in everything.select(("ok",)).records] == [(0, 0), (0, 1)]
    with pytest.raises(ValueError, match="unknown statuses"):
        corpus.read_corpus(directory, statuses=["good"])


def test_resume_and_rewrite_do_not_duplicate(tmp_path, absl_logs):
    directory = str(tmp_path / "corpus")
    metadata = make_test_metadata()
    writer = corpus.CorpusWriter(directory, metadata, 1, 3)
    assert writer.done_keys() == set()
    assert writer.write([make_record(1), make_record(4)]) == 2
    assert writer.write([]) == 0
    reopened = corpus.CorpusWriter(directory, metadata, 1, 3)
    assert reopened.done_keys() == {(1, 0), (4, 0)}
    assert corpus.CorpusWriter(directory, metadata, 0, 3).done_keys() == set()  # other shard
    # A stored key is skipped by the writer; a new replicate of it is not.
    assert reopened.write([make_record(4), make_record(7), make_record(7), make_record(4, replicate=1)]) == 2
    assert "already holds child 4 replicate 0" in absl_logs.text
    assert reopened.done_keys() == {(1, 0), (4, 0), (7, 0), (4, 1)}
    assert len(part_files(directory)) == 2
    read = corpus.read_corpus(directory)
    assert [r.key for r in read.records] == [(1, 0), (4, 0), (4, 1), (7, 0)]


def test_duplicates_across_files_are_dropped_on_read_keeping_the_first(tmp_path, absl_logs):
    directory = str(tmp_path / "corpus")
    metadata = make_test_metadata()
    # Two writers on one shard (a mistake) both write child 2 with different results.
    first = corpus.CorpusWriter(directory, metadata)
    second = corpus.CorpusWriter(directory, metadata)
    first.write([make_record(2)])
    late = corpus.ChildRecord(**{**make_record(2).to_dict(), "val_accuracy": 0.25})
    second.write([late, make_record(3)])  # its part number was taken: it takes the next one
    assert len(part_files(directory)) == 2
    read = corpus.read_corpus(directory)
    assert [r.key for r in read.records] == [(2, 0), (3, 0)]
    assert read.records[0] == make_record(2)  # the first written wins
    assert read.duplicates == ((2, 0, os.path.join(directory, corpus.part_file_name(0, 1, 1))),)
    assert "stored twice" in absl_logs.text
    assert read.summary()["num_duplicates"] == 1


# -- metadata --------------------------------------------------------------------

def test_make_metadata_pins_everything():
    metadata = make_test_metadata()
    assert set(metadata) == set(corpus.METADATA_KEYS)
    assert metadata["format_version"] == corpus.FORMAT_VERSION
    assert metadata["tokens_shape"] == list(TOKENS_SHAPE)
    assert metadata["search_space"]["hash"] == search_space.SearchSpace(max_layers=4).hash
    assert metadata["teacher"]["hash"] == specs.digits_teacher().hash
    assert set(metadata["versions"]) >= {"tensorflow", "keras", "numpy", "acompress"}
    assert metadata["versions"]["tensorflow"] == tf.__version__
    with pytest.raises(ValueError, match="not the hash of its spec"):
        make_test_metadata(teacher={**metadata["teacher"], "hash": "0" * 16})
    with pytest.raises(ValueError, match="num_children"):
        make_test_metadata(num_children=0)
    with pytest.raises(ValueError, match="'name'"):
        make_test_metadata(dataset={"config": {}})


def test_corpus_metadata_reads_the_stored_testdata_corpus_as_its_raw_dict_says():
    stored = corpus.read_corpus(os.path.join(REPO_ROOT, "testdata", "digits_corpus"))
    raw, meta = stored.metadata, stored.meta
    assert isinstance(meta, corpus.CorpusMetadata) and meta.stored is raw
    assert meta.teacher_spec == archspec.ArchSpec.from_dict(raw["teacher"]["spec"])
    assert meta.teacher_spec.hash == meta.teacher_hash == raw["teacher"]["hash"]
    assert meta.teacher_params == raw["teacher"]["params"] == 559_306
    assert meta.search_space == search_space.SearchSpace.from_dict(raw["search_space"]["config"])
    assert meta.search_space.hash == raw["search_space"]["hash"]
    assert meta.sampler_config == sampler.SamplerConfig.from_dict(raw["sampler"])
    assert meta.proxy == raw["proxy"] and meta.dataset_info == raw["dataset"]["info"]
    assert meta.num_children == raw["num_children"] == 48 and meta.seed == raw["seed"]
    assert meta.tokens_shape == stored.tokens_shape == tuple(raw["tokens_shape"])


def test_corpus_metadata_is_a_read_only_view(tmp_path):
    metadata = make_test_metadata()
    writer = corpus.CorpusWriter(str(tmp_path / "corpus"), metadata)
    before = json.dumps(writer.metadata, sort_keys=True)
    proxy, info = writer.meta.proxy, writer.meta.dataset_info
    proxy["epochs"], info["num_classes"] = 99, 99  # copies: the stored metadata does not change
    assert json.dumps(writer.metadata, sort_keys=True) == before
    assert writer.meta.proxy == {"epochs": 5, "learning_rate": 0.001}
    assert writer.meta.dataset_info == {"num_classes": 10}
    assert writer.meta.teacher_hash == specs.digits_teacher().hash and writer.meta.seed == 7
    with pytest.raises(dataclasses.FrozenInstanceError):
        writer.meta.stored = {}
    read = corpus.read_corpus(str(tmp_path / "corpus"))
    assert read.meta.stored == writer.metadata
    untokenised = corpus.CorpusMetadata(make_test_metadata(tokens_shape=None))
    assert untokenised.tokens_shape is None
    with pytest.raises(KeyError):
        corpus.CorpusMetadata({}).teacher_hash


def test_writer_refuses_other_metadata_naming_the_field(tmp_path):
    directory = str(tmp_path / "corpus")
    corpus.CorpusWriter(directory, make_test_metadata())
    with pytest.raises(corpus.MetadataMismatchError, match=r"^proxy\.epochs: stored 5, given 10") as info:
        corpus.CorpusWriter(directory, make_test_metadata(proxy={"epochs": 10, "learning_rate": 0.001}), 1, 2)
    assert isinstance(info.value, ValueError)
    assert info.value.differences == [("proxy.epochs", 5, 10)]
    other_teacher = specs.vgg_like()
    with pytest.raises(corpus.MetadataMismatchError, match=r"teacher\.hash"):
        corpus.CorpusWriter(directory, make_test_metadata(
            teacher=corpus.describe_teacher(other_teacher, params=1)))
    with pytest.raises(corpus.MetadataMismatchError, match=r"^tokens_shape\[1\]: stored 3, given 4"):
        corpus.CorpusWriter(directory, make_test_metadata(tokens_shape=(4, 4)))


def test_reader_refuses_other_metadata_naming_the_field(tmp_path):
    directory = str(tmp_path / "corpus")
    write_shards(directory, make_test_metadata())
    with pytest.raises(corpus.MetadataMismatchError, match=r"^seed: stored 7, given 8"):
        corpus.read_corpus(directory, make_test_metadata(seed=8))
    with pytest.raises(corpus.MetadataMismatchError, match=r"dataset\.config\.validation_fraction"):
        corpus.as_dataset(directory, expected_metadata=make_test_metadata(
            dataset={"name": "digits", "config": {"validation_fraction": 0.1}, "info": {"num_classes": 10}}))
    with pytest.raises(FileNotFoundError, match="no metadata.json"):
        corpus.read_corpus(str(tmp_path / "elsewhere"))


def test_version_drift_only_warns(tmp_path, absl_logs):
    directory = str(tmp_path / "corpus")
    old = make_test_metadata()
    old["versions"]["tensorflow"] = "2.0.0"
    corpus.CorpusWriter(directory, old).write([make_record(0)])
    absl_logs.clear()
    writer = corpus.CorpusWriter(directory, make_test_metadata())  # no error
    assert writer.done_keys() == {(0, 0)}
    assert f"versions.tensorflow: stored \"2.0.0\", now \"{tf.__version__}\"" in absl_logs.text
    absl_logs.clear()
    assert len(corpus.read_corpus(directory, make_test_metadata())) == 1
    assert "other package versions" in absl_logs.text


def test_concurrent_metadata_creation_keeps_one_file(tmp_path):
    directory = str(tmp_path / "corpus")
    metadata = make_test_metadata()
    writers = [corpus.CorpusWriter(directory, metadata, shard, 3) for shard in range(3)]
    assert len(writers) == 3
    assert sorted(os.listdir(directory)) == ["metadata.json"]


# -- corruption ------------------------------------------------------------------

def test_truncated_and_garbage_part_files_are_reported(tmp_path, absl_logs):
    directory = str(tmp_path / "corpus")
    write_shards(directory, make_test_metadata(), num_shards=2, batch=3)
    names = part_files(directory)
    assert len(names) == 4
    truncated = os.path.join(directory, names[0])  # children 0, 2, 4
    with open(truncated, "rb+") as handle:
        handle.truncate(os.path.getsize(truncated) - 7)
    garbage = os.path.join(directory, corpus.part_file_name(1, 2, 7))
    with open(garbage, "wb") as handle:
        handle.write(b"this is not a TFRecord file" * 5)
    read = corpus.read_corpus(directory)
    assert read.corrupt_files == (truncated, garbage)
    assert [r.key[0] for r in read.records] == [1, 3, 5, 6, 7, 8, 9, 10, 11]
    assert "Skipping corrupt corpus part file" in absl_logs.text
    summary = read.summary()
    assert summary["corrupt_files"] == [truncated, garbage]
    assert summary["num_part_files"] == 5 and summary["num_children_missing"] == 3
    # A resumed writer does not count the corrupt file's records as done.
    writer = corpus.CorpusWriter(directory, make_test_metadata(), 0, 2)
    assert writer.done_keys() == {(6, 0), (8, 0), (10, 0)}
    # The tf.data reader skips the same files.
    keys = sorted(int(e["child_index"]) for e in corpus.as_dataset(directory).as_numpy_iterator())
    assert keys == [1, 3, 5, 6, 7, 8, 9, 10, 11]


def test_part_file_cut_at_a_record_boundary_is_detected(tmp_path):
    directory = str(tmp_path / "corpus")
    writer = corpus.CorpusWriter(directory, make_test_metadata())
    writer.write([make_record(0)])
    one_record_size = os.path.getsize(os.path.join(directory, part_files(directory)[0]))
    writer.write([make_record(1), make_record(2)])
    second = os.path.join(directory, part_files(directory)[1])
    with open(second, "rb+") as handle:  # records of one child have the same size here
        handle.truncate(os.path.getsize(second) - one_record_size)
    read = corpus.read_corpus(directory)
    assert read.corrupt_files == (second,)
    assert [r.key for r in read.records] == [(0, 0)]


def test_unparsable_record_marks_its_file_corrupt(tmp_path):
    directory = str(tmp_path / "corpus")
    corpus.CorpusWriter(directory, make_test_metadata()).write([make_record(0)])
    bad = os.path.join(directory, corpus.part_file_name(0, 1, 5))
    with tf.io.TFRecordWriter(bad) as handle:  # valid TFRecord framing, not a ChildRecord
        handle.write(tf.train.Example().SerializeToString())
    read = corpus.read_corpus(directory)
    assert read.corrupt_files == (bad,) and [r.key for r in read.records] == [(0, 0)]


def test_leftover_tmp_files_are_ignored(tmp_path):
    directory = str(tmp_path / "corpus")
    writer = corpus.CorpusWriter(directory, make_test_metadata())
    writer.write([make_record(0)])
    leftover = os.path.join(directory, corpus.part_file_name(0, 1, 1) + ".abc123.tmp")
    with open(leftover, "wb") as handle:
        handle.write(b"half a batch")
    read = corpus.read_corpus(directory)
    assert [r.key for r in read.records] == [(0, 0)] and read.corrupt_files == ()
    assert len(read.part_files) == 1
    # A writer reopening the directory writes its next batch under a fresh name.
    corpus.CorpusWriter(directory, make_test_metadata()).write([make_record(1)])
    assert [r.key for r in corpus.read_corpus(directory).records] == [(0, 0), (1, 0)]
    assert os.path.exists(leftover)


# -- tf.data -----------------------------------------------------------------------

def test_dataset_yields_tokens_and_targets(tmp_path):
    directory = str(tmp_path / "corpus")
    writer = corpus.CorpusWriter(directory, make_test_metadata())
    writer.write([make_record(0), make_record(1, status="failed"), make_record(2)])
    writer.write([make_record(3), make_record(2, replicate=1)])
    dataset = corpus.as_dataset(directory)
    spec = dataset.element_spec
    assert spec["tokens"].shape == TOKENS_SHAPE and spec["tokens"].dtype == tf.int32
    assert spec["val_accuracy"].dtype == tf.float32 and spec["params"].dtype == tf.int64
    assert spec["spec_hash"].dtype == tf.string and spec["replicate"].dtype == tf.int64
    elements = list(dataset.as_numpy_iterator())
    assert [(int(e["child_index"]), int(e["replicate"])) for e in elements] == [(0, 0), (2, 0), (3, 0), (2, 1)]
    for element in elements:
        expected = make_record(int(element["child_index"]), int(element["replicate"]))
        np.testing.assert_array_equal(element["tokens"], np.reshape(expected.tokens, TOKENS_SHAPE))
        assert element["val_accuracy"] == np.float32(expected.val_accuracy)
        assert element["params"] == expected.params and element["flops"] == expected.flops
        assert element["spec_hash"].decode() == expected.spec_hash
    batch = next(iter(dataset.batch(3)))
    assert batch["tokens"].shape == (3,) + TOKENS_SHAPE
    failed = list(corpus.as_dataset(directory, statuses=("failed",)).as_numpy_iterator())
    assert len(failed) == 1 and np.isnan(failed[0]["val_accuracy"])
    assert list(corpus.as_dataset(directory, statuses=("diverged",)).as_numpy_iterator()) == []


def test_dataset_needs_tokens(tmp_path):
    directory = str(tmp_path / "corpus")
    writer = corpus.CorpusWriter(directory, make_test_metadata(tokens_shape=None))
    with pytest.raises(ValueError, match="expected none"):
        writer.write([make_record(0)])
    writer.write([corpus.ChildRecord(**{**make_record(0).to_dict(), "tokens": []})])
    with pytest.raises(ValueError, match="not tokenised"):
        corpus.as_dataset(directory)
    assert len(corpus.read_corpus(directory)) == 1


# -- shards and summary ----------------------------------------------------------------

@pytest.mark.parametrize("num_children, num_shards", [(0, 1), (1, 3), (10, 1), (10, 3), (17, 4)])
def test_shard_indices_are_disjoint_and_covering(num_children, num_shards):
    shards = [corpus.shard_indices(num_children, num_shards, s) for s in range(num_shards)]
    flat = [i for shard in shards for i in shard]
    assert sorted(flat) == list(range(num_children)) and len(flat) == len(set(flat))
    assert shards == [corpus.shard_indices(num_children, num_shards, s) for s in range(num_shards)]


@pytest.mark.parametrize("args, message", [
    ((10, 0, 0), "num_shards must be >= 1"),
    ((10, 3, 3), r"shard_index must be in \[0, 3\)"),
    ((10, 3, -1), "shard_index must be in"),
    ((-1, 3, 0), "num_children must be >= 0"),
    ((10, 2.0, 0), "num_shards must be an integer"),
    ((10, 2, True), "shard_index must be an integer"),
])
def test_shard_indices_rejects_bad_arguments(args, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        corpus.shard_indices(*args)
    if args[1] != 2.0 and args[0] >= 0:  # the writer checks its shard the same way, before writing
        with pytest.raises(ValueError, match=message):
            corpus.CorpusWriter(str(tmp_path / "corpus"), make_test_metadata(), args[2], args[1])
        assert not (tmp_path / "corpus").exists()


def test_summary(tmp_path):
    directory = str(tmp_path / "corpus")
    metadata = make_test_metadata()
    write_shards(directory, metadata, num_shards=2, batch=6)  # all ok, 0..11
    corpus.CorpusWriter(directory, metadata, 2, 3).write(
        [make_record(5, replicate=1), make_record(2, replicate=1, status="failed")])
    summary = corpus.read_corpus(directory).summary()
    teacher_params = metadata["teacher"]["params"]
    assert summary["counts"] == {"ok": 13, "failed": 1, "diverged": 0}
    assert summary["num_records"] == 14 and summary["num_replicates"] == 2
    assert summary["num_children"] == NUM_CHILDREN and summary["num_children_stored"] == NUM_CHILDREN
    assert summary["num_children_missing"] == 0
    assert summary["not_ok"] == [{"child_index": 2, "reason": "failed: loss is nan at step 2",
                                  "replicate": 1, "status": "failed"}]
    assert summary["params"] == {"min": 1000, "median": 1050, "max": 1110}
    assert summary["val_accuracy"]["min"] == pytest.approx(0.5)
    assert summary["val_accuracy"]["max"] == pytest.approx(0.5 + 11 / 64)
    assert summary["teacher_params"] == teacher_params
    ratio = summary["compression_ratio"]
    assert ratio["max"] == pytest.approx(teacher_params / 1000)
    assert ratio["min"] == pytest.approx(teacher_params / 1110)
    assert ratio["min"] <= ratio["p25"] <= ratio["median"] <= ratio["p75"] <= ratio["max"]
    assert summary["num_shards"] == 3 and summary["num_part_files"] == 3
    assert summary["corrupt_files"] == [] and summary["num_duplicates"] == 0
    assert rundir.to_json(summary)  # JSON-ready


def test_empty_corpus_summary(tmp_path):
    directory = str(tmp_path / "corpus")
    corpus.CorpusWriter(directory, make_test_metadata())
    summary = corpus.read_corpus(directory).summary()
    assert summary["num_records"] == 0 and summary["num_children_missing"] == NUM_CHILDREN
    assert summary["val_accuracy"]["median"] is None and summary["compression_ratio"]["median"] is None
    assert list(corpus.as_dataset(directory).as_numpy_iterator()) == []


# -- durability under kill -9 ----------------------------------------------------------

_WRITER_SCRIPT = textwrap.dedent("""
    import sys, time
    from acompress import corpus
    from tests import test_corpus as t

    directory, num_children, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    writer = corpus.CorpusWriter(directory, t.make_test_metadata(num_children), 0, 1)
    todo = [i for i in corpus.shard_indices(num_children, 1, 0) if (i, 0) not in writer.done_keys()]
    print("todo", len(todo), flush=True)
    for start in range(0, len(todo), 3):
        writer.write([t.make_record(i) for i in todo[start:start + 3]])
        time.sleep(pause)
""")


def _run_writer(directory, num_children, pause):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen([sys.executable, "-c", _WRITER_SCRIPT, directory, str(num_children), str(pause)],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_sigkill_mid_run_loses_nothing_visible_and_resume_completes(tmp_path):
    directory = str(tmp_path / "corpus")
    num_children = 300
    process = _run_writer(directory, num_children, pause=0.03)
    deadline = time.time() + 120
    while (not os.path.isdir(directory) or len(part_files(directory)) < 5) and time.time() < deadline:
        assert process.poll() is None, process.communicate()[1].decode()[-2000:]
        time.sleep(0.01)
    assert process.poll() is None, "the writer finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL

    killed = corpus.read_corpus(directory)
    assert killed.corrupt_files == () and killed.duplicates == ()
    stored = [r.child_index for r in killed.records]
    assert 15 <= len(stored) < num_children
    assert stored == list(range(len(stored)))  # batches land in order, whole
    assert all(record == make_record(record.child_index) for record in killed.records)

    process = _run_writer(directory, num_children, pause=0.0)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err.decode()[-2000:]
    assert out.decode().split() == ["todo", str(num_children - len(stored))]
    final = corpus.read_corpus(directory)
    assert final.corrupt_files == () and final.duplicates == ()
    assert [r.key for r in final.records] == [(i, 0) for i in range(num_children)]
    raw = sum(1 for name in part_files(directory)
              for _ in tf.data.TFRecordDataset(os.path.join(directory, name)))
    assert raw == num_children  # every index written exactly once
