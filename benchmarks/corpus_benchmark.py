"""Corpus throughput and rank fidelity: packed short-proxy training vs. one `fit` per child.

The corpus is the method's whole cost, so `child_training.train_children` trains
children with a short proxy (4 epochs, cosine, lr 3e-3) several at a time in one
traced step (pack 8). This benchmark measures what that buys and what it costs,
on one fixed sample of children (the first ``--num_children`` of the corpus
sampler, seed ``--seed``: the same children the digits corpus starts with):

  naive_fit          (a) one Keras `fit` per child (`training.fit`): Adam 1e-3 constant,
                     ``--naive_epochs`` (10) epochs, then validation accuracy.
  packed_proxy       (b) `train_children` with the default `ProxyConfig()` (pack 8).
  solo_proxy         (c) the same proxy with pack=1: separates the packing gain from
                     the shorter budget (``--solo``, on by default).
  solo_proxy_seed1   (c) again with run seed ``--seed + 1`` (other initialisations):
                     the seed noise that packed-vs-solo differences are compared with.
  naive_fit_seed1    (a) again with run seed ``--seed + 1`` (``--independent_seeds``, on by
                     default): (a) with seed ``--seed`` replays the first epochs of the reference's
                     own trajectory (same weights, batches and optimizer), which flatters its tau;
                     naive_fit_seed1 vs solo_proxy_seed1 compares the two budgets without that.
  reference          (d) full training, ``--reference_epochs`` (40) epochs of Adam 1e-3
                     constant, one `fit` per child: the teacher's budget, the "truth"
                     every variant's ranking is scored against (Kendall tau-b).
                     Cached by child hash in ``--reference_cache``, so reruns are cheap.

Every child gets the initialisation seed `child_training.child_seed(seed, index)`
in every variant, so (a), (b), (c) and (d) start from the same weights. The proxy
draws its batches from `data.EpochBatches` (a function of the run seed and the
epoch), so a child sees the same batches packed or solo and packed-vs-solo
differences are packing's own; the ``seed + 1`` variants differ in batch order as
well as initialisation. Each `fit` of (a) and (d) gets a new `data.search_datasets`
pipeline made under the global seed ``seed`` (``--fresh_data``), so (a) and (d)
see the same batches and a child's result does not depend on its position in the
run. Wall time includes building, tracing, training and evaluating. After an untimed warm-up
(one extra child through both code paths), the variants run round-robin over
chunks of ``--chunk`` children (a multiple of the pack, so packed groups are the
same as in one call), so drift in the machine's speed hits them alike.

Prints JSON lines (sorted keys): the sample's compression ratios, one line per
variant (seconds, children per minute, accuracies, Kendall tau against the
reference, the worst-ranked children), the packing-vs-seed-noise comparison and
the ratios. Run from a checkout:

  PYTHONPATH=. python benchmarks/corpus_benchmark.py     # 2 cores: ~15 min; ~6 min once the reference is cached
  PYTHONPATH=. python benchmarks/corpus_benchmark.py --num_children=4 --naive_epochs=1 \\
      --proxy_epochs=1 --skip_reference                                      # smoke test
"""

import json
import math
import os
import tempfile
import time
import warnings
from typing import Dict, List, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import keras
import numpy as np
import tensorflow as tf

from acompress import archspec
from acompress import child_training
from acompress import corpus_generation
from acompress import cpu_threads
from acompress import data
from acompress import keras_builder
from acompress import sampler
from acompress import training
from acompress import zoo
from acompress.flags import data_flags

try:
    from scipy import stats as scipy_stats
except ImportError:  # pragma: no cover - scipy is optional
    scipy_stats = None

FLAGS = flags.FLAGS

NAIVE, PACKED, SOLO, REFERENCE = "naive_fit", "packed_proxy", "solo_proxy", "reference"
NAIVE_SEED1, SOLO_SEED1 = "naive_fit_seed1", "solo_proxy_seed1"


def define_flags() -> None:
    data_flags.define_flags()
    if "seed" not in FLAGS:
        flags.DEFINE_integer("seed", 0, "Seed of the data split, the sampler and every child's initialisation.")
    if "teacher" not in FLAGS:
        flags.DEFINE_string("teacher", "digits_cnn", "Zoo name of the teacher whose children are sampled.")
    proxy = child_training.ProxyConfig()
    flags.DEFINE_integer("intra_op_threads", 0, "TensorFlow intra-op threads for every variant (0: default).")
    flags.DEFINE_integer("inter_op_threads", 0, "TensorFlow inter-op threads for every variant (0: default).")
    flags.DEFINE_integer("num_children", 32, "Children in the sample.", lower_bound=2)
    flags.DEFINE_integer("naive_epochs", 10, "Epochs of the naive one-fit-per-child baseline (a).", lower_bound=1)
    flags.DEFINE_float("fit_learning_rate", 1e-3, "Adam's constant learning rate for (a) and (d).")
    flags.DEFINE_integer("proxy_epochs", proxy.epochs, "Epochs of the proxy (b), (c).", lower_bound=1)
    flags.DEFINE_integer("pack", proxy.pack, "Children per packed step in (b).", lower_bound=1)
    flags.DEFINE_bool("solo", True, "Also run the proxy with pack=1 (c), twice (seeds --seed and --seed+1).")
    flags.DEFINE_bool("independent_seeds", True,
                      "Also run (a) with seed --seed+1 (and (c) too), scoring (a) and the proxy against the "
                      "reference from initialisations and batch orders the reference does not share: with the "
                      "same seed, (a) is the first epochs of the reference's own trajectory.")
    flags.DEFINE_integer("chunk", None, "Children per round-robin turn (a multiple of --pack; default --pack).",
                         lower_bound=1)
    flags.DEFINE_bool("fresh_data", True, "A new training pipeline, made under a fixed global seed, for every "
                      "fit of (a) and (d), so both see the same batches per child; off: one shared pipeline, "
                      "whose order then drifts with a child's position in the run.")
    flags.DEFINE_integer("reference_epochs", 40, "Epochs of the reference training (d).", lower_bound=1)
    flags.DEFINE_bool("skip_reference", False, "Skip (d): no rank fidelity unless every child is cached.")
    flags.DEFINE_string("reference_cache", os.path.join(tempfile.gettempdir(), "acompress_reference_cache.json"),
                        "JSON file of reference accuracies by training setup and child hash ('' disables it).")


# --------------------------------------------------------------------------- training variants


class Pipelines:
    """The (train, validation) pipelines each `fit` of (a) and (d) gets.

    `data.make_dataset` reshuffles every epoch from a state that lives in the
    dataset object (seeded at creation from the op seed and TensorFlow's global
    seed), so a child fitted on a shared pipeline sees batches that depend on how
    often it was iterated before (its position in the run). With `fresh`, every
    call gets a new pipeline made under the global seed ``seed + offset``: (a) and
    (d) then see the same batches, and ``offset=1`` other ones.
    """

    def __init__(self, search: data.SearchSplits, config: data.DataConfig, seed: int, fresh: bool):
        self.search, self.config, self.seed, self.fresh = search, config, seed, fresh
        self.shared = self._make(0)

    def _make(self, offset: int):
        tf.random.set_seed(self.seed + offset)
        return data.search_datasets(self.search, self.config)

    def __call__(self, offset: int = 0):
        return self._make(offset) if self.fresh else self.shared


def fit_children(specs: Sequence[archspec.ArchSpec], indices: Sequence[int], pipelines: Pipelines,
                 info: data.DatasetInfo, config: training.TrainConfig, seed: int, offset: int = 0) -> List[float]:
    """One `training.fit` per child (validation accuracy after training; NaN if it diverged)."""
    accuracies = []
    for index, spec in zip(indices, specs):
        train, validation = pipelines(offset)
        keras.utils.set_random_seed(child_training.child_seed(seed + offset, index))
        model = keras_builder.build_model(spec, info.input_shape, info.num_classes, bn_momentum=0.9,
                                          name=f"child_{index}")
        summary = training.fit(model, train, None, config)
        accuracies.append(float("nan") if summary["diverged"] else training.accuracy(model, validation))
    return accuracies


def proxy_children(specs, indices, search: data.SearchSplits, batch_size: int,
                   config: child_training.ProxyConfig, seed: int) -> List[float]:
    """`train_children` (its batches are a function of `seed` and the epoch only)."""
    results = child_training.train_children(specs, indices, search, config, batch_size=batch_size, seed=seed)
    for result in results:
        if result.status != child_training.OK:
            logging.warning("child %d %s: %s", result.index, result.status, result.reason)
    return [r.val_accuracy if r.status == child_training.OK else float("nan") for r in results]


def make_runners(pipelines: Pipelines, search: data.SearchSplits, batch_size: int, seed: int):
    """{variant: callable(specs, indices) -> accuracies}, in the order they take turns."""
    info = search.info
    naive = training.TrainConfig(epochs=FLAGS.naive_epochs, learning_rate=FLAGS.fit_learning_rate,
                                 optimizer="adam", schedule="constant")
    packed = child_training.ProxyConfig(epochs=FLAGS.proxy_epochs, pack=FLAGS.pack)
    solo = child_training.ProxyConfig(epochs=FLAGS.proxy_epochs, pack=1)
    runners = {
        NAIVE: lambda s, i: fit_children(s, i, pipelines, info, naive, seed),
        PACKED: lambda s, i: proxy_children(s, i, search, batch_size, packed, seed),
    }
    configs = {NAIVE: naive.to_dict(), PACKED: packed.to_dict()}
    if FLAGS.independent_seeds:
        runners[NAIVE_SEED1] = lambda s, i: fit_children(s, i, pipelines, info, naive, seed, offset=1)
        configs[NAIVE_SEED1] = {**naive.to_dict(), "seed": seed + 1}
    if FLAGS.solo or FLAGS.independent_seeds:
        runners[SOLO] = lambda s, i: proxy_children(s, i, search, batch_size, solo, seed)
        runners[SOLO_SEED1] = lambda s, i: proxy_children(s, i, search, batch_size, solo, seed + 1)
        configs[SOLO] = solo.to_dict()
        configs[SOLO_SEED1] = {**solo.to_dict(), "seed": seed + 1}
    return runners, configs


def warm_up(spec, index: int, pipelines: Pipelines, search: data.SearchSplits, batch_size: int, seed: int) -> None:
    """One child, one epoch, through both code paths (TensorFlow's first-use costs are not the variants')."""
    start = time.perf_counter()
    fit_children([spec], [index], pipelines, search.info, training.TrainConfig(epochs=1), seed)
    proxy_children([spec], [index], search, batch_size, child_training.ProxyConfig(epochs=1, pack=1), seed)
    logging.info("warm-up: %.1f s", time.perf_counter() - start)


def run_round_robin(runners, specs, chunk: int):
    """Runs every variant over all children, chunk by chunk, rotating which variant goes first."""
    names = list(runners)
    accuracies = {name: [] for name in names}
    seconds = {name: 0.0 for name in names}
    for turn, start in enumerate(range(0, len(specs), chunk)):
        indices = list(range(start, min(start + chunk, len(specs))))
        for name in names[turn % len(names):] + names[:turn % len(names)]:
            begin = time.perf_counter()
            accuracies[name].extend(runners[name]([specs[i] for i in indices], indices))
            seconds[name] += time.perf_counter() - begin
        logging.info("children %d-%d done; seconds so far %s", indices[0], indices[-1],
                     {k: round(v, 1) for k, v in seconds.items()})
    return accuracies, seconds


# --------------------------------------------------------------------------- reference + cache


def reference_key(info: data.DatasetInfo, data_config: data.DataConfig, config: training.TrainConfig,
                  seed: int) -> str:
    """What a cached reference accuracy depends on, besides the child."""
    return json.dumps({"data": data_config.to_dict(), "fresh_data": FLAGS.fresh_data,
                       "input_shape": list(info.input_shape), "num_classes": info.num_classes,
                       "train": config.to_dict(), "bn_momentum": 0.9, "seed": seed,
                       "child_seed": "child_training.child_seed(seed, index)"}, sort_keys=True)


def load_cache(path: str) -> dict:
    if not path or not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def save_cache(path: str, cache: dict) -> None:
    if not path:
        return
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(cache, handle, sort_keys=True, indent=1)
    os.replace(temporary, path)


def reference_accuracies(specs, pipelines: Pipelines, info, data_config, seed: int):
    """(accuracies or None, seconds spent training fresh children, fresh count)."""
    config = training.TrainConfig(epochs=FLAGS.reference_epochs, learning_rate=FLAGS.fit_learning_rate,
                                  optimizer="adam", schedule="constant")
    cache = load_cache(FLAGS.reference_cache)
    # The child's index is part of the key: it decides the child's initialisation seed.
    entries = cache.setdefault(reference_key(info, data_config, config, seed), {})
    keys = [f"{index}:{spec.hash}" for index, spec in enumerate(specs)]
    missing = [i for i, key in enumerate(keys) if key not in entries]
    if missing and FLAGS.skip_reference:
        logging.info("reference: %d of %d children not cached and --skip_reference", len(missing), len(specs))
        return None, 0.0, 0, config
    seconds = 0.0
    for count, index in enumerate(missing, start=1):
        start = time.perf_counter()
        (accuracy,) = fit_children([specs[index]], [index], pipelines, info, config, seed)
        seconds += time.perf_counter() - start
        entries[keys[index]] = None if math.isnan(accuracy) else accuracy
        save_cache(FLAGS.reference_cache, cache)
        logging.info("reference %d/%d (child %d): %.4f, %.1f s", count, len(missing), index, accuracy,
                     time.perf_counter() - start)
    values = [entries[key] for key in keys]
    return [float("nan") if v is None else float(v) for v in values], seconds, len(missing), config


# --------------------------------------------------------------------------- statistics


def _finite_pairs(a: Sequence[float], b: Sequence[float]):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def kendall_tau_b(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b over the children finite in both (scipy's when installed)."""
    a, b = _finite_pairs(a, b)
    if len(a) < 2:
        return float("nan")
    if scipy_stats is not None:
        return float(scipy_stats.kendalltau(a, b).statistic)
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    upper = np.triu_indices(len(a), 1)
    da, db = da[upper], db[upper]
    denominator = math.sqrt(np.count_nonzero(da) * np.count_nonzero(db))
    return float(np.sum(da * db) / denominator) if denominator else float("nan")


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    a, b = _finite_pairs(a, b)
    if len(a) < 2:
        return float("nan")
    ranks = lambda v: np.argsort(np.argsort(v, kind="stable"), kind="stable") if scipy_stats is None \
        else scipy_stats.rankdata(v)  # noqa: E731
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def mean_abs_difference(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    a, b = _finite_pairs(a, b)
    return _round(float(np.mean(np.abs(a - b)))) if len(a) else None


def worst_ranked(accuracies, reference, specs, teacher, info, count: int = 3) -> List[dict]:
    """The children whose rank (1 = best) moves most between `reference` and `accuracies`."""
    a, b = np.asarray(accuracies, np.float64), np.asarray(reference, np.float64)
    keep = np.flatnonzero(np.isfinite(a) & np.isfinite(b))
    if len(keep) < 2:
        return []
    rank = lambda v: (scipy_stats.rankdata(-v) if scipy_stats is not None  # noqa: E731
                      else np.argsort(np.argsort(-v, kind="stable"), kind="stable") + 1.0)
    rank_variant, rank_reference = rank(a[keep]), rank(b[keep])
    order = np.argsort(-np.abs(rank_variant - rank_reference), kind="stable")[:count]
    out = []
    for k in order:
        index = int(keep[k])
        out.append({"child": index, "hash": specs[index].hash[:12],
                    "params": specs[index].count_params(info.input_shape, info.num_classes),
                    "ratio": _round(sampler.compression_ratio(teacher, specs[index], info.input_shape,
                                                              info.num_classes), 1),
                    "layers": len(specs[index]),
                    "accuracy": _round(a[index]), "reference_accuracy": _round(b[index]),
                    "rank": float(rank_variant[k]), "reference_rank": float(rank_reference[k])})
    return out


def _round(value, digits: int = 4):
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def _ratio(a, b):
    return _round(a / b, 3) if a is not None and b else None


def _difference(a, b):
    return _round(a - b) if a is not None and b is not None else None


# --------------------------------------------------------------------------- main


def emit(record: Dict) -> None:
    print(json.dumps({"benchmark": "corpus", **record}, sort_keys=True), flush=True)


def main(argv) -> None:
    del argv
    cpu_threads.configure(FLAGS.intra_op_threads, FLAGS.inter_op_threads)
    tf.get_logger().setLevel("ERROR")  # one tf.function per packed group: retracing warnings are expected
    warnings.filterwarnings("ignore", message=".*shuffle=True.*")  # fit on a dataset that shuffles itself
    chunk = FLAGS.chunk or FLAGS.pack
    if chunk % FLAGS.pack:
        raise app.UsageError(f"--chunk ({chunk}) must be a multiple of --pack ({FLAGS.pack})")
    seed = FLAGS.seed
    data_config = data_flags.config_from_flags(FLAGS, seed=seed)
    search = data.load(data_config).for_search()
    info = search.info
    pipelines = Pipelines(search, data_config, seed, FLAGS.fresh_data)
    teacher = zoo.get(FLAGS.teacher, info.input_shape, info.num_classes)
    space = corpus_generation.search_space_for(teacher)
    # One extra child for the warm-up; the sampler's first n children do not depend on the count.
    drawn = sampler.sample_children(teacher, input_shape=info.input_shape, num_classes=info.num_classes,
                                    count=FLAGS.num_children + 1, seed=seed, space=space,
                                    config=sampler.SamplerConfig())
    specs, spare = drawn[:-1], drawn[-1]
    n = len(specs)
    emit({"measurement": "sample", "teacher": FLAGS.teacher, "dataset": info.name, "sizes": info.sizes,
          "batch_size": data_config.batch_size, "seed": seed, "num_children": n,
          "compression_ratios": sampler.ratio_summary(teacher, specs, info.input_shape, info.num_classes),
          "fresh_data": FLAGS.fresh_data, "devices": [d.device_type for d in tf.config.list_logical_devices()],
          "scipy": scipy_stats is not None})

    warm_up(spare, n, pipelines, search, data_config.batch_size, seed)
    runners, configs = make_runners(pipelines, search, data_config.batch_size, seed)
    accuracies, seconds = run_round_robin(runners, specs, chunk)
    reference, reference_seconds, fresh, reference_config = reference_accuracies(
        specs, pipelines, info, data_config, seed)

    taus = {}
    for name in runners:
        values = accuracies[name]
        finite = [v for v in values if math.isfinite(v)]
        record = {"measurement": "variant", "variant": name, "config": configs[name], "children": n,
                  "seconds": _round(seconds[name], 2),
                  "children_per_minute": _round(60.0 * n / seconds[name], 2),
                  "not_ok": n - len(finite),
                  "accuracy_mean": _round(float(np.mean(finite))) if finite else None,
                  "accuracy_min_max": [_round(min(finite)), _round(max(finite))] if finite else None,
                  "accuracies": [_round(v) for v in values]}
        if reference is not None:
            taus[name] = _round(kendall_tau_b(values, reference))
            record.update(kendall_tau=taus[name], spearman=_round(spearman(values, reference)),
                          mean_abs_diff_to_reference=mean_abs_difference(values, reference),
                          worst_ranked=worst_ranked(values, reference, specs, teacher, info))
        emit(record)
    if reference is not None:
        finite = [v for v in reference if math.isfinite(v)]
        emit({"measurement": "variant", "variant": REFERENCE, "config": reference_config.to_dict(),
              "children": n, "cached": n - fresh, "trained": fresh,
              "seconds": _round(reference_seconds, 2) if fresh else None,
              "children_per_minute": _round(60.0 * fresh / reference_seconds, 2) if fresh else None,
              "not_ok": n - len(finite), "accuracy_mean": _round(float(np.mean(finite))) if finite else None,
              "accuracy_min_max": [_round(min(finite)), _round(max(finite))] if finite else None,
              "accuracies": [_round(v) for v in reference]})

    if SOLO in runners:
        packed_vs_solo = mean_abs_difference(accuracies[PACKED], accuracies[SOLO])
        seed_noise = mean_abs_difference(accuracies[SOLO], accuracies[SOLO_SEED1])
        emit({"measurement": "packing_vs_seed_noise",
              "mean_abs_diff_packed_vs_solo": packed_vs_solo,
              "mean_abs_diff_solo_seed0_vs_seed1": seed_noise,
              "packing_over_seed_noise": _ratio(packed_vs_solo, seed_noise),
              "max_abs_diff_packed_vs_solo": _round(float(np.nanmax(np.abs(
                  np.subtract(accuracies[PACKED], accuracies[SOLO]))))),
              "max_abs_diff_solo_seed0_vs_seed1": _round(float(np.nanmax(np.abs(
                  np.subtract(accuracies[SOLO], accuracies[SOLO_SEED1]))))),
              "kendall_tau_packed_vs_solo": _round(kendall_tau_b(accuracies[PACKED], accuracies[SOLO])),
              "kendall_tau_solo_seed0_vs_seed1": _round(kendall_tau_b(accuracies[SOLO], accuracies[SOLO_SEED1])),
              **({"mean_abs_diff_naive_seed0_vs_seed1": mean_abs_difference(accuracies[NAIVE], accuracies[NAIVE_SEED1]),
                  "kendall_tau_naive_seed0_vs_seed1": _round(kendall_tau_b(accuracies[NAIVE], accuracies[NAIVE_SEED1]))}
                 if NAIVE_SEED1 in accuracies else {})})

    rate = {name: n / seconds[name] for name in runners}
    ratios = {"measurement": "ratios",
              "children_per_minute_packed/naive": _ratio(rate[PACKED], rate[NAIVE]),
              "kendall_tau_packed": taus.get(PACKED), "kendall_tau_naive": taus.get(NAIVE),
              "kendall_tau_packed-naive": _difference(taus.get(PACKED), taus.get(NAIVE)),
              "target_speedup_3x_met": rate[PACKED] >= 3 * rate[NAIVE]}
    if SOLO in runners:
        ratios.update({"children_per_minute_solo/naive": _ratio(rate[SOLO], rate[NAIVE]),
                       "children_per_minute_packed/solo": _ratio(rate[PACKED], rate[SOLO]),
                       "kendall_tau_solo-naive": _difference(taus.get(SOLO), taus.get(NAIVE))})
    if NAIVE_SEED1 in runners:
        ratios.update({"kendall_tau_naive_seed1": taus.get(NAIVE_SEED1),
                       "kendall_tau_solo_seed1": taus.get(SOLO_SEED1),
                       "kendall_tau_solo_seed1-naive_seed1": _difference(taus.get(SOLO_SEED1), taus.get(NAIVE_SEED1))})
    if taus.get(PACKED) is not None and taus.get(NAIVE) is not None:
        ratios["target_fidelity_within_0.05_met"] = taus[PACKED] >= taus[NAIVE] - 0.05
    emit(ratios)


if __name__ == "__main__":
    define_flags()
    app.run(main)
