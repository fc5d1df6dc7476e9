"""The stages of a compression run, each resumable from what it left in the run directory.

    <run>/teacher/      teacher.keras, teacher_spec.json, metrics.json        (teacher_stage)
    <run>/corpus/       metadata.json + TFRecord part files                   (corpus_stage)
    <run>/corpus_summary.json, corpus.png
    <run>/embedding/    embedding.keras, embedding.json, metrics.json, ...    (embedding_stage)
    <run>/compressed/   model.keras, saved_model/, report.json, report.png,   (compress_stage)
                        finalists.jsonl, finalists/<hash>.keras (each trained finalist),
                        front/<ratio>x-<hash>/ (model.keras + saved_model/ of each finalist on the
                        trained validation-accuracy/size front), candidates.json
    <run>/timings.json  wall seconds of each stage when it last ran

A stage whose outputs are complete and were made with the same settings is loaded,
not rerun; a stage interrupted half-way continues (the corpus keeps every finished
child, the embedding its last epoch, compression every trained finalist).
Binaries (generate_corpus, train_embedding, compress, pipeline) call these functions.
"""

import dataclasses
import json
import os
import time
from typing import Dict, Optional

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from acompress import child_training
from acompress import compression
from acompress import corpus as corpus_lib
from acompress import corpus_generation
from acompress import data
from acompress import embedding as embedding_lib
from acompress import embedding_training
from acompress import finalists as finalists_lib
from acompress import plots
from acompress import rundir
from acompress import teacher as teacher_lib
from acompress import training

TIMINGS_FILE = "timings.json"
FINALISTS_FILE = "finalists.jsonl"
FINALIST_MODELS_DIR = "finalists"
FRONT_DIR = "front"
REPORT_FILE = "report.json"


def record_timing(run_dir: str, stage: str, seconds: float) -> None:
    path = os.path.join(run_dir, TIMINGS_FILE)
    timings = rundir.read_json(path) if tf.io.gfile.exists(path) else {}
    timings[stage] = float(seconds)
    rundir.write_json(path, timings)


def read_timings(run_dir: str) -> Dict[str, float]:
    path = os.path.join(run_dir, TIMINGS_FILE)
    return rundir.read_json(path) if tf.io.gfile.exists(path) else {}


def _record_if_worked(run_dir: str, stage: str, seconds: float, reuse_seconds: float = 5.0) -> None:
    """Keeps the time of the run that did the work: a stage loaded from disk (fast) keeps its old time."""
    if seconds > reuse_seconds or stage not in read_timings(run_dir):
        record_timing(run_dir, stage, seconds)


@dataclasses.dataclass
class TeacherStage:
    teacher: teacher_lib.Teacher
    model: keras.Model
    metrics: dict


def teacher_stage(run_dir: str, source: str, splits: data.Splits, data_config: data.DataConfig,
                  config: training.TrainConfig, *, seed: int, bn_momentum: float, strategy=None) -> TeacherStage:
    """Resolves the teacher and trains it (or loads it from <run>/teacher), under `strategy` if given."""
    info = splits.info
    teacher = teacher_lib.resolve(source, info.input_shape, info.num_classes, normalisation=info.normalisation)
    train, validation, test = data.pipelines(splits, data_config)
    start = time.perf_counter()
    model, metrics = teacher_lib.train_or_load(os.path.join(run_dir, "teacher"), teacher, splits, train, validation,
                                               test, config, seed=seed, bn_momentum=bn_momentum, strategy=strategy)
    _record_if_worked(run_dir, "teacher", time.perf_counter() - start)
    return TeacherStage(teacher, model, metrics)


def corpus_stage(run_dir: str, corpus_dir: str, stage: TeacherStage, proxy_splits: data.Splits,
                 proxy_data_config: data.DataConfig, config: corpus_generation.CorpusConfig, *, seed: int,
                 title: str, strategy=None) -> corpus_lib.Corpus:
    """Generates (or resumes) the corpus; writes corpus_summary.json and corpus.png; returns the corpus."""
    start = time.perf_counter()
    stored = corpus_generation.generate(corpus_dir, stage.teacher.spec, proxy_splits.for_search(),
                                        proxy_data_config, config, seed=seed, teacher_model=stage.model,
                                        strategy=strategy)
    summary = stored.summary()
    _record_if_worked(run_dir, "corpus", time.perf_counter() - start)
    metrics = stage.metrics
    summary["teacher"] = {key: metrics[key] for key in ("params", "flops", "val_accuracy", "test_accuracy")}
    rundir.write_json(os.path.join(run_dir, "corpus_summary.json"), summary)
    ok = stored.select(["ok"])
    first = ok.replicate == 0  # one point per child: replicates are second trainings of the same child
    plots.corpus_scatter(os.path.join(run_dir, "corpus.png"), ok.params[first], ok.val_accuracy[first],
                         teacher_params=metrics["params"], teacher_accuracy=metrics["val_accuracy"],
                         title=title, teacher_label="teacher (full training)")
    return stored


def embedding_stage(run_dir: str, embedding_dir: str, stored: corpus_lib.Corpus,
                    model_config: embedding_lib.EmbeddingConfig,
                    train_config: embedding_training.EmbeddingTrainConfig, *, seed: int,
                    precision_policy: str, strategy=None):
    """Trains (or loads) the embedding; returns (embedding, metrics)."""
    start = time.perf_counter()
    result = embedding_training.train(stored, embedding_dir, model_config, train_config, seed=seed,
                                      precision_policy=precision_policy, strategy=strategy)
    _record_if_worked(run_dir, "embedding", time.perf_counter() - start)
    return result


def load_embedding_for(embedding_dir: str, stored: corpus_lib.Corpus) -> embedding_lib.Embedding:
    """The trained embedding in `embedding_dir`, checked against the corpus' teacher."""
    loaded = embedding_lib.Embedding.load(embedding_dir)
    teacher_hash = stored.meta.teacher_hash
    if loaded.extra.get("teacher_hash") not in (None, teacher_hash):
        raise ValueError(f"the embedding in {embedding_dir} was trained on a corpus of another teacher "
                         f"({loaded.extra.get('teacher_hash')}, this corpus: {teacher_hash})")
    return loaded


def _finalist_model_path(compress_dir: str, spec_hash: str) -> str:
    return os.path.join(compress_dir, FINALIST_MODELS_DIR, f"{spec_hash}.keras")


def _read_finalists(compress_dir: str):
    """An interrupted run's finalists (finalists.jsonl), each with its model where finalists/ holds it."""
    path = os.path.join(compress_dir, FINALISTS_FILE)
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path) as handle:
        results = [finalists_lib.FinalistResult.from_dict(json.loads(line)) for line in handle if line.strip()]
    for index, result in enumerate(results):
        model_path = _finalist_model_path(compress_dir, result.spec.hash)
        if result.ok and tf.io.gfile.exists(model_path):
            results[index] = dataclasses.replace(
                result, model=keras.saving.load_model(model_path, safe_mode=True, compile=False))
    return results


def _append_finalist(compress_dir: str, result: finalists_lib.FinalistResult) -> None:
    """Stores a trained finalist durably: its model first (finalists/<hash>.keras), then its line in
    finalists.jsonl, so a listed finalist's model is there unless it never had one."""
    if result.ok and result.model is not None:
        model_path = _finalist_model_path(compress_dir, result.spec.hash)
        tf.io.gfile.makedirs(os.path.dirname(model_path))
        partial = model_path[:-len(".keras")] + ".partial.keras"
        result.model.save(partial)
        tf.io.gfile.rename(partial, model_path, overwrite=True)
    path = os.path.join(compress_dir, FINALISTS_FILE)
    existing = ""
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as handle:
            existing = handle.read()
    with tf.io.gfile.GFile(path + ".tmp", "w") as handle:
        handle.write(existing + json.dumps(result.to_dict(), sort_keys=True) + "\n")
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


def _compress_key(embedding, stored, stage, config, seed) -> dict:
    """What compression results depend on (compressed/key.json)."""
    return json.loads(rundir.to_json({
        "compress": config.to_dict(), "seed": seed, "teacher": stage.teacher.spec.hash,
        "teacher_metrics": {k: stage.metrics.get(k) for k in ("params", "val_accuracy", "test_accuracy")},
        "corpus_records": len(stored), "corpus_metadata": {k: v for k, v in stored.metadata.items()
                                                           if k not in corpus_lib.UNPINNED_KEYS},
        "embedding": embedding.info()}))


def check_compress_dir(compress_dir: str, embedding: embedding_lib.Embedding, stored: corpus_lib.Corpus,
                       stage: TeacherStage, config: compression.CompressConfig, *, seed: int) -> None:
    """Refuses a compressed/ directory holding results made with other settings (the pipeline's, say),
    which `compress_stage` would discard.

    Raises:
      rundir.OutputExistsError: naming the differing keys.
    """
    key_path = os.path.join(compress_dir, "key.json")
    held = [name for name in (FINALISTS_FILE, REPORT_FILE) if tf.io.gfile.exists(os.path.join(compress_dir, name))]
    if not held or not tf.io.gfile.exists(key_path):
        return
    stored_key, key = rundir.read_json(key_path), _compress_key(embedding, stored, stage, config, seed)
    differing = sorted(k for k in set(stored_key) | set(key) if stored_key.get(k) != key.get(k))
    if differing:
        raise rundir.OutputExistsError(
            f"{compress_dir} holds results ({', '.join(held)}) made with other settings (differs in: "
            f"{', '.join(differing)}); use another --output_dir, or --overwrite to replace them")


def compress_stage(run_dir: str, compress_dir: str, embedding: embedding_lib.Embedding, stored: corpus_lib.Corpus,
                   stage: TeacherStage, splits: data.Splits, data_config: data.DataConfig,
                   config: compression.CompressConfig, *, seed: int, proxy_splits: Optional[data.Splits] = None,
                   resolved_config: Optional[dict] = None, strategy=None) -> dict:
    """Search, refinement, finalists, choice, export and report. Returns the report (also report.json).

    Finalists already trained by an interrupted run with the same settings (finalists.jsonl)
    are reused; the chosen one is retrained from its seed when its model is not in memory.
    """
    tf.io.gfile.makedirs(compress_dir)
    key = _compress_key(embedding, stored, stage, config, seed)
    key_path = os.path.join(compress_dir, "key.json")
    report_path = os.path.join(compress_dir, REPORT_FILE)
    if tf.io.gfile.exists(key_path) and tf.io.gfile.exists(report_path) and rundir.read_json(key_path) == key:
        logging.info("compression: reusing %s", report_path)
        return rundir.read_json(report_path)
    if tf.io.gfile.exists(key_path) and rundir.read_json(key_path) != key:
        # Another configuration: finalists trained under it do not count for this one.
        for path in (os.path.join(compress_dir, name)
                     for name in (FINALISTS_FILE, REPORT_FILE, FINALIST_MODELS_DIR, FRONT_DIR)):
            if tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)
            elif tf.io.gfile.exists(path):
                tf.io.gfile.remove(path)
    rundir.write_json(key_path, key)
    start = time.perf_counter()
    outcome = compression.compress(
        embedding, stored, stage.teacher.spec, stage.metrics, splits, data_config, config, seed=seed,
        proxy_splits=(proxy_splits or splits).for_search(), teacher_model=stage.model,
        on_finalist=lambda result: _append_finalist(compress_dir, result),
        trained_finalists=_read_finalists(compress_dir), strategy=strategy)
    chosen: finalists_lib.FinalistResult = outcome.chosen
    if chosen.model is None:  # trained by a run from before finalists/ kept models: train it again from its seed
        logging.info("retraining the chosen network %s (finalists/ does not hold its model)", chosen.spec.hash)
        chosen = finalists_lib.train_finalists([chosen.spec], splits, data_config, config.finalist, seed=seed,
                                               teacher_model=stage.model, strategy=strategy)[0]
    timings = dict(outcome.timings)
    begin = time.perf_counter()
    norm = splits.info.normalisation
    raw_sample = splits.x_test[:64] * np.asarray(norm.std, np.float32) + np.asarray(norm.mean, np.float32)
    exported = compression.export(chosen.model, compress_dir, raw_sample, normalisation=norm.to_dict())
    front = export_front(compress_dir, outcome.finalists, chosen, exported, outcome.teacher_params, raw_sample,
                         norm.to_dict())
    timings["export"] = time.perf_counter() - begin
    record_timing(run_dir, "compress", time.perf_counter() - start)
    report = make_report(run_dir, compress_dir, outcome, chosen, stage, stored, embedding, config, exported,
                         timings, resolved_config)
    report["front"] = front
    rundir.write_json(os.path.join(compress_dir, REPORT_FILE), report)
    plot_report(os.path.join(compress_dir, "report.png"), report, stored, outcome, title=f"{splits.info.name}: "
                f"{stage.teacher.source} compressed {report['chosen']['ratio']:.1f}x")
    return report


def export_front(compress_dir: str, results, chosen: finalists_lib.FinalistResult, chosen_export: dict,
                 teacher_params: int, raw_sample: np.ndarray, normalisation: dict) -> list:
    """Exports every finalist on the trained front (`compression.trained_front`) into
    front/<ratio>x-<hash>/ (model.keras + saved_model/), so a user can take another trade-off without
    running again; the chosen network's entry points at the main export. Returns report.json's "front":
    one entry per front finalist, by size, with its paths (null, and a reason, where its model is gone)."""
    entries = []
    for result in compression.trained_front(results):
        ratio = teacher_params / result.params
        entry = {"spec_hash": result.spec.hash, "params": int(result.params), "flops": int(result.flops),
                 "ratio": ratio, "val_accuracy": result.val_accuracy, "test_accuracy": result.test_accuracy,
                 "chosen": result.spec.hash == chosen.spec.hash}
        if entry["chosen"]:
            paths = chosen_export
        elif result.model is None:
            paths = {"keras": None, "saved_model": None}
            entry["reason"] = "not exported: its model was not kept (trained by a run from before finalists/)"
            logging.warning("trained front: finalist %s (%.1fx) %s", result.spec.hash, ratio, entry["reason"])
        else:
            paths = compression.export(result.model, os.path.join(compress_dir, FRONT_DIR,
                                                                  f"{ratio:.1f}x-{result.spec.hash}"),
                                       raw_sample, normalisation=normalisation)
        entry.update(keras=paths["keras"], saved_model=paths["saved_model"])
        entries.append(entry)
    logging.info("trained front: %s", ", ".join(f"{e['ratio']:.1f}x at {e['val_accuracy']:.4f}" for e in entries))
    return entries


def _network(result: finalists_lib.FinalistResult, teacher_params: int, pool: compression.Pool) -> dict:
    record = result.to_dict()
    record["ratio"] = teacher_params / result.params
    index = pool.index_of(result.spec.hash)
    if index is not None:
        record["predicted_accuracy"] = pool.predicted[index]
        record["measured_proxy_accuracy"] = pool.measured[index]
    return record


def make_report(run_dir, compress_dir, outcome, chosen, stage, stored, embedding, config, exported, timings,
                resolved_config) -> dict:
    teacher_params = outcome.teacher_params
    metrics = stage.metrics
    pool: compression.Pool = outcome.pool
    proxy_epochs = int(stored.meta.proxy["epochs"])
    # Candidates labelled during compression (the no_embedding ablation's pool is the corpus, labelled already).
    refined = sum(m is not None and o != "corpus" for m, o in zip(pool.measured, pool.origin))
    stage_times = read_timings(run_dir)
    corpus_child_epochs = int(sum(r.epochs for r in stored.records))
    if stored.meta.proxy.get("init") == child_training.SUPERNET:
        # No child trains on its own: the budget is the supernet's training (child_training.corpus_child_epochs).
        # The stored recipe's own fields: a mixed-precision corpus also pins `precision` and `pack`.
        corpus_child_epochs = child_training.corpus_child_epochs(
            child_training.SUPERNET, proxy_epochs, int(stored.meta.proxy["supernet_children"]), len(stored.records))
        proxy_epochs = 0
    search_seconds = sum(v for k, v in timings.items() if k.startswith(("search", "refine")))
    report = {
        "teacher": {"source": stage.teacher.source, "spec_hash": stage.teacher.spec.hash,
                    "params": teacher_params, "flops": int(metrics["flops"]),
                    "val_accuracy": metrics["val_accuracy"], "test_accuracy": metrics["test_accuracy"]},
        "chosen": _network(chosen, teacher_params, pool),
        "targets": {"target_ratio": config.target_ratio, "max_accuracy_drop": config.max_accuracy_drop,
                    "met": outcome.target_met,
                    "test_accuracy_drop": metrics["test_accuracy"] - chosen.test_accuracy,
                    "val_accuracy_drop": metrics["val_accuracy"] - chosen.val_accuracy},
        "finalists": [_network(r, teacher_params, pool) for r in outcome.finalists],
        "searches": outcome.searches,
        "candidates": len(pool),
        "budget": {"child_epochs": corpus_child_epochs + refined * proxy_epochs,
                   "corpus_child_epochs": corpus_child_epochs, "refinement_children": refined,
                   "finalist_epochs": int(sum(r.epochs for r in outcome.finalists)),
                   "wall_seconds": stage_times.get("corpus", 0.0) + stage_times.get("embedding", 0.0) + search_seconds,
                   "note": "wall_seconds = corpus + embedding + search/refinement (the search budget; finalist "
                           "training is reported apart, as for every method)"},
        "timings": {"stages": stage_times, "compress": timings},
        "export": exported,
        "embedding": {"latent_shape": list(embedding.latent_shape)},
        "config": resolved_config or {"compress": config.to_dict()},
        "recipes": {"labels": stored.meta.proxy.get("init", "scratch"), "finalists": config.finalist.init},
        "method": config.method,
        "seed": (resolved_config or {}).get("runtime", {}).get("seed"),
    }
    report["chosen"]["ratio"] = teacher_params / chosen.params
    candidates = [pool.record(i, teacher_params) for i in range(len(pool))]
    rundir.write_json(os.path.join(compress_dir, "candidates.json"), candidates)
    return report


def plot_report(path: str, report: dict, stored: corpus_lib.Corpus, outcome: compression.CompressResult, title: str) -> str:
    """Accuracy vs. parameters: corpus (proxy), candidates (predicted), finalists, chosen and teacher (validation)."""
    pool: compression.Pool = outcome.pool
    ok = stored.select(["ok"])
    first = ok.replicate == 0
    figure, axes = plots.new_figure((8, 5))
    axes.scatter(ok.params[first], ok.val_accuracy[first], s=8, alpha=0.4, color="tab:gray",
                 label=f"corpus, proxy accuracy ({int(first.sum())})")
    if len(pool):
        axes.scatter(pool.params, pool.predicted, s=8, alpha=0.4, color="tab:blue", marker="x",
                     label=f"candidates, predicted proxy accuracy ({len(pool)})")
    finals = [f for f in report["finalists"] if f["val_accuracy"] is not None]
    axes.scatter([f["params"] for f in finals], [f["val_accuracy"] for f in finals], s=40, color="tab:orange",
                 label="finalists, validation accuracy (full training)", zorder=3)
    front = report.get("front") or []
    if front:
        axes.plot([e["params"] for e in front], [e["val_accuracy"] for e in front], color="tab:orange", lw=1,
                  label=f"trained front, exported to front/ ({len(front)})", zorder=2)
    chosen = report["chosen"]
    axes.scatter([chosen["params"]], [chosen["val_accuracy"]], s=160, marker="D", facecolors="none",
                 edgecolors="tab:green", linewidths=2, label=f"chosen ({chosen['ratio']:.1f}x)", zorder=4)
    teacher = report["teacher"]
    axes.scatter([teacher["params"]], [teacher["val_accuracy"]], s=200, marker="*", color="tab:red",
                 label="teacher", zorder=4)
    values = np.concatenate([ok.val_accuracy[first], [f["val_accuracy"] for f in finals]])
    low = float(np.nanpercentile(values, 5)) if len(values) else 0.0
    axes.set_ylim(max(0.0, low - 0.02), 1.0)
    return plots.finish(figure, axes, path, xlabel="parameters", ylabel="validation accuracy", title=title,
                        legend={"loc": "lower right", "fontsize": 8})


def headline(report: dict) -> dict:
    """The lines a user reads first."""
    chosen, teacher = report["chosen"], report["teacher"]
    return {"teacher_params": teacher["params"], "teacher_test_accuracy": teacher["test_accuracy"],
            "chosen_params": chosen["params"], "chosen_test_accuracy": chosen["test_accuracy"],
            "ratio": round(chosen["ratio"], 2), "test_accuracy_drop_points": round(
                100 * (teacher["test_accuracy"] - chosen["test_accuracy"]), 2),
            "targets_met": report["targets"]["met"], "saved_model": report["export"]["saved_model"],
            "child_epochs": report["budget"]["child_epochs"]}
