"""Generates the child corpus of a teacher: trains the teacher, samples children, trains them.

  acompress-generate-corpus --flagfile=flags/digits.flags --output_dir=runs/digits

Rerunning the same command resumes where it stopped (only the children in flight are
lost); --overwrite starts over in --output_dir (an external --corpus_dir, which other
shards may share, is never deleted: remove it yourself to retrain its children). Outputs in <output_dir>:
  config.json            the resolved configuration
  teacher/               teacher.keras, teacher_spec.json, metrics.json (test accuracy)
  corpus/                metadata.json + TFRecord part files (or --corpus_dir)
  corpus_summary.json    counts, failures, accuracy and compression-ratio spread
  corpus.png             validation accuracy vs. parameters, teacher marked

Many machines: give each the same --corpus_dir (e.g. a bucket), --num_shards=N and its own
--shard_index; together the shards form one corpus.
"""

import dataclasses
import os

from acompress.binaries import _cli  # noqa: F401  (quiet TensorFlow before it loads)
from absl import flags
import keras

from acompress import cpu_threads
from acompress import data
from acompress import pipeline
from acompress import precision
from acompress import rundir
from acompress import teacher as teacher_lib
from acompress.flags import corpus_flags
from acompress.flags import data_flags
from acompress.flags import runtime_flags
from acompress.flags import teacher_flags
from acompress.flags import training_flags

FLAGS = flags.FLAGS


def define_flags() -> None:
    runtime_flags.define_flags()
    data_flags.define_flags()
    teacher_flags.define_flags()
    corpus_flags.define_flags()
    flags.mark_flag_as_required("output_dir")


def main(argv) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    data_config = data_flags.config_from_flags(FLAGS, FLAGS.seed)
    teacher_train = training_flags.train_config_from_flags(FLAGS, prefix="teacher_")
    corpus_config = corpus_flags.corpus_config_from_flags(FLAGS)
    proxy_data_config = dataclasses.replace(data_config,
                                            train_fraction=data_config.train_fraction * FLAGS.proxy_fraction)
    output_dir = rundir.normalize(FLAGS.output_dir)
    corpus_dir = rundir.normalize(FLAGS.corpus_dir or os.path.join(output_dir, "corpus"))
    config = {"binary": "generate_corpus", "runtime": runtime_flags.runtime_from_flags(FLAGS),
              "data": data_config.to_dict(), "proxy_data": proxy_data_config.to_dict(),
              "teacher": FLAGS.teacher, "teacher_train": teacher_train.to_dict(), "bn_momentum": FLAGS.bn_momentum,
              "corpus": corpus_config.to_dict(), "corpus_dir": corpus_dir}
    cpu_threads.configure(FLAGS.intra_op_threads, FLAGS.inter_op_threads)
    # Bad data or teacher flags fail before anything is written to the output directory.
    splits = data.load(data_config)
    info = splits.info
    teacher_lib.resolve(FLAGS.teacher, info.input_shape, info.num_classes)  # fails early on a bad teacher
    rundir.prepare(output_dir, config, overwrite=FLAGS.overwrite, resume=True)
    precision.apply(FLAGS.precision)
    keras.utils.set_random_seed(FLAGS.seed)
    stage = pipeline.teacher_stage(output_dir, FLAGS.teacher, splits, data_config, teacher_train, seed=FLAGS.seed,
                                   bn_momentum=FLAGS.bn_momentum)
    proxy_splits = splits if proxy_data_config == data_config else data.load(proxy_data_config)
    pipeline.corpus_stage(output_dir, corpus_dir, stage, proxy_splits, proxy_data_config, corpus_config,
                          seed=FLAGS.seed, title=f"{info.name}: children of {FLAGS.teacher}")
    print(rundir.to_json(rundir.read_json(os.path.join(output_dir, "corpus_summary.json"))))


def run() -> None:
    define_flags()
    _cli.run(main)


if __name__ == "__main__":
    run()
