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

import json
import os

from acompress.binaries import _cli  # noqa: F401  (quiet TensorFlow before it loads)
from absl import flags
import keras

from acompress import data
from acompress import embedding_training
from acompress import pipeline
from acompress import precision
from acompress import rundir
from acompress import teacher as teacher_lib
from acompress.flags import compress_flags
from acompress.flags import corpus_flags
from acompress.flags import embedding_flags
from acompress.flags import stage_flags

FLAGS = flags.FLAGS
# Its own name: a run directory made stage by stage (generate_corpus writes config.json) can be
# finished by the pipeline.
CONFIG_FILE = "pipeline_config.json"


def define_flags() -> None:
    stage_flags.define_flags("embedding", "compress")


def main(argv) -> None:
    begin = stage_flags.start(FLAGS, argv)
    strategy, output_dir = begin.strategy, begin.output_dir
    data_config, proxy_data_config, teacher_train = begin.data_config, begin.proxy_data_config, begin.teacher_train
    corpus_config = corpus_flags.corpus_config_from_flags(FLAGS)
    model_config = embedding_flags.model_config_from_flags(FLAGS)
    embedding_train = embedding_flags.train_config_from_flags(FLAGS)
    compress_config = compress_flags.config_from_flags(FLAGS)
    policy = precision.resolve(FLAGS.precision)
    corpus_dir = begin.own_path(FLAGS.corpus_dir, "corpus")
    embedding_dir = begin.own_path(FLAGS.embedding_dir, "embedding")
    compress_dir = os.path.join(output_dir, compress_config.directory)
    config = {**begin.base_config("pipeline", FLAGS), "proxy_data": proxy_data_config.to_dict(),
              "corpus": corpus_config.to_dict(), "corpus_dir": corpus_dir, "embedding_dir": embedding_dir,
              "embedding_model": model_config.to_dict(), "embedding_train": embedding_train.to_dict(),
              "precision": policy, "compress": compress_config.to_dict()}
    # Bad data or teacher flags fail before anything is written to the output directory.
    splits = data.load(data_config)
    # Fails early on a bad teacher.
    teacher_lib.resolve(FLAGS.teacher, splits.info.input_shape, splits.info.num_classes,
                        normalisation=splits.info.normalisation)
    rundir.prepare(output_dir, config, overwrite=FLAGS.overwrite, resume=True, config_file=CONFIG_FILE)
    precision.apply(policy)
    keras.utils.set_random_seed(FLAGS.seed)
    stage = pipeline.teacher_stage(output_dir, FLAGS.teacher, splits, data_config, teacher_train, seed=FLAGS.seed,
                                   bn_momentum=FLAGS.bn_momentum, strategy=strategy)
    proxy_splits = splits if proxy_data_config == data_config else data.load(proxy_data_config)
    stored = pipeline.corpus_stage(output_dir, corpus_dir, stage, proxy_splits, proxy_data_config, corpus_config,
                                   seed=FLAGS.seed, title=f"{splits.info.name}: children of {FLAGS.teacher}",
                                   strategy=strategy)
    _, embedding_metrics = pipeline.embedding_stage(output_dir, embedding_dir, stored, model_config,
                                                    embedding_train, seed=FLAGS.seed, precision_policy=policy,
                                                    strategy=strategy)
    # Compression always starts from the saved embedding, so a resumed run (which loads it) and an
    # uninterrupted one (which just trained it) search from the same state: same seed, same result.
    # Seeded first: loading draws the seeds of its noise and dropout layers from the global RNG.
    keras.utils.set_random_seed(FLAGS.seed)
    embedding = pipeline.load_embedding_for(embedding_dir, stored)
    report = pipeline.compress_stage(output_dir, compress_dir, embedding, stored, stage, splits, data_config,
                                     compress_config, seed=FLAGS.seed, proxy_splits=proxy_splits,
                                     resolved_config=config, strategy=strategy)
    summary = pipeline.headline(report)
    summary["embedding"] = embedding_training.headline(embedding_metrics)
    begin.finish()
    print(json.dumps(summary, sort_keys=True, indent=2))


def run() -> None:
    define_flags()
    _cli.run(main)


if __name__ == "__main__":
    run()
