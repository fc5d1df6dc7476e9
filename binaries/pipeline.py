"""Everything, from a teacher and a data set to an exported compressed network.

  acompress-pipeline --flagfile=flags/digits.flags --output_dir=runs/digits

Runs the stages in order, each resumable from its outputs (rerun the same command after
an interruption; a finished stage is loaded, not rerun):
  1. teacher      <output_dir>/teacher/        train (or load) the teacher, test it once
  2. corpus       <output_dir>/corpus/         sample children, train each with the proxy budget
  3. embedding    <output_dir>/embedding/      train the encoder-decoder and its heads
  4. compress     <output_dir>/compressed/     latent search, refinement, finalists, export
Writes <output_dir>/pipeline_config.json (the resolved configuration) and timings.json (seconds per stage);
see acompress-compress for what compressed/ holds. Flags: every group of the stage binaries.
"""

import dataclasses
import json
import os

from acompress.binaries import _cli  # noqa: F401  (quiet TensorFlow before it loads)
from absl import flags
import keras

from acompress import cpu_threads
from acompress import data
from acompress import embedding_training
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
# Its own name: a run directory made stage by stage (generate_corpus writes config.json) can be
# finished by the pipeline.
CONFIG_FILE = "pipeline_config.json"


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
    data_config = data_flags.config_from_flags(FLAGS, FLAGS.seed)
    teacher_train = training_flags.train_config_from_flags(FLAGS, prefix="teacher_")
    corpus_config = corpus_flags.corpus_config_from_flags(FLAGS)
    proxy_data_config = dataclasses.replace(data_config,
                                            train_fraction=data_config.train_fraction * FLAGS.proxy_fraction)
    model_config = embedding_flags.model_config_from_flags(FLAGS)
    embedding_train = embedding_flags.train_config_from_flags(FLAGS)
    compress_config = compress_flags.config_from_flags(FLAGS)
    policy = precision.resolve(FLAGS.precision)
    output_dir = rundir.normalize(FLAGS.output_dir)
    corpus_dir = rundir.normalize(FLAGS.corpus_dir or os.path.join(output_dir, "corpus"))
    embedding_dir = rundir.normalize(FLAGS.embedding_dir or os.path.join(output_dir, "embedding"))
    compress_dir = os.path.join(output_dir, "compressed")
    config = {"binary": "pipeline", "runtime": runtime_flags.runtime_from_flags(FLAGS),
              "data": data_config.to_dict(), "proxy_data": proxy_data_config.to_dict(),
              "teacher": FLAGS.teacher, "teacher_train": teacher_train.to_dict(), "bn_momentum": FLAGS.bn_momentum,
              "corpus": corpus_config.to_dict(), "corpus_dir": corpus_dir, "embedding_dir": embedding_dir,
              "embedding_model": model_config.to_dict(), "embedding_train": embedding_train.to_dict(),
              "precision": policy, "compress": compress_config.to_dict()}
    cpu_threads.configure(FLAGS.intra_op_threads, FLAGS.inter_op_threads)
    # Bad data or teacher flags fail before anything is written to the output directory.
    splits = data.load(data_config)
    teacher_lib.resolve(FLAGS.teacher, splits.info.input_shape, splits.info.num_classes)  # fails early on a bad teacher
    rundir.prepare(output_dir, config, overwrite=FLAGS.overwrite, resume=True, config_file=CONFIG_FILE)
    precision.apply(policy)
    keras.utils.set_random_seed(FLAGS.seed)
    stage = pipeline.teacher_stage(output_dir, FLAGS.teacher, splits, data_config, teacher_train, seed=FLAGS.seed,
                                   bn_momentum=FLAGS.bn_momentum)
    proxy_splits = splits if proxy_data_config == data_config else data.load(proxy_data_config)
    stored = pipeline.corpus_stage(output_dir, corpus_dir, stage, proxy_splits, proxy_data_config, corpus_config,
                                   seed=FLAGS.seed, title=f"{splits.info.name}: children of {FLAGS.teacher}")
    _, embedding_metrics = pipeline.embedding_stage(output_dir, embedding_dir, stored, model_config,
                                                    embedding_train, seed=FLAGS.seed, precision_policy=policy)
    # Compression always starts from the saved embedding, so a resumed run (which loads it) and an
    # uninterrupted one (which just trained it) search from the same state: same seed, same result.
    # Seeded first: loading draws the seeds of its noise and dropout layers from the global RNG.
    keras.utils.set_random_seed(FLAGS.seed)
    embedding = pipeline.load_embedding_for(embedding_dir, stored)
    report = pipeline.compress_stage(output_dir, compress_dir, embedding, stored, stage, splits, data_config,
                                     compress_config, seed=FLAGS.seed, proxy_splits=proxy_splits,
                                     resolved_config=config)
    summary = pipeline.headline(report)
    summary["embedding"] = embedding_training.headline(embedding_metrics)
    print(json.dumps(summary, sort_keys=True, indent=2))


def run() -> None:
    define_flags()
    _cli.run(main)


if __name__ == "__main__":
    run()
