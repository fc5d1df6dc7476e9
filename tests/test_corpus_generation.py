"""Corpus generation: records match the sampled children, replicates, resume, shards, pinned metadata."""

import contextlib
import dataclasses
import os

import keras
import pytest
import tensorflow as tf

from acompress import archspec
from acompress import child_training
from acompress import corpus
from acompress import corpus_generation
from acompress import data
from acompress import tokens

SEED = 0
DATA = data.DataConfig(max_examples=320)  # digits, a stratified 320-example proxy training split
TEACHER = archspec.ArchSpec([archspec.conv_bn_act(32), archspec.conv_bn_act(32), archspec.maxpool(),
                             archspec.conv_bn_act(64), archspec.gap()])
CONFIG = corpus_generation.CorpusConfig(num_children=6, replicate_fraction=0.34,
                                        proxy=child_training.ProxyConfig(epochs=1, pack=3))
REPLICATED = [0, 2, 3]  # corpus_generation.replicated_indices(6, 0.34, SEED): ceil(0.34 * 6) = 3 children


@pytest.fixture(scope="module")
def splits():
    return data.load(DATA)


@contextlib.contextmanager
def spying():
    """Records every train_children call (indices, replicate) and the type of data it was given."""
    calls = {"train": [], "search_types": []}
    real_train = child_training.train_children

    def train_children(specs, indices, search, *args, replicate=0, **kwargs):
        calls["train"].append((list(indices), replicate))
        calls["search_types"].append(type(search))
        return real_train(specs, indices, search, *args, replicate=replicate, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(child_training, "train_children", train_children)
        yield calls


def generate(corpus_dir, splits, config=CONFIG, seed=SEED, global_seed=0):
    # The TF global seed is fixed first: the training pipeline's shuffle depends on it.
    keras.utils.set_random_seed(global_seed)
    return corpus_generation.generate(corpus_dir, TEACHER, splits.for_search(), DATA, config, seed=seed).summary()


def part_files(directory):
    return sorted(name for name in os.listdir(directory) if name.endswith(".tfrecord"))


def expected_keys(replicated=REPLICATED, num_children=6):
    return sorted([(i, 0) for i in range(num_children)] + [(i, 1) for i in replicated])


@pytest.fixture(scope="module")
def generated(splits, tmp_path_factory):
    """One corpus generated, then generated again (a resume with nothing left to do)."""
    directory = str(tmp_path_factory.mktemp("generated") / "corpus")
    with spying() as first_calls:
        first = generate(directory, splits)
    files = part_files(directory)
    mtimes = {name: os.stat(os.path.join(directory, name)).st_mtime_ns for name in files}
    with spying() as second_calls:
        second = generate(directory, splits)
    return dict(directory=directory, first=first, first_calls=first_calls, files=files, mtimes=mtimes,
                second=second, second_calls=second_calls)


def test_records_match_the_sampled_children(generated, splits):
    info = splits.info
    space = corpus_generation.search_space_for(TEACHER)
    children = corpus_generation.sample(TEACHER, info, CONFIG, space, SEED)
    assert len(children) == 6 and len({c.hash for c in children}) == 6
    tokenizer = tokens.Tokenizer(space)
    stored = corpus.read_corpus(generated["directory"])
    assert [r.key for r in stored.records] == expected_keys()
    assert stored.duplicates == () and stored.corrupt_files == ()
    for record in stored.records:
        child = children[record.child_index]
        assert record.spec_hash == child.hash and record.spec() == child
        assert list(record.tokens) == tokenizer.encode(child).ravel().tolist()
        assert record.params == child.count_params(info.input_shape, info.num_classes)
        assert record.flops == child.count_flops(info.input_shape, info.num_classes)
        assert record.params < TEACHER.count_params(info.input_shape, info.num_classes)
        assert record.seed == child_training.child_seed(SEED, record.child_index, record.replicate)
        assert record.status == child_training.OK and record.epochs == 1
        assert 0.0 <= record.val_accuracy <= 1.0
    metadata = stored.metadata
    # A scratch recipe pins what corpora made before inheritance pinned (no init / importance fields).
    pinned_proxy = {k: v for k, v in CONFIG.proxy.to_dict().items()
                    if k not in ("pack", "graph_optimizer") + child_training.INHERIT_FIELDS
                    + child_training.SUPERNET_FIELDS}
    assert metadata["proxy"] == pinned_proxy and metadata["seed"] == SEED
    assert metadata["num_children"] == 6 and metadata["extra"] == {"replicate_fraction": 0.34}
    assert metadata["teacher"]["hash"] == TEACHER.hash
    assert metadata["dataset"]["config"] == {k: v for k, v in DATA.to_dict().items()
                                             if k not in ("data_dir", "download", "cache", "cache_dir")}
    assert metadata["tokens_shape"] == list(tokenizer.shape)


def test_replicates_are_the_replicated_indices(generated):
    assert corpus_generation.replicated_indices(6, 0.34, SEED) == REPLICATED
    stored = corpus.read_corpus(generated["directory"])
    replicates = [r for r in stored.records if r.replicate == 1]
    assert [r.child_index for r in replicates] == REPLICATED
    firsts = {r.child_index: r for r in stored.records if r.replicate == 0}
    for replicate in replicates:  # the same child, trained again with another seed
        assert replicate.spec_hash == firsts[replicate.child_index].spec_hash
        assert replicate.seed != firsts[replicate.child_index].seed
    summary = generated["first"]
    assert summary["num_records"] == 9 and summary["num_replicates"] == 3
    assert summary["num_children_stored"] == 6 and summary["num_children_missing"] == 0
    assert summary["counts"] == {"ok": 9, "failed": 0, "diverged": 0}
    # First trainings first, then the replicates; one part file per packed group of 3.
    assert generated["first_calls"]["train"] == [([0, 1, 2, 3, 4, 5], 0), (REPLICATED, 1)]
    assert generated["files"] == [corpus.part_file_name(0, 1, part) for part in range(3)]


def test_second_call_resumes_with_nothing_to_do(generated):
    assert generated["second_calls"]["train"] == []
    assert part_files(generated["directory"]) == generated["files"]
    assert {name: os.stat(os.path.join(generated["directory"], name)).st_mtime_ns
            for name in generated["files"]} == generated["mtimes"]
    assert generated["second"] == generated["first"]


def test_search_code_only_sees_search_splits(generated, splits):
    assert set(generated["first_calls"]["search_types"]) == {data.SearchSplits}
    assert not hasattr(splits.for_search(), "x_test")


def test_generate_refuses_full_splits(splits, tmp_path):
    directory = str(tmp_path / "corpus")
    with spying() as calls, pytest.raises(TypeError, match=r"SearchSplits \(Splits.for_search\(\)\), got Splits"):
        corpus_generation.generate(directory, TEACHER, splits, DATA, CONFIG, seed=SEED)
    assert calls["train"] == [] and calls["search_types"] == []
    assert not os.path.exists(directory)


@pytest.mark.parametrize("change, field", [
    (dict(proxy=child_training.ProxyConfig(epochs=2, pack=3)), r"^proxy\.epochs: stored 1, given 2"),
    (dict(proxy=child_training.ProxyConfig(epochs=1, pack=3, learning_rate=0.01)),
     r"^proxy\.learning_rate: stored 0\.003, given 0\.01"),
    (dict(replicate_fraction=0.5), r"^extra\.replicate_fraction: stored 0\.34, given 0\.5"),
    (dict(num_children=7), r"^num_children: stored 6, given 7"),
])
def test_changed_config_against_an_existing_corpus_names_the_field(generated, splits, change, field):
    config = dataclasses.replace(CONFIG, **change)
    with spying() as calls, pytest.raises(corpus.MetadataMismatchError, match=field):
        generate(generated["directory"], splits, config=config)
    assert calls["train"] == []
    assert part_files(generated["directory"]) == generated["files"]


def test_changed_seed_against_an_existing_corpus_names_the_field(generated, splits):
    with pytest.raises(corpus.MetadataMismatchError, match=r"^seed: stored 0, given 1"):
        generate(generated["directory"], splits, seed=1)


@pytest.mark.slow
def test_resume_after_an_interrupted_run_trains_only_the_rest(splits, tmp_path):
    directory = str(tmp_path / "corpus")

    class Interrupted(Exception):
        pass

    real_train = child_training.train_children

    def stop_after_first_group(*args, on_result, **kwargs):
        def store_then_stop(results):
            on_result(results)
            raise Interrupted

        return real_train(*args, on_result=store_then_stop, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(child_training, "train_children", stop_after_first_group)
        with pytest.raises(Interrupted):
            generate(directory, splits)
    assert [r.key for r in corpus.read_corpus(directory).records] == [(0, 0), (1, 0), (2, 0)]
    with spying() as calls:
        summary = generate(directory, splits)
    assert calls["train"] == [([3, 4, 5], 0), (REPLICATED, 1)]
    stored = corpus.read_corpus(directory)
    assert [r.key for r in stored.records] == expected_keys()
    assert stored.duplicates == () and summary["num_children_missing"] == 0 and summary["num_records"] == 9


# -- shards ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sharded(splits, tmp_path_factory):
    """The corpus of `generated`, made by two shards writing into one directory."""
    directory = str(tmp_path_factory.mktemp("sharded") / "corpus")
    summaries, calls = [], []
    for shard in (0, 1):
        with spying() as shard_calls:
            summaries.append(generate(directory, splits, dataclasses.replace(CONFIG, num_shards=2, shard_index=shard)))
        calls.append(shard_calls["train"])
    return dict(directory=directory, summaries=summaries, calls=calls)


@pytest.mark.slow
def test_two_shards_form_the_complete_corpus_exactly_once(sharded, generated):
    # Shard i trains the children with index % 2 == i, and the replicates among them.
    assert sharded["calls"] == [[([0, 2, 4], 0), ([0, 2], 1)], [([1, 3, 5], 0), ([3], 1)]]
    assert sharded["summaries"][0]["num_children_missing"] == 3  # after shard 0 alone
    stored = corpus.read_corpus(sharded["directory"])
    assert [r.key for r in stored.records] == expected_keys()
    assert stored.duplicates == () and stored.corrupt_files == ()
    summary = sharded["summaries"][1]
    assert summary["num_shards"] == 2 and summary["num_children_missing"] == 0 and summary["num_records"] == 9
    for name in part_files(sharded["directory"]):  # each part file holds its own shard's children
        shard = int(name.split("-")[1])
        raw = tf.data.TFRecordDataset(os.path.join(sharded["directory"], name))
        assert {corpus.from_example(r.numpy()).child_index % 2 for r in raw} == {shard}
    # The same children with the same seeds as the one-process corpus, under the same metadata.
    single = corpus.read_corpus(generated["directory"])
    by_key = {r.key: r for r in single.records}
    for record in stored.records:
        expected = by_key[record.key]
        assert (record.spec_hash, record.seed, record.params, record.tokens) == \
            (expected.spec_hash, expected.seed, expected.params, expected.tokens)
    unpinned = set(corpus.UNPINNED_KEYS)
    assert {k: v for k, v in stored.metadata.items() if k not in unpinned} == \
        {k: v for k, v in single.metadata.items() if k not in unpinned}


@pytest.mark.slow
def test_sharding_does_not_change_the_accuracies(sharded, generated):
    single = {r.key: r.val_accuracy for r in corpus.read_corpus(generated["directory"]).records}
    assert {r.key: r.val_accuracy for r in corpus.read_corpus(sharded["directory"]).records} == single


@pytest.mark.slow
def test_generate_does_not_depend_on_the_global_seed(generated, splits, tmp_path):
    directory = str(tmp_path / "corpus")
    generate(directory, splits, global_seed=1234)
    single = {r.key: r.val_accuracy for r in corpus.read_corpus(generated["directory"]).records}
    assert {r.key: r.val_accuracy for r in corpus.read_corpus(directory).records} == single


# -- pure helpers ------------------------------------------------------------------------

def test_todo_partitions_the_work_between_shards(splits):
    children = corpus_generation.sample(TEACHER, splits.info, CONFIG, corpus_generation.search_space_for(TEACHER),
                                        SEED)
    everything = corpus_generation.todo(children, CONFIG, set(), SEED)
    assert everything == [(i, 0) for i in range(6)] + [(i, 1) for i in REPLICATED]
    shards = [corpus_generation.todo(children, dataclasses.replace(CONFIG, num_shards=3, shard_index=s), set(), SEED)
              for s in range(3)]
    flat = [key for shard in shards for key in shard]
    assert sorted(flat) == sorted(everything) and len(flat) == len(set(flat))
    assert corpus_generation.todo(children, CONFIG, {(0, 0), (2, 1), (5, 0)}, SEED) == \
        [(1, 0), (2, 0), (3, 0), (4, 0), (0, 1), (3, 1)]


def test_replicated_indices():
    assert corpus_generation.replicated_indices(10, 0.0, 3) == []
    assert corpus_generation.replicated_indices(10, 1.0, 3) == list(range(10))
    picked = corpus_generation.replicated_indices(100, 0.101, 3)
    assert len(picked) == 11 and picked == sorted(set(picked)) and all(0 <= i < 100 for i in picked)
    assert picked == corpus_generation.replicated_indices(100, 0.101, 3)
    assert picked != corpus_generation.replicated_indices(100, 0.101, 4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_children=0), "num_children must be >= 1"),
    (dict(replicate_fraction=1.5), r"replicate_fraction must be in \[0, 1\]"),
    (dict(num_shards=2, shard_index=2), r"shard_index must be in \[0, 2\)"),
    (dict(num_shards=0), "num_shards must be >= 1"),
])
def test_corpus_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        corpus_generation.CorpusConfig(**kwargs)


def test_metadata_does_not_pin_packing_or_data_location(splits):
    info = splits.info
    space = corpus_generation.search_space_for(TEACHER)
    base = corpus_generation.make_metadata(TEACHER, DATA, info, CONFIG, space, SEED)
    repacked = dataclasses.replace(CONFIG, proxy=dataclasses.replace(CONFIG.proxy, pack=CONFIG.proxy.pack + 2,
                                                                      graph_optimizer=True))
    elsewhere = dataclasses.replace(DATA, data_dir="/somewhere/else", cache=True)
    assert corpus_generation.make_metadata(TEACHER, elsewhere, info, repacked, space, SEED) == base
    retrained = dataclasses.replace(CONFIG, proxy=dataclasses.replace(CONFIG.proxy, epochs=CONFIG.proxy.epochs + 1))
    assert corpus_generation.make_metadata(TEACHER, DATA, info, retrained, space, SEED) != base


@pytest.mark.slow  # three worker starts; .ci/run runs it
def test_worker_processes_store_the_same_corpus(generated, splits, tmp_path):
    """--groups_per_worker: every group in a worker process (replaced after each group), same records."""
    directory = str(tmp_path / "corpus")
    keras.utils.set_random_seed(0)
    config = dataclasses.replace(CONFIG, groups_per_worker=1)
    in_workers = corpus_generation.generate(directory, TEACHER, splits.for_search(), DATA, config, seed=SEED)
    in_process = corpus.read_corpus(generated["directory"])

    def by_key(stored):
        return {(r.child_index, r.replicate): (r.spec_hash, r.status, r.val_accuracy, r.seed) for r in stored.records}

    assert by_key(in_workers) == by_key(in_process) and len(by_key(in_workers)) == 9
    # Not pinned: a corpus made in workers resumes in this process and the other way round.
    assert in_workers.metadata["proxy"] == in_process.metadata["proxy"]
