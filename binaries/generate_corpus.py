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

import os

from acompress.binaries import _cli  # noqa: F401  (quiet TensorFlow before it loads)
from absl import flags
import keras

from acompress import data
from acompress import pipeline
from acompress import precision
from acompress import rundir
from acompress import teacher as teacher_lib
from acompress.flags import corpus_flags
from acompress.flags import stage_flags

FLAGS = flags.FLAGS


def define_flags() -> None:
    stage_flags.define_flags()


def main(argv) -> None:
    begin = stage_flags.start(FLAGS, argv)
    strategy, output_dir = begin.strategy, begin.output_dir
    data_config, proxy_data_config, teacher_train = begin.data_config, begin.proxy_data_config, begin.teacher_train
    corpus_config = corpus_flags.corpus_config_from_flags(FLAGS)
    corpus_dir = begin.own_path(FLAGS.corpus_dir, "corpus")
    config = {**begin.base_config("generate_corpus", FLAGS), "proxy_data": proxy_data_config.to_dict(),
              "corpus": corpus_config.to_dict(), "corpus_dir": corpus_dir}
    # Bad data or teacher flags fail before anything is written to the output directory.
    splits = data.load(data_config)
    info = splits.info
    # Fails early on a bad teacher.
    teacher_lib.resolve(FLAGS.teacher, info.input_shape, info.num_classes, normalisation=info.normalisation)
    rundir.prepare(output_dir, config, overwrite=FLAGS.overwrite, resume=True)
    precision.apply(FLAGS.precision)
    keras.utils.set_random_seed(FLAGS.seed)
    stage = pipeline.teacher_stage(output_dir, FLAGS.teacher, splits, data_config, teacher_train, seed=FLAGS.seed,
                                   bn_momentum=FLAGS.bn_momentum, strategy=strategy)
    proxy_splits = splits if proxy_data_config == data_config else data.load(proxy_data_config)
    pipeline.corpus_stage(output_dir, corpus_dir, stage, proxy_splits, proxy_data_config, corpus_config,
                          seed=FLAGS.seed, title=f"{info.name}: children of {FLAGS.teacher}", strategy=strategy)
    begin.finish()
    print(rundir.to_json(rundir.read_json(os.path.join(output_dir, "corpus_summary.json"))))


def run() -> None:
    define_flags()
    _cli.run(main)


if __name__ == "__main__":
    run()
