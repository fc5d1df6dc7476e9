"""Which label recipe predicts what the finalist procedure makes of a network? A probe on a finished run.

Takes a finished pipeline run (its teacher, data split, corpus recipe and embedding) and networks whose
finalist-procedure accuracy is known (a run's finalists.jsonl, a baseline's result.json), labels each of
them with several label recipes side by side, and reports each recipe's Kendall tau against the finalists'
validation accuracy, beside the embedding's prediction. It answers "is the gap between two methods in the
search space, in the labels or in the accuracy head?" without another corpus.

  PYTHONPATH=. python benchmarks/label_probe.py --run_dir=runs/cifar10_cpu \\
      --networks=ac=runs/cifar10_cpu/compressed/finalists.jsonl,l1=runs/cifar10_cpu_l1_prune/result.json,uniform=runs/cifar10_cpu_uniform/result.json

Recipes (each a change to the run's own corpus recipe): default (the recipe as stored), recal_only (0 epochs:
inherited weights, batch norm recalibrated), distill (the recipe, distilled from the teacher), full_1ep (1
epoch on the whole training split instead of the proxy subset), full_1ep_distill. Validation only: the
test split is never read. Measured numbers: docs/labels.md, "Which label predicts the finalist".
"""

import json
import os
import time

from absl import app
from absl import flags
import keras
from scipy import stats

from acompress import archspec
from acompress import child_training
from acompress import corpus as corpus_lib
from acompress import data
from acompress import pipeline
from acompress import training

RECIPES = {"default": {}, "recal_only": {"epochs": 0}, "distill": {"distill": True},
           "full_1ep": {"epochs": 1, "full": True}, "full_1ep_distill": {"epochs": 1, "full": True, "distill": True}}

flags.DEFINE_string("run_dir", None, "A finished acompress-pipeline run directory.", required=True)
flags.DEFINE_list("networks", None, "name=path pairs: a finalists.jsonl (every line a network) or a result/report "
                  "JSON with a 'chosen' network; each needs its finalist-procedure val_accuracy.", required=True)
flags.DEFINE_list("recipes", list(RECIPES), f"Label recipes to compare, of {', '.join(RECIPES)}.")
FLAGS = flags.FLAGS


def networks_of(name: str, path: str):
    """(name, spec, finalist validation accuracy) of every network in `path`."""
    if path.endswith(".jsonl"):
        with open(path) as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
        return [(f"{name}{i}", archspec.ArchSpec.from_dict(row["spec"]), row["val_accuracy"])
                for i, row in enumerate(rows)]
    with open(path) as handle:
        chosen = json.load(handle)["chosen"]
    return [(name, archspec.ArchSpec.from_dict(chosen["spec"]), chosen["val_accuracy"])]


def main(argv) -> None:
    del argv
    unknown = set(FLAGS.recipes) - set(RECIPES)
    if unknown:
        raise app.UsageError(f"unknown recipes {sorted(unknown)}; choose from {', '.join(RECIPES)}")
    with open(os.path.join(FLAGS.run_dir, "pipeline_config.json")) as handle:
        config = json.load(handle)
    data_config = data.DataConfig.from_dict(config["data"])
    splits = data.load(data_config)
    proxy_splits = data.load(data.DataConfig.from_dict(config["proxy_data"]))
    keras.utils.set_random_seed(data_config.seed)
    stage = pipeline.teacher_stage(FLAGS.run_dir, config["teacher"], splits, data_config,
                                   training.TrainConfig(**config["teacher_train"]), seed=data_config.seed,
                                   bn_momentum=config["bn_momentum"])
    stored = corpus_lib.read_corpus(config["corpus_dir"])
    embedding = pipeline.load_embedding_for(config["embedding_dir"], stored)
    recipe = {k: v for k, v in stored.meta.proxy.items() if k != "precision"}
    rows = [row for pair in FLAGS.networks for row in networks_of(*pair.split("=", 1))]
    specs = [spec for _, spec, _ in rows]
    final = [accuracy for _, _, accuracy in rows]
    labels = {"predicted (embedding)": list(embedding.predict(embedding.encode_specs(specs))["accuracy"].reshape(-1))}
    for name in FLAGS.recipes:
        change = dict(RECIPES[name])
        full = change.pop("full", False)
        proxy = child_training.ProxyConfig.from_recipe({**recipe, **change})
        start = time.perf_counter()
        results = child_training.train_children(specs, [2_000_000 + i for i in range(len(specs))],
                                                (splits if full else proxy_splits).for_search(), proxy,
                                                batch_size=data_config.batch_size, seed=data_config.seed,
                                                teacher=stage.model)
        labels[name] = [float(r.val_accuracy) for r in results]
        print(f"recipe {name}: {len(specs)} networks in {time.perf_counter() - start:.0f} s", flush=True)
    teacher_params = int(stage.metrics["params"])
    for i, (name, spec, accuracy) in enumerate(rows):
        params = spec.count_params(splits.info.input_shape, splits.info.num_classes)
        print(json.dumps({"network": name, "ratio": round(teacher_params / params, 1), "finalist_val": accuracy,
                          **{k: round(float(v[i]), 4) for k, v in labels.items()}}))
    for name, values in labels.items():
        print(f"{name}: Kendall tau vs the finalist validation accuracy {stats.kendalltau(values, final)[0]:.3f}")


if __name__ == "__main__":
    app.run(main)
