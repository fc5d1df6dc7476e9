"""Finalists from the teacher's weights vs. from scratch, at the same epochs.

What the user gets is the finalist's accuracy at 10-150x. This benchmark trains the
same networks with the finalist procedure (`finalists.train_finalists`, the
teacher's 40 epochs of Adam by default) in three variants:

  scratch            random initialisation (the paper's recipe).
  inherit            the teacher's weights (`inheritance`: L1 filters, kernel centres),
                     batch norm recalibrated on 20 batches, then the same training.
  inherit_lr3e-4     the same with a fine-tuning learning rate of 3e-4.

The networks are the first ``--num_networks`` children of the default sampler
whose compression lies in [``--min_ratio``, ``--max_ratio``], per seed; the
teacher is the digits reference teacher trained as `flags/digits.flags` trains
it. Reports validation and test accuracy per network and variant, and the mean
difference to scratch (paired, the same networks).

  PYTHONPATH=. python benchmarks/finalist_benchmark.py               # 2 seeds x 8 networks: ~15 min on 2 cores
  PYTHONPATH=. python benchmarks/finalist_benchmark.py --num_networks=2 --seeds=0 --epochs=1   # smoke test
"""

import dataclasses
import json

from absl import app
from absl import flags
import keras
import numpy as np

from acompress import cpu_threads
from acompress import data
from acompress import finalists
from acompress import sampler
from acompress import teacher as teacher_lib
from acompress import training
from acompress import zoo

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_networks", 8, "Networks per seed.")
flags.DEFINE_list("seeds", ["0", "1"], "Run seeds (data split, teacher, sample, initialisations).")
flags.DEFINE_integer("epochs", 40, "Finalist epochs (every variant).")
flags.DEFINE_integer("teacher_epochs", 40, "Teacher training epochs (Adam 1e-3).")
flags.DEFINE_float("min_ratio", 10.0, "Smallest compression of a network.")
flags.DEFINE_float("max_ratio", 150.0, "Largest compression of a network.")


def variants(epochs: int):
    scratch = finalists.FinalistConfig(train=training.TrainConfig(epochs=epochs, learning_rate=1e-3))
    return {"scratch": scratch,
            "inherit": dataclasses.replace(scratch, init="inherit"),
            "inherit_lr3e-4": dataclasses.replace(scratch, init="inherit",
                                                  train=dataclasses.replace(scratch.train, learning_rate=3e-4))}


def run_seed(seed: int):
    data_config = data.DataConfig(seed=seed)
    splits = data.load(data_config)
    info = splits.info
    spec = zoo.get("digits_cnn", info.input_shape, info.num_classes)
    train, validation = data.search_datasets(splits.for_search(), data_config)
    keras.utils.set_random_seed(seed)
    teacher, _ = teacher_lib.train(teacher_lib.Teacher(spec, "digits_cnn"), train, validation, info.input_shape,
                                   info.num_classes, training.TrainConfig(epochs=FLAGS.teacher_epochs,
                                                                          learning_rate=1e-3))
    teacher_params = spec.count_params(info.input_shape, info.num_classes)
    pool = sampler.sample_children(spec, input_shape=info.input_shape, num_classes=info.num_classes, count=400,
                                   seed=seed)
    networks = [c for c in pool
                if FLAGS.min_ratio <= teacher_params / c.count_params(info.input_shape, info.num_classes)
                <= FLAGS.max_ratio][:FLAGS.num_networks]
    out = {}
    for name, config in variants(FLAGS.epochs).items():
        results = finalists.train_finalists(networks, splits, data_config, config, seed=seed, teacher_model=teacher,
                                            keep_models=False)
        out[name] = results
        for result in results:
            print(json.dumps({"seed": seed, "variant": name, "spec_hash": result.spec.hash,
                              "ratio": round(teacher_params / result.params, 1), "status": result.status,
                              "val_accuracy": result.val_accuracy, "test_accuracy": result.test_accuracy,
                              "seconds": round(result.train_seconds, 1)}, sort_keys=True), flush=True)
    return out


def main(argv):
    del argv
    cpu_threads.configure(1, 2)
    by_variant = {}
    for seed in FLAGS.seeds:
        for name, results in run_seed(int(seed)).items():
            by_variant.setdefault(name, []).extend(results)
    scratch = by_variant["scratch"]
    summary = {}
    for name, results in by_variant.items():
        val = np.asarray([r.val_accuracy for r in results])
        test = np.asarray([r.test_accuracy for r in results])
        summary[name] = {"mean_val": float(np.nanmean(val)), "mean_test": float(np.nanmean(test)),
                         "test_minus_scratch": float(np.nanmean(test - [r.test_accuracy for r in scratch])),
                         "val_minus_scratch": float(np.nanmean(val - [r.val_accuracy for r in scratch])),
                         "wins_on_test": int(np.sum(test > [r.test_accuracy for r in scratch])),
                         "networks": len(results)}
    print(json.dumps({"summary": summary}, sort_keys=True), flush=True)


if __name__ == "__main__":
    app.run(main)
