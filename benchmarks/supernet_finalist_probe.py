"""Finalists that start from the supernet instead of the teacher: a probe on finished supernet-labelled runs.

A supernet-labelled run (`flags/digits.flags`) keeps its trained supernet in ``<corpus>/supernet/``. Each
finalist of the run inherited the *teacher's* weights (largest-L1 filters, kernel centres), batch norm
recalibrated, then trained by the finalist procedure. This probe trains the same finalists again, with the
same procedure and seed, but starting from the *supernet's* weights: its first filters (``importance="first"``),
which are the sub-network the supernet trained to stand alone and whose accuracy the corpus label measured.
It reports, per finalist, the accuracy right after inheritance (batch norm recalibrated, no training) and
after the finalist procedure, for both starting points, and on how many finalists each start ends better on
test (a diverged finalist counts as NaN).

  PYTHONPATH=. python benchmarks/supernet_finalist_probe.py --runs=runs/digits_s0,runs/digits_s1,runs/digits_s2

The test split is evaluated for the report only; nothing here chooses anything.
"""

import json
import os
import tempfile

from absl import app
from absl import flags
import keras
import numpy as np

from acompress import archspec
from acompress import data
from acompress import finalists
from acompress import inheritance
from acompress import keras_builder
from acompress import pipeline
from acompress import supernet
from acompress import training

flags.DEFINE_list("runs", None, "Finished supernet-labelled acompress-pipeline run directories.", required=True)
FLAGS = flags.FLAGS


def _start(spec, source_model, importance, info, train, config: finalists.FinalistConfig, seed: int):
    """`spec` built with `seed`, inheriting from `source_model` by `importance`, batch norm recalibrated."""
    keras.utils.set_random_seed(seed)
    model = keras_builder.build_model(spec, info.input_shape, info.num_classes, bn_momentum=config.bn_momentum)
    source_spec, tensors = inheritance.source(source_model, info.input_shape, info.num_classes)
    inheritance.inherit(model, spec, source_spec, tensors, info.input_shape, importance=importance)
    inheritance.recalibrate_batch_norm([model], train, config.recalibrate_batches)
    return model


def probe_run(run_dir: str):
    with open(os.path.join(run_dir, "pipeline_config.json")) as handle:
        config = json.load(handle)
    data_config = data.DataConfig.from_dict(config["data"])
    splits = data.load(data_config)
    info = splits.info
    stage = pipeline.teacher_stage(run_dir, config["teacher"], splits, data_config,
                                   training.TrainConfig(**config["teacher_train"]), seed=data_config.seed,
                                   bn_momentum=config["bn_momentum"])
    supernet_model = supernet.load_trained(supernet.corpus_supernet_dir(config["corpus_dir"]))
    recipe = config["compress"]["finalist"]
    procedure = finalists.FinalistConfig(train=training.TrainConfig(**recipe["train"]),
                                         bn_momentum=recipe["bn_momentum"],
                                         recalibrate_batches=recipe["recalibrate_batches"])
    with open(os.path.join(run_dir, "compressed", pipeline.FINALISTS_FILE)) as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    lines = []
    for row in rows:
        spec = archspec.ArchSpec.from_dict(row["spec"])
        seed = finalists.finalist_seed(data_config.seed, spec)
        keras.utils.set_random_seed(seed)  # as the finalist procedure does before its pipelines
        train, validation, test = data.pipelines(splits, data_config)
        line = {"run": run_dir, "ratio": round(stage.teacher.spec.count_params(info.input_shape, info.num_classes)
                                               / spec.count_params(info.input_shape, info.num_classes), 1),
                "teacher_val": row["val_accuracy"], "teacher_test": row["test_accuracy"]}
        # The run's own finalist started from the teacher; only its start is measured again here.
        line["teacher_start_val"] = training.accuracy(
            _start(spec, stage.model, "l1", info, train, procedure, seed), validation)
        start = _start(spec, supernet_model, "first", info, train, procedure, seed)
        line["supernet_start_val"] = training.accuracy(start, validation)
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "start.weights.h5")
            start.save_weights(path)
            trained, summary = finalists.train_spec(spec, train, None, info, procedure, seed=seed,
                                                    initial_weights=path, log_epochs=False)
        diverged = summary["diverged"]
        line["supernet_val"] = float("nan") if diverged else training.accuracy(trained, validation)
        line["supernet_test"] = float("nan") if diverged else training.accuracy(trained, test)
        print(json.dumps(line, sort_keys=True), flush=True)
        lines.append(line)
    return lines


def main(argv) -> None:
    del argv
    lines = [line for run in FLAGS.runs for line in probe_run(run)]

    def mean(key):
        return round(100 * float(np.nanmean([line[key] for line in lines])), 2)

    summary = {key: mean(key) for key in ("teacher_start_val", "supernet_start_val", "teacher_val", "supernet_val",
                                          "teacher_test", "supernet_test")}
    summary["finalists"] = len(lines)
    summary["supernet_better_on_test"] = int(sum(l["supernet_test"] > l["teacher_test"] for l in lines))
    summary["supernet_worse_on_test"] = int(sum(l["supernet_test"] < l["teacher_test"] for l in lines))
    print(json.dumps({"summary": summary}, sort_keys=True), flush=True)


if __name__ == "__main__":
    app.run(main)
