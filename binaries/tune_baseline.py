"""A baseline for the latent search: a Keras Tuner search over the same children, uniform scaling, or
L1-norm filter pruning of the teacher.

  acompress-tune-baseline --flagfile=flags/digits.flags --method=random --output_dir=runs/digits_random
  acompress-tune-baseline --flagfile=flags/digits.flags --method=bayesian --teacher_dir=runs/digits/teacher \\
      --output_dir=runs/digits_bayesian
  acompress-tune-baseline --flagfile=flags/digits.flags --method=uniform --target_ratio=16 \\
      --output_dir=runs/digits_uniform
  acompress-tune-baseline --flagfile=flags/digits.flags --method=l1_prune --target_ratio=16 \\
      --teacher_dir=runs/digits/teacher --output_dir=runs/digits_l1

Trains (or reuses, --teacher_dir) the teacher, searches the teacher's child space -- the
corpus sampler's -- with Keras Tuner's RandomSearch, Hyperband or BayesianOptimization
until the budget is spent (by default the corpus's own child-epochs under the same flags),
retrains the --num_finalists best distinct networks for the finalist budget and chooses
the smallest within --max_accuracy_drop of the teacher (on validation accuracy; test
accuracy is reported only). Rerunning the same command resumes the search and skips
finished finalists. Outputs in <output_dir>:
  config.json     the resolved configuration
  teacher/        teacher.keras, teacher_spec.json, metrics.json (the teacher stage)
  tuner/<method>/ Keras Tuner's project (oracle and trials)
  finalists/      one JSON per trained finalist (by spec hash)
  result.json     the result (schema: acompress.baselines module docstring)

Distributed search (Keras Tuner's): run the same command once per process, all with the
same --output_dir on a shared file system, with KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT
and KERASTUNER_TUNER_ID=chief for the oracle or tuner0, tuner1, ... for workers. The chief
trains the teacher, serves the oracle and the budget, trains the finalists and writes
result.json; workers wait for the teacher, run trials and write nothing else (they ignore
--overwrite; give it to the chief only before any worker starts).
"""

import dataclasses
import json
import os
import time

from acompress.binaries import _cli  # noqa: F401  (quiet TensorFlow before it loads)
from absl import flags
from absl import logging
import keras
import tensorflow as tf

from acompress import baselines
from acompress import cpu_threads
from acompress import data
from acompress import keras_parser
from acompress import precision
from acompress import rundir
from acompress import teacher as teacher_lib
from acompress import tuner
from acompress.flags import baseline_flags
from acompress.flags import corpus_flags
from acompress.flags import data_flags
from acompress.flags import runtime_flags
from acompress.flags import teacher_flags
from acompress.flags import training_flags

FLAGS = flags.FLAGS
RESULT_FILE = "result.json"
TEACHER_WAIT_SECONDS = 3600


def define_flags() -> None:
    # Every group flags/digits.flags uses (absl refuses unknown flags in a flagfile).
    runtime_flags.define_flags()
    data_flags.define_flags()
    teacher_flags.define_flags()
    corpus_flags.define_flags()
    baseline_flags.define_flags()
    flags.mark_flag_as_required("output_dir")


def main(argv) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.strategy == "multi_worker":
        raise ValueError("--strategy=multi_worker does not apply to tune_baseline: spread a search over machines "
                         "with Keras Tuner's distributed mode (KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT, "
                         "KERASTUNER_TUNER_ID), which runs different trials on each worker")
    role = tuner.tuner_role()
    cpu_threads.configure(FLAGS.intra_op_threads, FLAGS.inter_op_threads)
    strategy, _ = runtime_flags.strategy_from_flags(FLAGS)
    data_config = data_flags.config_from_flags(FLAGS, FLAGS.seed,
                                               auto_normalise=teacher_lib.input_normalisation(FLAGS.teacher))
    # Trials train on the corpus children's proxy share of the training split (--proxy_fraction).
    search_data_config = dataclasses.replace(data_config,
                                             train_fraction=data_config.train_fraction * FLAGS.proxy_fraction)
    teacher_train = training_flags.train_config_from_flags(FLAGS, prefix="teacher_")
    config = baseline_flags.baseline_config_from_flags(FLAGS)
    output_dir = rundir.normalize(FLAGS.output_dir)
    teacher_dir = os.path.join(output_dir, "teacher")
    source_teacher_dir = rundir.normalize(FLAGS.teacher_dir) if FLAGS.teacher_dir else None
    run_config = {"binary": "tune_baseline", "runtime": runtime_flags.runtime_from_flags(FLAGS, strategy),
                  "data": data_config.to_dict(), "search_data": search_data_config.to_dict(),
                  "teacher": FLAGS.teacher, "teacher_train": teacher_train.to_dict(),
                  "teacher_dir": source_teacher_dir, "bn_momentum": FLAGS.bn_momentum,
                  "baseline": config.to_dict()}
    # Bad data or teacher flags fail before anything is written to the output directory.
    splits = data.load(data_config)
    info = splits.info
    teacher = teacher_lib.resolve(FLAGS.teacher, info.input_shape, info.num_classes, normalisation=info.normalisation)
    stage_key = teacher_lib.stage_key(teacher, info, teacher_train, seed=FLAGS.seed, bn_momentum=FLAGS.bn_momentum)
    if source_teacher_dir is not None:
        _check_teacher_dir(source_teacher_dir, stage_key)
    if role == "worker":
        precision.apply(FLAGS.precision)
        teacher_model, teacher_metrics = _wait_for_teacher(teacher_dir, need_model=config.tuner.trial.distill)
    else:
        rundir.prepare(output_dir, run_config, overwrite=FLAGS.overwrite, resume=True)
        precision.apply(FLAGS.precision)
        if source_teacher_dir is not None:
            _copy_teacher(source_teacher_dir, teacher_dir)
        keras.utils.set_random_seed(FLAGS.seed)
        train, validation, test = data.pipelines(splits, data_config)
        teacher_model, teacher_metrics = teacher_lib.train_or_load(
            teacher_dir, teacher, splits, train, validation, test, teacher_train, seed=FLAGS.seed,
            bn_momentum=FLAGS.bn_momentum, strategy=strategy)

    search_splits = splits if search_data_config == data_config else data.load(search_data_config)
    result = baselines.run_baseline(config, teacher.spec, splits, data_config, seed=FLAGS.seed,
                                    teacher_metrics=teacher_metrics, directory=output_dir,
                                    teacher_model=teacher_model, search=search_splits.for_search(),
                                    search_data_config=search_data_config, strategy=strategy)
    if result is None:
        logging.info("worker %s: the search is over", os.environ.get("KERASTUNER_TUNER_ID"))
        return
    rundir.write_json(os.path.join(output_dir, RESULT_FILE), result)
    print(json.dumps(summary(result), sort_keys=True, indent=2))


def summary(result: dict) -> dict:
    """The part of a result worth printing: no specs, no trial list."""
    chosen = {key: value for key, value in result["chosen"].items() if key != "spec"}
    statuses = {}
    for trial in result["trials"]:
        statuses[trial["status"]] = statuses.get(trial["status"], 0) + 1
    return {"method": result["method"], "objective": result["objective"], "teacher": result["teacher"],
            "chosen": chosen, "budget": result["budget"], "trials": statuses,
            "finalists": [{key: record[key] for key in ("spec_hash", "params", "ratio", "val_accuracy",
                                                         "test_accuracy", "status")}
                          for record in result["finalists"]]}


def _check_teacher_dir(source_dir: str, stage_key: dict) -> None:
    """--teacher_dir must hold a teacher made with this run's data, teacher and seed flags."""
    metrics_path = os.path.join(source_dir, teacher_lib.METRICS_FILE)
    model_path = os.path.join(source_dir, teacher_lib.MODEL_FILE)
    if not (tf.io.gfile.exists(metrics_path) and tf.io.gfile.exists(model_path)):
        raise FileNotFoundError(f"--teacher_dir {source_dir} holds no trained teacher ({teacher_lib.METRICS_FILE} "
                                f"and {teacher_lib.MODEL_FILE})")
    stored = rundir.read_json(metrics_path).get("key", {})
    wanted = json.loads(rundir.to_json(stage_key))
    differing = sorted(key for key in wanted if stored.get(key) != wanted[key])
    if differing:
        raise ValueError(f"--teacher_dir {source_dir} holds a teacher made with other settings (differs in: "
                         f"{', '.join(differing)}); use the flags it was made with, or leave --teacher_dir out "
                         "to train one")


def _copy_teacher(source_dir: str, target_dir: str) -> None:
    if tf.io.gfile.exists(os.path.join(target_dir, teacher_lib.METRICS_FILE)):
        return
    tf.io.gfile.makedirs(target_dir)
    for name in (teacher_lib.MODEL_FILE, teacher_lib.SPEC_FILE, teacher_lib.METRICS_FILE):  # metrics last
        tf.io.gfile.copy(os.path.join(source_dir, name), os.path.join(target_dir, name), overwrite=True)
    logging.info("teacher: copied from %s", source_dir)


def _wait_for_teacher(teacher_dir: str, *, need_model: bool):
    """A worker waits for the chief's teacher stage (its metrics; the model too when distilling)."""
    metrics_path = os.path.join(teacher_dir, teacher_lib.METRICS_FILE)
    deadline = time.monotonic() + TEACHER_WAIT_SECONDS
    while not tf.io.gfile.exists(metrics_path):
        if time.monotonic() > deadline:
            raise FileNotFoundError(f"no teacher in {teacher_dir} after {TEACHER_WAIT_SECONDS} s: start the chief "
                                    "(KERASTUNER_TUNER_ID=chief) with the same --output_dir")
        logging.log_every_n_seconds(logging.INFO, "worker: waiting for the chief's teacher in %s", 30, teacher_dir)
        time.sleep(1.0)
    metrics = rundir.read_json(metrics_path)
    model = keras_parser.load_keras_model(os.path.join(teacher_dir, teacher_lib.MODEL_FILE)) if need_model else None
    return model, metrics


def run() -> None:
    define_flags()
    _cli.run(main)


if __name__ == "__main__":
    run()
