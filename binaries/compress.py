"""Compresses the teacher with a trained embedding: latent search, finalists, export.

  acompress-compress --flagfile=flags/digits.flags --output_dir=runs/digits [--target_ratio=40]

Needs <output_dir>/teacher, <output_dir>/corpus (or --corpus_dir) and <output_dir>/embedding (or
--embedding_dir), as acompress-generate-corpus and acompress-train-embedding leave them (the teacher
stage is reused when its settings match, else trained). A corpus made from other data or another
teacher than the flags say is refused, and so is a compressed/ holding results made with other
settings (--overwrite replaces them). Writes <output_dir>/compressed/:
  config.json            the resolved configuration
  model.keras            the chosen network (takes raw inputs: normalisation is its first layer)
  saved_model/           the same, as a TensorFlow SavedModel (model.export); reload checked
  report.json            teacher vs. chosen (params, FLOPs, test accuracy, ratio), every finalist
                         (predicted vs. achieved), searches, budget, timings, config
  report.png             corpus, candidates, finalists, chosen and teacher: accuracy vs. parameters
  candidates.json        every candidate found (exact params, FLOPs, predicted accuracy)
  finalists.jsonl        trained finalists (a rerun reuses them)
"""

import dataclasses
import json
import os

from acompress.binaries import _cli  # noqa: F401  (quiet TensorFlow before it loads)
from absl import flags
import keras

from acompress import corpus
from acompress import corpus_generation
from acompress import cpu_threads
from acompress import data
from acompress import pipeline
from acompress import precision
from acompress import rundir
from acompress import teacher as teacher_lib
from acompress.flags import compress_flags
from acompress.flags import corpus_flags
from acompress.flags import data_flags
from acompress.flags import embedding_flags
from acompress.flags import runtime_flags
from acompress.flags import teacher_flags
from acompress.flags import training_flags

FLAGS = flags.FLAGS


def define_flags() -> None:
    runtime_flags.define_flags()
    data_flags.define_flags()
    teacher_flags.define_flags()
    corpus_flags.define_flags()
    embedding_flags.define_flags()
    compress_flags.define_flags()
    flags.mark_flag_as_required("output_dir")


def main(argv) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    output_dir = rundir.normalize(FLAGS.output_dir)
    corpus_dir = rundir.normalize(FLAGS.corpus_dir or os.path.join(output_dir, "corpus"))
    embedding_dir = rundir.normalize(FLAGS.embedding_dir or os.path.join(output_dir, "embedding"))
    compress_dir = os.path.join(output_dir, "compressed")
    data_config = data_flags.config_from_flags(FLAGS, FLAGS.seed)
    compress_config = compress_flags.config_from_flags(FLAGS)
    teacher_train = training_flags.train_config_from_flags(FLAGS, prefix="teacher_")
    config = {"binary": "compress", "runtime": runtime_flags.runtime_from_flags(FLAGS), "data": data_config.to_dict(),
              "teacher": FLAGS.teacher, "teacher_train": teacher_train.to_dict(), "bn_momentum": FLAGS.bn_momentum,
              "corpus_dir": corpus_dir, "embedding_dir": embedding_dir, "compress": compress_config.to_dict()}
    cpu_threads.configure(FLAGS.intra_op_threads, FLAGS.inter_op_threads)
    stored = corpus.read_corpus(corpus_dir)
    # Bad teacher or data flags, or a corpus of other data or another teacher, fail before anything is written.
    splits = data.load(data_config)
    teacher = teacher_lib.resolve(FLAGS.teacher, splits.info.input_shape, splits.info.num_classes)
    proxy_data_config = dataclasses.replace(data_config,
                                            train_fraction=data_config.train_fraction * FLAGS.proxy_fraction)
    proxy_info = splits.info if proxy_data_config == data_config else data.load(proxy_data_config).info
    corpus_generation.check_source(stored, teacher.spec, proxy_data_config, proxy_info)
    # Seeded first, as the pipeline does: loading draws the seeds of its noise and dropout layers.
    keras.utils.set_random_seed(FLAGS.seed)
    embedding = pipeline.load_embedding_for(embedding_dir, stored)
    precision.apply(FLAGS.precision)
    stage = pipeline.teacher_stage(output_dir, FLAGS.teacher, splits, data_config, teacher_train, seed=FLAGS.seed,
                                   bn_momentum=FLAGS.bn_momentum)
    if not FLAGS.overwrite:  # results of other settings (the pipeline's, say) are not replaced silently
        pipeline.check_compress_dir(compress_dir, embedding, stored, stage, compress_config, seed=FLAGS.seed)
    rundir.prepare(compress_dir, config, overwrite=FLAGS.overwrite, resume=True)
    report = pipeline.compress_stage(output_dir, compress_dir, embedding, stored, stage, splits, data_config,
                                     compress_config, seed=FLAGS.seed, resolved_config=config)
    print(json.dumps(pipeline.headline(report), sort_keys=True, indent=2))


def run() -> None:
    define_flags()
    _cli.run(main)


if __name__ == "__main__":
    run()
