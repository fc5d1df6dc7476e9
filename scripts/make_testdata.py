#!/usr/bin/env python3
"""Regenerates testdata/: example specs and a small real corpus of digits children.

  PYTHONPATH=. python scripts/make_testdata.py     # about a minute on 2 CPU cores

Everything is deterministic for the seed below, up to floating-point differences
between machines in the children's accuracies.
"""

import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from acompress import archspec  # noqa: E402
from acompress import child_training  # noqa: E402
from acompress import corpus_generation  # noqa: E402
from acompress import data  # noqa: E402
from acompress import sampler  # noqa: E402
from acompress import zoo  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTDATA = os.path.join(ROOT, "testdata")
SEED = 0
NUM_CHILDREN = 48


def write_specs() -> None:
    specs_dir = os.path.join(TESTDATA, "specs")
    os.makedirs(specs_dir, exist_ok=True)
    archspec.save(zoo.get("digits_cnn", (8, 8, 1), 10), os.path.join(specs_dir, "digits_cnn.json"))
    archspec.save(zoo.get("resnet18", (32, 32, 3), 10), os.path.join(specs_dir, "resnet18_cifar.json"))
    small = archspec.ArchSpec([archspec.conv_bn_act(16), archspec.maxpool(), archspec.conv_bn_act(32),
                               archspec.gap(), archspec.dense(32), archspec.act("relu"), archspec.dropout(0.2)])
    archspec.save(small, os.path.join(specs_dir, "small_cnn.json"))


def write_corpus() -> None:
    corpus_dir = os.path.join(TESTDATA, "digits_corpus")
    shutil.rmtree(corpus_dir, ignore_errors=True)
    keras.utils.set_random_seed(SEED)
    data_config = data.DataConfig(seed=SEED)
    splits = data.load(data_config)
    teacher = zoo.get("digits_cnn", splits.info.input_shape, splits.info.num_classes)
    config = corpus_generation.CorpusConfig(
        num_children=NUM_CHILDREN, replicate_fraction=0.25, sampler=sampler.SamplerConfig(),
        proxy=child_training.ProxyConfig(epochs=2, pack=8))
    summary = corpus_generation.generate(corpus_dir, teacher, splits.for_search(), data_config, config,
                                         seed=SEED).summary()
    print(f"corpus: {summary['num_records']} records, counts {summary['counts']}")


if __name__ == "__main__":
    write_specs()
    write_corpus()
