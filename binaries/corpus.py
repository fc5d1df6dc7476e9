"""Inspects a corpus: counts, failed children, accuracy and parameter ranges, shards, metadata.

  acompress-corpus --corpus_dir=runs/digits/corpus [--metadata]

Prints the summary as JSON (sorted keys).
"""

import json

from acompress.binaries import _cli  # noqa: F401  (quiet TensorFlow before it loads)
from absl import flags

from acompress import corpus

FLAGS = flags.FLAGS


def define_flags() -> None:
    if "corpus_dir" not in FLAGS:
        flags.DEFINE_string("corpus_dir", None, "The corpus directory to inspect.")
    if "metadata" not in FLAGS:
        flags.DEFINE_bool("metadata", False, "Also print the corpus metadata.")
    flags.mark_flag_as_required("corpus_dir")


def main(argv) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    stored = corpus.read_corpus(FLAGS.corpus_dir)
    summary = stored.summary()
    print(json.dumps(summary, sort_keys=True, indent=2))
    if FLAGS.metadata:
        print(json.dumps(stored.metadata, sort_keys=True, indent=2))


def run() -> None:
    define_flags()
    _cli.run(main)


if __name__ == "__main__":
    run()
