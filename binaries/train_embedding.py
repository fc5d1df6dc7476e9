"""Trains the architecture embedding on a corpus and reports how well it reconstructs and predicts.

  acompress-train-embedding --flagfile=flags/digits.flags --output_dir=runs/digits

Reads <output_dir>/corpus (or --corpus_dir), writes <output_dir>/embedding (or --embedding_dir):
  config.json            the resolved configuration
  embedding.keras        the model (encoder, decoder, predictor); embedding.json: tokenizer,
                         data shape, target normalisation, model config
  metrics.json           held-out reconstruction, validity, accuracy/size heads vs. references
  tensorboard/           loss scalars per epoch (tensorboard --logdir <embedding_dir>/tensorboard)
  backup/                the last finished epoch while training (a killed run resumes from it)

Accepts the same flagfile as acompress-generate-corpus (it defines the same flag groups).
Rerunning with the same corpus and flags reuses the trained embedding.
"""

import json

from acompress.binaries import _cli  # noqa: F401  (quiet TensorFlow before it loads)
from absl import flags

from acompress import corpus
from acompress import embedding_training
from acompress import precision
from acompress import rundir
from acompress.flags import embedding_flags
from acompress.flags import runtime_flags
from acompress.flags import stage_flags

FLAGS = flags.FLAGS


def define_flags() -> None:
    stage_flags.define_flags("embedding")


def main(argv) -> None:
    begin = stage_flags.start(FLAGS, argv)
    strategy = begin.strategy
    corpus_dir = begin.shared_path(FLAGS.corpus_dir, "corpus")  # read by every worker
    embedding_dir = begin.own_path(FLAGS.embedding_dir, "embedding")
    model_config = embedding_flags.model_config_from_flags(FLAGS)
    train_config = embedding_flags.train_config_from_flags(FLAGS)
    policy = precision.resolve(FLAGS.precision)
    config = {"binary": "train_embedding", "runtime": runtime_flags.runtime_from_flags(FLAGS, strategy),
              "corpus_dir": corpus_dir, "embedding_dir": embedding_dir, "precision": policy,
              "model": model_config.to_dict(), "train": train_config.to_dict()}
    stored = corpus.read_corpus(corpus_dir)
    rundir.prepare(embedding_dir, config, overwrite=FLAGS.overwrite, resume=True)
    precision.apply(policy)
    _, metrics = embedding_training.train(stored, embedding_dir, model_config, train_config, seed=FLAGS.seed,
                                          precision_policy=policy, strategy=strategy)
    begin.finish()
    print(json.dumps(embedding_training.headline(metrics), sort_keys=True, indent=2))


def run() -> None:
    define_flags()
    _cli.run(main)


if __name__ == "__main__":
    run()
