"""Label recipes side by side: rank fidelity per second of scratch vs. inherited children.

A corpus label is a cheap stand-in for the accuracy a child would reach once trained
for real. This benchmark labels one sample of children (the first ``--num_children``
of the default sampler, per seed) with each recipe and scores each against two
references: the accuracies the same children reach with a long training.

Label recipes (all through `child_training.train_children`, packed by 8):

  scratch_3ep         the paper's recipe (today's default): random init, 3 epochs,
                      Adam 3e-3 cosine.
  inherit_bn          teacher's weights (`inheritance`, L1 filters), batch norm
                      recalibrated on 20 batches, no training.
  inherit_bn_1ep      the same, then 1 epoch of fine-tuning (Adam ``--inherit_lr`` cosine).
  inherit_bn_2ep      the same with 2 epochs.
  inherit_bn_3ep      the same with 3 epochs (the scratch recipe's budget).
  inherit_bnscale_1ep as inherit_bn_1ep, filters chosen by batch-norm scale.
  supernet_<E>ep_rc<R>  the teacher trained once as a weight-sharing supernet for E epochs (one per
                      ``--supernet_epochs``; `supernet`: sandwich rule, in-place distillation, the
                      sample's children as its pool), then each child masked out of it, batch norm
                      recalibrated on R batches (``--recalibrate_batches``), no training. Its line reports
                      the supernet's training seconds apart from the labelling, and the children per
                      minute of a ``--corpus_size``-child corpus with the training included.
  size_only           the parameter count (no training): the predictor to beat.

References (the "truth", trained once per child, packed):

  ref_scratch         ``--reference_epochs`` (20) epochs from scratch, Adam 1e-3 cosine.
  ref_inherit         inherited + recalibrated + ``--finetune_epochs`` (10) epochs, Adam 3e-4
                      cosine: a short inherited fine-tune.
  ref_finalist        the default finalist procedure (`finalists.FinalistConfig()`): inherited +
                      recalibrated + 40 epochs of Adam 1e-3, constant (``--finalist_epochs``).

Labels are scored on the validation split (as the corpus does); references on the
validation and test splits together (the images no child trained on). Kendall tau-b
overall and inside 4 quantile bins of log parameters (`ranking.binned_tau`). The
teacher is the digits reference teacher trained as `flags/digits.flags` trains it.

Children are drawn with ``--p_remove`` (default 0: every layer kept, the children a supernet can
label; the tables of docs/labels.md before the supernet rows used the sampler's 0.1).

Prints one JSON line per (seed, recipe) and a summary (means over seeds). Run:

  PYTHONPATH=. python benchmarks/label_benchmark.py                 # 2 seeds x 64 children: ~45 min on 2 cores
  PYTHONPATH=. python benchmarks/label_benchmark.py --num_children=8 --seeds=0 --reference_epochs=1 \\
      --finetune_epochs=1                                           # smoke test
"""

import hashlib
import json
import os
import tempfile
import time

from absl import app
from absl import flags
import keras
import numpy as np

from acompress import child_training
from acompress import cpu_threads
from acompress import data
from acompress import keras_builder
from acompress import ranking
from acompress import sampler
from acompress import supernet
from acompress import training
from acompress import zoo

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_children", 64, "Children per seed.")
flags.DEFINE_list("seeds", ["0", "1"], "Run seeds (data split, teacher, sample, initialisations).")
flags.DEFINE_integer("teacher_epochs", 40, "Teacher training epochs (Adam 1e-3).")
flags.DEFINE_integer("reference_epochs", 20, "Epochs of the from-scratch reference.")
flags.DEFINE_integer("finetune_epochs", 10, "Fine-tuning epochs of the inherited reference.")
flags.DEFINE_float("inherit_lr", 1e-3, "Peak learning rate of the inherited label recipes.")
flags.DEFINE_list("recipes", [], "Only these label recipes (default: all).")
flags.DEFINE_list("references", ["ref_scratch", "ref_inherit"], "The references to score against.")
flags.DEFINE_integer("finalist_epochs", 40, "Epochs of the ref_finalist reference.")
flags.DEFINE_float("p_remove", 0.0, "The sampler's probability of removing each removable unit (supernet "
                   "labels need 0).")
flags.DEFINE_list("supernet_epochs", ["10", "30"], "Supernet training epochs, one supernet_<E>ep recipe each.")
flags.DEFINE_integer("supernet_children", 2, "Random children per supernet step (beside the whole network "
                     "and the smallest child).")
flags.DEFINE_list("recalibrate_batches", ["20"], "Batches of each supernet child's batch-norm statistics: one "
                  "supernet_<E>ep_rc<R> recipe each (the same trained supernet).")
flags.DEFINE_string("cache_dir", "", "Where to keep each seed's reference accuracies (a .npz per seed, reference "
                    "and settings), so a later run with other recipes reuses them. Keyed by the seed, the "
                    "reference's recipe, the children and --teacher_epochs, not by the code: clear it after "
                    "changing the trainers. Empty: no cache.")
flags.DEFINE_integer("corpus_size", 400, "Corpus size for the supernet's amortised children per minute.")


def recipes(inherit_lr: float):
    inherit = dict(init="inherit", recalibrate_batches=20, learning_rate=inherit_lr)
    return {
        "scratch_3ep": child_training.ProxyConfig(),
        "inherit_bn": child_training.ProxyConfig(epochs=0, **inherit),
        "inherit_bn_1ep": child_training.ProxyConfig(epochs=1, **inherit),
        "inherit_bn_2ep": child_training.ProxyConfig(epochs=2, **inherit),
        "inherit_bn_3ep": child_training.ProxyConfig(epochs=3, **inherit),
        "inherit_bnscale_1ep": child_training.ProxyConfig(epochs=1, importance="bn_scale", **inherit),
    }


def supernet_labels(children, search, teacher, seed: int, epochs: int, recalibrations):
    """Labels from one supernet trained `epochs` epochs on `children`, for each number of recalibration
    batches in `recalibrations`: ({batches: (labels, label seconds)}, training seconds)."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        model = supernet.train_or_load(directory, teacher, children, search, epochs=epochs, learning_rate=1e-3,
                                       schedule="cosine", children_per_step=FLAGS.supernet_children,
                                       recalibrate_batches=20, batch_size=64, seed=seed)
    trained = time.perf_counter() - start
    labels = {}
    for batches in recalibrations:
        config = child_training.ProxyConfig(init="supernet", epochs=epochs, learning_rate=1e-3,
                                            recalibrate_batches=batches, supernet_children=FLAGS.supernet_children)
        labels[batches] = label(children, search, config, model, seed)
    return labels, trained


def cached_reference(name: str, config, children, held_out, teacher, seed: int):
    """The reference accuracies of `children` (from ``--cache_dir`` when they were measured already)."""
    key = json.dumps({"seed": seed, "reference": name, "config": config.to_dict(),
                      "children": [c.hash for c in children], "teacher_epochs": FLAGS.teacher_epochs},
                     sort_keys=True)
    path = None
    if FLAGS.cache_dir:
        os.makedirs(FLAGS.cache_dir, exist_ok=True)
        path = os.path.join(FLAGS.cache_dir, f"{name}_s{seed}_{hashlib.sha256(key.encode()).hexdigest()[:12]}.npz")
        if os.path.exists(path):
            stored = np.load(path)
            return stored["accuracy"], float(stored["seconds"])
    truth, seconds = label(children, held_out, config, teacher, seed)
    if path:
        np.savez(path, accuracy=truth, seconds=seconds)
    return truth, seconds


def references(reference_epochs: int, finetune_epochs: int, finalist_epochs: int):
    return {
        "ref_scratch": child_training.ProxyConfig(epochs=reference_epochs, learning_rate=1e-3),
        "ref_inherit": child_training.ProxyConfig(epochs=finetune_epochs, learning_rate=3e-4, init="inherit",
                                                  recalibrate_batches=20),
        "ref_finalist": child_training.ProxyConfig(epochs=finalist_epochs, learning_rate=1e-3, init="inherit",
                                                   recalibrate_batches=20, schedule="constant"),
    }


def train_teacher(splits: data.Splits, data_config: data.DataConfig, seed: int, epochs: int):
    spec = zoo.get("digits_cnn", splits.info.input_shape, splits.info.num_classes)
    keras.utils.set_random_seed(seed)
    model = keras_builder.build_model(spec, splits.info.input_shape, splits.info.num_classes, name="teacher")
    train, validation = data.search_datasets(splits.for_search(), data_config)
    training.fit(model, train, validation, training.TrainConfig(epochs=epochs, learning_rate=1e-3))
    return spec, model


def label(children, search, config, teacher, seed):
    start = time.perf_counter()
    results = child_training.train_children(children, list(range(len(children))), search, config, batch_size=64,
                                            seed=seed, teacher=teacher)
    seconds = time.perf_counter() - start
    return np.asarray([r.val_accuracy for r in results]), seconds


def score(labels, truth, params):
    ok = np.isfinite(labels) & np.isfinite(truth)
    log_params = np.log(params[ok])
    return {"tau": ranking.kendall_tau(labels[ok], truth[ok]),
            "binned_tau": ranking.binned_tau(labels[ok], truth[ok], log_params, bins=4)["mean"]}


def run_seed(seed: int):
    data_config = data.DataConfig(seed=seed)
    splits = data.load(data_config)
    info = splits.info
    search = splits.for_search()
    # References are scored on validation + test: the images no child trained on.
    held_out = data.SearchSplits(x_train=splits.x_train, y_train=splits.y_train,
                                 x_val=np.concatenate([splits.x_val, splits.x_test]),
                                 y_val=np.concatenate([splits.y_val, splits.y_test]), info=info)
    spec, teacher = train_teacher(splits, data_config, seed, FLAGS.teacher_epochs)
    teacher_params = spec.count_params(info.input_shape, info.num_classes)
    children = sampler.sample_children(spec, input_shape=info.input_shape, num_classes=info.num_classes,
                                       count=FLAGS.num_children, seed=seed,
                                       config=sampler.SamplerConfig(p_remove=FLAGS.p_remove))
    params = np.asarray([c.count_params(info.input_shape, info.num_classes) for c in children], np.float64)
    truths = {}
    chosen_references = references(FLAGS.reference_epochs, FLAGS.finetune_epochs, FLAGS.finalist_epochs)
    for name in FLAGS.references:
        config = chosen_references[name]
        truths[name], seconds = cached_reference(name, config, children, held_out, teacher, seed)
        print(json.dumps({"seed": seed, "reference": name, "seconds": round(seconds, 1),
                          "mean_accuracy": float(np.nanmean(truths[name]))}, sort_keys=True), flush=True)
    lines = [{"seed": seed, "recipe": "size_only", "children_per_min": None, "mean_accuracy": None,
              **{name: score(params, truth, params) for name, truth in truths.items()}}]
    chosen = recipes(FLAGS.inherit_lr)
    for name, config in chosen.items():
        if FLAGS.recipes and name not in FLAGS.recipes:
            continue
        labels, seconds = label(children, search, config, teacher, seed)
        lines.append({"seed": seed, "recipe": name, "seconds": round(seconds, 1),
                      "children_per_min": round(60 * len(children) / seconds, 1),
                      "mean_accuracy": float(np.nanmean(labels)),
                      **{ref: score(labels, truth, params) for ref, truth in truths.items()}})
    for epochs in (int(e) for e in FLAGS.supernet_epochs):
        wanted = [int(r) for r in FLAGS.recalibrate_batches
                  if not FLAGS.recipes or f"supernet_{epochs}ep_rc{r}" in FLAGS.recipes]
        if not wanted:
            continue
        by_batches, trained = supernet_labels(children, search, teacher, seed, epochs, wanted)
        for batches, (labels, seconds) in by_batches.items():
            per_child = seconds / len(children)
            lines.append({"seed": seed, "recipe": f"supernet_{epochs}ep_rc{batches}", "seconds": round(seconds, 1),
                          "train_seconds": round(trained, 1), "children_per_min": round(60 / per_child, 1),
                          "corpus_children_per_min": round(60 * FLAGS.corpus_size
                                                           / (trained + FLAGS.corpus_size * per_child), 1),
                          "mean_accuracy": float(np.nanmean(labels)),
                          **{ref: score(labels, truth, params) for ref, truth in truths.items()}})
    names = list(truths)
    for k, first in enumerate(names):
        for second in names[k + 1:]:
            lines.append({"seed": seed, "recipe": f"{first}_vs_{second}", second: score(truths[first],
                                                                                       truths[second], params)})
    for line in lines:
        print(json.dumps(line, sort_keys=True), flush=True)
    print(json.dumps({"seed": seed, "teacher_params": teacher_params,
                      "ratios": sorted(round(teacher_params / p, 1) for p in params)}), flush=True)
    return lines


def main(argv):
    del argv
    cpu_threads.configure(1, 2)
    everything = [line for seed in FLAGS.seeds for line in run_seed(int(seed))]
    summary = {}
    for line in everything:
        entry = summary.setdefault(line["recipe"], {})
        for key, value in line.items():
            if isinstance(value, dict):
                for metric, number in value.items():
                    entry.setdefault(f"{key}.{metric}", []).append(number)
            elif key in ("children_per_min", "corpus_children_per_min", "train_seconds",
                         "mean_accuracy") and value is not None:
                entry.setdefault(key, []).append(value)
    means = {recipe: {k: round(float(np.mean([v for v in vs if v is not None])), 3) for k, vs in entry.items()}
             for recipe, entry in summary.items()}
    print(json.dumps({"summary": means}, sort_keys=True), flush=True)


if __name__ == "__main__":
    app.run(main)
