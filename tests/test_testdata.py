"""The fixtures in testdata/ still read with the current code (regenerate: scripts/make_testdata.py)."""

import os

import numpy as np

from acompress import archspec
from acompress import corpus
from acompress import search_space
from acompress import tokens
from acompress import zoo

TESTDATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "testdata")


def test_specs_load_and_match_the_zoo():
    assert archspec.load(os.path.join(TESTDATA, "specs", "digits_cnn.json")) == zoo.get("digits_cnn", (8, 8, 1), 10)
    assert archspec.load(os.path.join(TESTDATA, "specs", "resnet18_cifar.json")) == zoo.get("resnet18",
                                                                                             (32, 32, 3), 10)
    assert archspec.load(os.path.join(TESTDATA, "specs", "small_cnn.json")).count_params((8, 8, 1), 10) > 0


def test_small_corpus_is_complete_and_consistent():
    stored = corpus.read_corpus(os.path.join(TESTDATA, "digits_corpus"))
    summary = stored.summary()
    assert summary["num_children_missing"] == 0 and not stored.corrupt_files
    assert summary["counts"]["ok"] == len(stored) == 60 and summary["num_replicates"] == 12
    space = search_space.SearchSpace.from_dict(stored.metadata["search_space"]["config"])
    tokenizer = tokens.Tokenizer(space)
    decoded = tokenizer.decode_batch(stored.tokens)
    assert [spec.to_json() for spec in decoded] == [r.spec_json for r in stored.records]
    teacher = archspec.ArchSpec.from_dict(stored.metadata["teacher"]["spec"])
    assert all(p < teacher.count_params((8, 8, 1), 10) for p in stored.params)
    # A 2-epoch proxy is short, but the corpus is far above chance (0.1) on average.
    assert np.median(stored.val_accuracy) > 0.5
