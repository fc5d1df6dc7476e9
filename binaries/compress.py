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

Ablations (--ablation=no_embedding: finalists picked from the corpus children by the same ladder;
--ablation=no_refinement: one search round) write <output_dir>/compressed_<ablation>/ instead, beside
the full method's results, from the same teacher, corpus and embedding:
  acompress-compress --flagfile=flags/digits.flags --output_dir=runs/digits --ablation=no_embedding
"""

import json
import os

from acompress.binaries import _cli  # noqa: F401  (quiet TensorFlow before it loads)
from absl import flags
import keras

from acompress import corpus
from acompress import corpus_generation
from acompress import data
from acompress import pipeline
from acompress import precision
from acompress import rundir
from acompress import teacher as teacher_lib
from acompress.flags import compress_flags
from acompress.flags import stage_flags

FLAGS = flags.FLAGS


def define_flags() -> None:
    stage_flags.define_flags("embedding", "compress")


def main(argv) -> None:
    begin = stage_flags.start(FLAGS, argv)
    strategy, output_dir = begin.strategy, begin.output_dir
    data_config, proxy_data_config, teacher_train = begin.data_config, begin.proxy_data_config, begin.teacher_train
    # The corpus and the embedding are inputs every worker reads; the teacher stage and compressed/
    # are this process' own outputs.
    corpus_dir = begin.shared_path(FLAGS.corpus_dir, "corpus")
    embedding_dir = begin.shared_path(FLAGS.embedding_dir, "embedding")
    compress_config = compress_flags.config_from_flags(FLAGS)
    compress_dir = os.path.join(output_dir, compress_config.directory)
    config = {**begin.base_config("compress", FLAGS), "corpus_dir": corpus_dir, "embedding_dir": embedding_dir,
              "compress": compress_config.to_dict()}
    stored = corpus.read_corpus(corpus_dir)
    # Bad teacher or data flags, or a corpus of other data or another teacher, fail before anything is written.
    splits = data.load(data_config)
    teacher = teacher_lib.resolve(FLAGS.teacher, splits.info.input_shape, splits.info.num_classes,
                                  normalisation=splits.info.normalisation)
    proxy_info = splits.info if proxy_data_config == data_config else data.load(proxy_data_config).info
    corpus_generation.check_source(stored, teacher.spec, proxy_data_config, proxy_info)
    # Seeded first, as the pipeline does: loading draws the seeds of its noise and dropout layers.
    keras.utils.set_random_seed(FLAGS.seed)
    embedding = pipeline.load_embedding_for(embedding_dir, stored)
    precision.apply(FLAGS.precision)
    stage = pipeline.teacher_stage(output_dir, FLAGS.teacher, splits, data_config, teacher_train, seed=FLAGS.seed,
                                   bn_momentum=FLAGS.bn_momentum, strategy=strategy)
    if not FLAGS.overwrite:  # results of other settings (the pipeline's, say) are not replaced silently
        pipeline.check_compress_dir(compress_dir, embedding, stored, stage, compress_config, seed=FLAGS.seed)
    rundir.prepare(compress_dir, config, overwrite=FLAGS.overwrite, resume=True)
    report = pipeline.compress_stage(output_dir, compress_dir, embedding, stored, stage, splits, data_config,
                                     compress_config, seed=FLAGS.seed, resolved_config=config, strategy=strategy)
    begin.finish()
    print(json.dumps(pipeline.headline(report), sort_keys=True, indent=2))


def run() -> None:
    define_flags()
    _cli.run(main)


if __name__ == "__main__":
    run()
