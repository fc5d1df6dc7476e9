"""Compression: latent search -> finalists -> the chosen network, exported.

`compress` is the whole stage after the embedding:

1. **Search** (`latent_search.search`): candidates decoded from the embedding, new
   architectures only, with exact parameters and FLOPs and predicted accuracy.
2. **Refinement rounds** (``rounds > 1``): the predictor is over-optimistic exactly
   where the search goes, so each extra round trains a spread of the current
   candidates with the corpus' proxy budget (`child_training.train_children`, the
   same recipe the corpus used), adds them to the embedding's training records,
   fine-tunes the embedding on corpus + new records, and searches again. Measured
   proxy accuracies replace predictions for those architectures.
3. **Finalists** (`pick_finalists`): a ladder over compression ratios. Rungs are
   spaced geometrically from the lowest ratio the user accepts (``target_ratio``,
   default ``min_ratio``) upwards; at each rung the architecture predicted (or
   measured) most accurate among the candidates of that size is a finalist. The
   ladder spends the final-training budget where the decision is -- how far can
   we go before accuracy breaks -- instead of on near-duplicates of one size, and
   it does not rely on the proxy accuracies being on the scale of full training
   (they are not: small networks learn slower, so a 3-epoch proxy understates them).
4. **Training** (`finalists.train_finalists`): each finalist with the teacher's budget,
   from scratch or from the teacher's weights (``finalist.init``; optionally distilled),
   scored on validation, tested once.
5. **Choice**: with ``max_accuracy_drop`` (default 1 point): the smallest finalist
   that meets ``target_ratio`` (if given) and whose validation accuracy is within the
   drop of the teacher's; if none does, the closest (most accurate) one, and the
   report says the target was missed. Test accuracy is reported, never used to choose.
6. **Export** (`export`): ``model.keras``, a SavedModel (``model.export``) and a check
   that the reloaded SavedModel gives the trained model's outputs.

Ablations (``CompressConfig.ablation``) show what each part is worth, at the same
corpus, finalist procedure and choice rule:

* ``no_embedding``: no search at all. The candidates are the corpus children, scored by
  their measured proxy accuracy (the mean over replicates), and the finalists come from
  the same ladder.
* ``no_refinement``: one search round, whatever ``rounds`` says.
"""

import dataclasses
import math
import os
import time
from typing import Callable, Dict, List, Optional, Sequence

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from acompress import archspec
from acompress import child_training
from acompress import corpus as corpus_lib
from acompress import data
from acompress import distribution
from acompress import embedding as embedding_lib
from acompress import embedding_training
from acompress import finalists as finalists_lib
from acompress import latent_search
from acompress import precision
from acompress import progress
from acompress import supernet as supernet_lib


ABLATIONS = ("none", "no_embedding", "no_refinement")


class TargetUnreachableError(ValueError):
    """No candidate meets the user's target ratio; the message lists the closest candidates."""


@dataclasses.dataclass(frozen=True)
class CompressConfig:
    """What the user asks for and how hard to look.

    Attributes:
      target_ratio: compress at least this much (teacher params / chosen params); None: no floor.
      max_accuracy_drop: the accuracy (fraction, 0.01 = 1 point) the chosen network may lose
        against the teacher, judged on validation; None: no limit (then a target_ratio is needed).
      num_finalists: networks trained for the full budget (rungs of the ladder).
      min_ratio: lowest rung when no target_ratio is given.
      rung_factor: ratio between successive rungs.
      rounds: search rounds; each one after the first is preceded by a refinement.
      refine_children: candidates proxy-trained per refinement.
      refine_epochs: embedding fine-tuning epochs per refinement.
      search: the latent search.
      finalist: how finalists are trained.
      ablation: one of `ABLATIONS` (module docstring): the method without one of its parts.
    """

    target_ratio: Optional[float] = None
    max_accuracy_drop: Optional[float] = 0.01
    num_finalists: int = 5
    min_ratio: float = 16.0
    rung_factor: float = 1.6
    rounds: int = 2
    refine_children: int = 24
    refine_epochs: int = 40
    search: latent_search.SearchConfig = dataclasses.field(default_factory=latent_search.SearchConfig)
    finalist: finalists_lib.FinalistConfig = dataclasses.field(default_factory=finalists_lib.inherited)
    ablation: str = "none"

    def __post_init__(self):
        if self.ablation not in ABLATIONS:
            raise ValueError(f"ablation must be one of {', '.join(ABLATIONS)}, got {self.ablation!r}")
        if self.target_ratio is not None and not self.target_ratio >= 1:
            raise ValueError(f"target_ratio must be >= 1, got {self.target_ratio}")
        if self.max_accuracy_drop is not None and not 0 <= self.max_accuracy_drop < 1:
            raise ValueError(f"max_accuracy_drop must be a fraction in [0, 1), got {self.max_accuracy_drop}")
        if self.target_ratio is None and self.max_accuracy_drop is None:
            raise ValueError("give a target ratio, a largest accuracy drop, or both")
        if self.num_finalists < 1 or self.rounds < 1 or self.refine_children < 1 or self.refine_epochs < 1:
            raise ValueError("num_finalists, rounds, refine_children and refine_epochs must be >= 1")
        if not self.min_ratio >= 1 or not self.rung_factor > 1:
            raise ValueError("min_ratio must be >= 1 and rung_factor > 1")

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["search"] = self.search.to_dict()
        if self.ablation == "none":  # the full method: the keys of runs made before ablations existed
            del out["ablation"]
        return out

    @property
    def method(self) -> str:
        """The name results carry: the full method, or it without one part."""
        return "architecture_compression" + ("" if self.ablation == "none" else f"/{self.ablation}")

    @property
    def directory(self) -> str:
        """The run directory's sub-folder for these results (ablations beside the full method's)."""
        return "compressed" if self.ablation == "none" else f"compressed_{self.ablation}"


@dataclasses.dataclass
class Pool:
    """Candidates of one compression run, with what is known about each."""

    specs: List[archspec.ArchSpec] = dataclasses.field(default_factory=list)
    params: List[int] = dataclasses.field(default_factory=list)
    flops: List[int] = dataclasses.field(default_factory=list)
    predicted: List[float] = dataclasses.field(default_factory=list)
    measured: List[Optional[float]] = dataclasses.field(default_factory=list)  # proxy accuracy, if trained
    origin: List[str] = dataclasses.field(default_factory=list)
    _index: Dict[str, int] = dataclasses.field(default_factory=dict)

    def add(self, spec, params, flops, predicted, origin, measured=None) -> None:
        if spec.hash in self._index:
            i = self._index[spec.hash]
            self.predicted[i] = predicted
            if measured is not None:
                self.measured[i] = measured
            return
        self._index[spec.hash] = len(self.specs)
        self.specs.append(spec)
        self.params.append(int(params))
        self.flops.append(int(flops))
        self.predicted.append(float(predicted))
        self.measured.append(measured)
        self.origin.append(origin)

    def __len__(self) -> int:
        return len(self.specs)

    def index_of(self, spec_hash: str) -> Optional[int]:
        """The position of the candidate with this spec hash, or None."""
        return self._index.get(spec_hash)

    def score(self) -> np.ndarray:
        """Measured proxy accuracy where known, else predicted."""
        return np.array([m if m is not None else p for m, p in zip(self.measured, self.predicted)], np.float64)

    def record(self, index: int, teacher_params: int) -> dict:
        return {"spec_hash": self.specs[index].hash, "params": self.params[index], "flops": self.flops[index],
                "ratio": teacher_params / self.params[index], "predicted_accuracy": self.predicted[index],
                "measured_proxy_accuracy": self.measured[index], "origin": self.origin[index]}


def ladder(low: float, factor: float, count: int) -> List[float]:
    return [low * factor ** i for i in range(count)]


def pick_finalists(pool: Pool, teacher_params: int, config: CompressConfig) -> List[int]:
    """Indices of the finalists: the best-scoring candidate in each rung of the ratio ladder.

    Rungs start at ``target_ratio`` (or ``min_ratio``) and grow by ``rung_factor``; a
    rung is the ratio interval [rung, next rung). Empty rungs are skipped and their
    places go to the next-best candidates of the filled rungs, so the ladder always
    yields ``num_finalists`` distinct architectures when the pool has that many
    above the lowest rung.
    """
    if not len(pool):
        return []
    ratios = teacher_params / np.asarray(pool.params, np.float64)
    score = pool.score()
    low = config.target_ratio or config.min_ratio
    rungs = ladder(low, config.rung_factor, config.num_finalists)
    bounds = rungs + [math.inf]
    eligible = np.flatnonzero(ratios >= low)
    if not len(eligible):
        return []
    per_rung = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        members = eligible[(ratios[eligible] >= lo) & (ratios[eligible] < hi)]
        per_rung.append(list(members[np.argsort(-score[members], kind="stable")]))
    chosen: List[int] = []
    depth = 0
    while len(chosen) < config.num_finalists and any(len(m) > depth for m in per_rung):
        for members in per_rung:
            if len(members) > depth and len(chosen) < config.num_finalists:
                chosen.append(int(members[depth]))
        depth += 1
    return sorted(chosen, key=lambda i: pool.params[i], reverse=True)


def _closest(pool: Pool, teacher_params: int, k: int = 5) -> List[dict]:
    order = np.argsort(pool.params)[:k]
    return [pool.record(int(i), teacher_params) for i in order]


# -- refinement -------------------------------------------------------------------------

def refine(embedding: embedding_lib.Embedding, pool: Pool, records: embedding_training.Records,
           teacher_params: int, search_splits: data.SearchSplits, proxy: child_training.ProxyConfig,
           config: CompressConfig, *, batch_size: int, seed: int, round_index: int,
           teacher_model: Optional[keras.Model] = None, strategy=None) -> embedding_training.Records:
    """One refinement: proxy-train a spread of untrained candidates, fine-tune the embedding on them.

    Returns the records extended with the new measurements (the embedding is updated in place).
    """
    untrained = [i for i in range(len(pool)) if pool.measured[i] is None]
    if not untrained:
        return records
    # The same ladder the finalists come from, deeper: the best few per rung of a wider range.
    wider = dataclasses.replace(config, num_finalists=config.refine_children,
                                min_ratio=max(1.0, (config.target_ratio or config.min_ratio) / 2),
                                target_ratio=None, rung_factor=math.sqrt(config.rung_factor))
    sub = Pool()
    for i in untrained:
        sub.add(pool.specs[i], pool.params[i], pool.flops[i], pool.predicted[i], pool.origin[i])
    picked = [untrained[j] for j in pick_finalists(sub, teacher_params, wider)]
    if not picked:
        return records
    specs = [pool.specs[i] for i in picked]
    base = 1_000_000 * (round_index + 1)  # child indices (seeds) apart from the corpus' own
    bar = progress.Progress(total=len(specs), label=f"refinement {round_index + 1} children", unit="children")
    results = child_training.train_children(
        specs, [base + j for j in range(len(specs))], search_splits, proxy, batch_size=batch_size, seed=seed,
        teacher=teacher_model, strategy=strategy,
        on_result=lambda group: bar.update(len(group), extra="last group: acc " + ", ".join(
            f"{r.val_accuracy:.3f}" for r in group)))
    bar.close()
    tokenizer = embedding.tokenizer
    new = {"tokens": [], "val_accuracy": [], "params": [], "child_index": [], "spec_hash": []}
    for i, result in zip(picked, results):
        if result.status != child_training.OK:
            continue
        pool.measured[i] = float(result.val_accuracy)
        new["tokens"].append(tokenizer.encode(result.spec))
        new["val_accuracy"].append(result.val_accuracy)
        new["params"].append(pool.params[i])
        new["child_index"].append(result.index)
        new["spec_hash"].append(result.spec.hash.encode())
    logging.info("refinement %d: %d candidates proxy-trained (predicted mean %.3f, measured mean %.3f)",
                 round_index + 1, len(new["tokens"]), float(np.mean([pool.predicted[i] for i in picked])),
                 float(np.mean(new["val_accuracy"])) if new["tokens"] else float("nan"))
    if not new["tokens"]:
        return records
    added = embedding_training.Records(
        tokens=np.stack(new["tokens"]).astype(np.int32), val_accuracy=np.asarray(new["val_accuracy"], np.float32),
        params=np.asarray(new["params"], np.int64), child_index=np.asarray(new["child_index"], np.int64),
        replicate=np.zeros(len(new["tokens"]), np.int64), spec_hash=np.asarray(new["spec_hash"], object))
    merged = embedding_training.Records.concatenate([records, added])
    embedding_training.fine_tune(embedding, merged, epochs=config.refine_epochs, seed=seed + round_index + 1,
                                 emphasis=added)
    return merged


# -- the stage ------------------------------------------------------------------------------

@dataclasses.dataclass
class CompressResult:
    """What `compress` found and trained.

    Attributes:
      chosen: the chosen finalist (step 5 of the module docstring).
      finalists: every finalist, in ladder order.
      finalist_pool_indices: each finalist's index in `pool`.
      pool: every candidate, with its prediction and (refined ones) measured proxy accuracy.
      searches: per search round, `latent_search.SearchResult.diagnostics()`.
      timings: seconds per stage ("search_1", "refine_1", ..., "finalists").
      target_met: whether the chosen network meets every target.
      teacher_params: the teacher's parameter count every ratio is taken against.
    """

    chosen: finalists_lib.FinalistResult
    finalists: List[finalists_lib.FinalistResult]
    finalist_pool_indices: List[int]
    pool: Pool
    searches: List[dict]
    timings: Dict[str, float]
    target_met: bool
    teacher_params: int


def compress(embedding: embedding_lib.Embedding, stored_corpus: corpus_lib.Corpus, teacher_spec: archspec.ArchSpec,
             teacher_metrics: dict, splits: data.Splits, data_config: data.DataConfig, config: CompressConfig, *,
             seed: int, proxy_splits: Optional[data.SearchSplits] = None,
             teacher_model: Optional[keras.Model] = None,
             on_finalist: Optional[Callable[[finalists_lib.FinalistResult], None]] = None,
             trained_finalists: Sequence[finalists_lib.FinalistResult] = (),
             strategy=None) -> CompressResult:
    """Runs search, refinement, finalist training and the choice; returns everything the report needs.

    Args:
      embedding: the trained embedding (fine-tuned in place by refinement rounds).
      stored_corpus: the corpus it was trained on (its "ok" records seed the search and refinement).
      teacher_spec, teacher_metrics: the teacher and its metrics.json (params, val/test accuracy).
      splits: all three splits (finalists are tested once on the test split).
      data_config: the data's configuration (batch size, pipelines' seed).
      config: targets and effort.
      seed: the run seed.
      proxy_splits: the data refinement children train on (default `splits.for_search()`).
      teacher_model: the trained teacher (needed for distillation and for inherited finalists or refinement children).
      on_finalist: called with each trained finalist (durable storage).
      trained_finalists: finalists already trained by an earlier, interrupted run (reused by spec hash).
      strategy: the `tf.distribute.Strategy` refinement children and finalists train under (None:
        one device; the latent search and the embedding's fine-tuning always run on one).

    Returns:
      a `CompressResult`.

    Raises:
      TargetUnreachableError: no candidate reaches ``target_ratio``.
    """
    finalists_lib.check_teacher(config.finalist, teacher_model, strategy)  # before any search work, not after it
    proxy_entry = stored_corpus.meta.proxy
    _check_refinable(proxy_entry, teacher_model, strategy)
    label_model = teacher_model
    if proxy_entry.get("init") == child_training.SUPERNET:
        if config.rounds > 1 and config.ablation == "none" and config.search.skeleton == "free":
            raise ValueError("the corpus' labels come from a supernet, which labels only children that keep every "
                             "layer of the teacher: refinement needs --search_skeleton=teacher or widths")
        # Refinement children are labelled by the corpus' own supernet, as the corpus' children were.
        label_model = supernet_lib.load_trained(supernet_lib.corpus_supernet_dir(stored_corpus.corpus_dir))
    timings: Dict[str, float] = {}
    teacher_params = int(teacher_metrics["params"])
    ok = stored_corpus.select(["ok"])
    pool = Pool()
    if config.ablation == "no_embedding":
        _corpus_pool(pool, ok)
    # Refinement children are measured as the corpus' were: its own proxy recipe (the metadata pins every
    # field that changes a record) under the same dtype policy.
    child_policy = proxy_entry.pop("precision", "float32")
    refinement = dict(proxy=child_training.ProxyConfig.from_recipe(proxy_entry), policy=child_policy,
                      splits=proxy_splits or splits.for_search(), batch_size=data_config.batch_size,
                      teacher_model=label_model, strategy=strategy)
    rounds = {"none": config.rounds, "no_refinement": 1, "no_embedding": 0}[config.ablation]
    searches = _search_rounds(embedding, pool, embedding_training.Records.from_corpus(ok), teacher_spec,
                              teacher_params, config, rounds, refinement, seed=seed, timings=timings)
    _check_reachable(pool, teacher_params, config)
    picked = pick_finalists(pool, teacher_params, config)
    specs = [pool.specs[i] for i in picked]
    start = time.perf_counter()
    results = _train_or_reuse(specs, trained_finalists, splits, data_config, config.finalist, seed=seed,
                              teacher_model=teacher_model, on_result=on_finalist, strategy=strategy)
    timings["finalists"] = time.perf_counter() - start
    chosen, met = choose(results, teacher_metrics, config, teacher_params)
    return CompressResult(chosen=chosen, finalists=list(results), finalist_pool_indices=list(picked), pool=pool,
                          searches=searches, timings=timings, target_met=bool(met), teacher_params=teacher_params)


def _check_refinable(proxy_entry: dict, teacher_model: Optional[keras.Model], strategy) -> None:
    """Refinement children of an inherited corpus need the teacher, on one replica."""
    if proxy_entry.get("init") in (child_training.INHERIT, child_training.SUPERNET):
        if teacher_model is None:
            raise ValueError("the corpus' children inherited the teacher's weights: refinement children need the "
                             "trained teacher (teacher_model)")
        if distribution.replicas(strategy) > 1:
            raise ValueError("refining an inherited corpus is not supported under a multi-replica strategy yet")


def _search_rounds(embedding: embedding_lib.Embedding, pool: Pool, records: embedding_training.Records,
                   teacher_spec: archspec.ArchSpec, teacher_params: int, config: CompressConfig, rounds: int,
                   refinement: dict, *, seed: int, timings: Dict[str, float]) -> List[dict]:
    """`rounds` latent searches into `pool`, each after the first preceded by a refinement; their diagnostics."""
    searches = []
    optimiser = latent_search.make_optimiser(embedding)
    for round_index in range(rounds):
        if round_index:
            start = time.perf_counter()
            with precision.policy_scope(refinement["policy"]):
                records = refine(embedding, pool, records, teacher_params, refinement["splits"], refinement["proxy"],
                                 config, batch_size=refinement["batch_size"], seed=seed, round_index=round_index - 1,
                                 teacher_model=refinement["teacher_model"], strategy=refinement["strategy"])
            timings[f"refine_{round_index}"] = time.perf_counter() - start
            optimiser = latent_search.make_optimiser(embedding)
            # Predictions for everything found so far now come from the fine-tuned embedding.
            if len(pool):
                again = embedding.predict(embedding.encode_specs(pool.specs))["accuracy"]
                pool.predicted = [float(v) for v in again]
        start = time.perf_counter()
        found = latent_search.search(embedding, teacher_spec, config.search, corpus_tokens=records.tokens,
                                     corpus_params=records.params, corpus_accuracy=records.val_accuracy,
                                     optimiser=optimiser)
        timings[f"search_{round_index + 1}"] = time.perf_counter() - start
        for candidate in found.candidates:
            pool.add(candidate.spec, candidate.params, candidate.flops, candidate.predicted_accuracy,
                     f"search round {round_index + 1}")
        searches.append(found.diagnostics())
        logging.info("search round %d: %d new candidates (%d in the pool), loop %.2f s", round_index + 1,
                     len(found.candidates), len(pool), found.seconds)
    return searches


def _check_reachable(pool: Pool, teacher_params: int, config: CompressConfig) -> None:
    ratios = teacher_params / np.asarray(pool.params or [math.inf], np.float64)
    if config.target_ratio is not None and not np.any(ratios >= config.target_ratio):
        closest = _closest(pool, teacher_params)
        raise TargetUnreachableError(
            f"no candidate reaches --target_ratio={config.target_ratio:g}: the most compressed found is "
            f"{max(ratios):.1f}x; closest: " + ", ".join(f"{c['ratio']:.1f}x (predicted accuracy "
                                                          f"{c['predicted_accuracy']:.3f})" for c in closest) +
            ". Lower the target, search longer (--search_steps, --trust_radius), or grow the corpus.")


def _train_or_reuse(specs, trained, splits, data_config, config, *, seed, teacher_model, on_result, strategy):
    """The finalists of `specs` in order: those in `trained` (an interrupted run's) reused, the rest trained."""
    done = {result.spec.hash: result for result in trained}
    todo = [spec for spec in specs if spec.hash not in done]
    for result in finalists_lib.train_finalists(todo, splits, data_config, config, seed=seed,
                                                teacher_model=teacher_model, on_result=on_result, strategy=strategy):
        done[result.spec.hash] = result
    return [done[spec.hash] for spec in specs]


def _corpus_pool(pool: Pool, ok: corpus_lib.Corpus) -> None:
    """The ``no_embedding`` ablation's candidates: every corpus child, scored by its mean proxy accuracy."""
    by_hash: Dict[str, list] = {}
    for record in ok.records:
        by_hash.setdefault(record.spec_hash, []).append(record)
    for records in by_hash.values():
        first = records[0]
        accuracy = float(np.mean([r.val_accuracy for r in records]))
        pool.add(first.spec(), first.params, first.flops, accuracy, "corpus", measured=accuracy)


def trained_front(results: Sequence[finalists_lib.FinalistResult]) -> List[finalists_lib.FinalistResult]:
    """The trained finalists no other beats on **validation** accuracy and size (fewer or equal
    parameters and higher or equal validation accuracy, one strictly), smallest first. The chosen
    network is among them (`choose` takes the smallest within the drop, or the most accurate)."""
    usable = [r for r in results if r.ok]
    order = latent_search.pareto_front([r.params for r in usable], [r.val_accuracy for r in usable])
    return [usable[i] for i in order]


def choose(results: Sequence[finalists_lib.FinalistResult], teacher_metrics: dict, config: CompressConfig,
           teacher_params: int):
    """(chosen finalist, whether it meets every target). See the module docstring, step 5."""
    usable = [r for r in results if r.ok]
    if not usable:
        raise ValueError("no finalist trained successfully (see the log for the reasons)")
    floor = config.target_ratio or 1.0
    above = [r for r in usable if teacher_params / r.params >= floor - 1e-9] or usable
    if config.max_accuracy_drop is None:
        best = max(above, key=lambda r: (r.val_accuracy, -r.params))
        return best, teacher_params / best.params >= floor - 1e-9
    chosen = finalists_lib.choose(above, teacher_accuracy=float(teacher_metrics["val_accuracy"]),
                                  max_accuracy_drop=config.max_accuracy_drop)
    met = finalists_lib.within_drop(chosen, teacher_accuracy=float(teacher_metrics["val_accuracy"]),
                                    max_accuracy_drop=config.max_accuracy_drop) and \
        teacher_params / chosen.params >= floor - 1e-9
    return chosen, met


# -- export -----------------------------------------------------------------------------------

def with_normalisation(model: keras.Model, normalisation: Optional[dict]) -> keras.Model:
    """`model` behind a Normalization layer holding the data's per-channel mean and std, so the
    exported network takes raw inputs (as the data set stores them) rather than normalised ones."""
    if not normalisation:
        return model
    inputs = keras.Input(model.input_shape[1:], name="raw_input")
    mean = np.asarray(normalisation["mean"], np.float32)
    std = np.asarray(normalisation["std"], np.float32)
    x = keras.layers.Normalization(mean=mean, variance=np.square(std), name="input_normalisation")(inputs)
    return keras.Model(inputs, model(x), name=f"{model.name}_raw_input")


def export(model: keras.Model, directory: str, sample: np.ndarray, normalisation: Optional[dict] = None) -> dict:
    """Writes ``model.keras`` and ``saved_model/`` into `directory`; checks both reload to the same outputs.

    With `normalisation` ({"mean": [...], "std": [...]} per channel, as `data.DatasetInfo`
    holds it) the exported network normalises its inputs itself (`with_normalisation`).

    Returns {"keras": path, "saved_model": path, "max_abs_difference": float, "raw_inputs": bool}
    where the difference is the largest between the in-memory model and either reloaded copy on `sample`.

    Raises:
      AssertionError: a reloaded copy's outputs differ (by more than 1e-5).
    """
    model = with_normalisation(model, normalisation)
    tf.io.gfile.makedirs(directory)
    keras_path = os.path.join(directory, "model.keras")
    saved_path = os.path.join(directory, "saved_model")
    model.save(keras_path)
    if tf.io.gfile.exists(saved_path):
        tf.io.gfile.rmtree(saved_path)
    model.export(saved_path, verbose=False)
    reloaded = tf.saved_model.load(saved_path)
    sample = tf.constant(sample, tf.float32)
    expected = np.asarray(model(sample, training=False))
    got = np.asarray(reloaded.serve(sample))
    difference = float(np.max(np.abs(expected - got)))
    if not difference <= 1e-5:
        raise AssertionError(f"the reloaded SavedModel differs from the trained model by {difference}")
    keras_reloaded = keras.saving.load_model(keras_path, safe_mode=True, compile=False)
    keras_difference = float(np.max(np.abs(expected - np.asarray(keras_reloaded(sample, training=False)))))
    if not keras_difference <= 1e-5:
        raise AssertionError(f"the reloaded .keras model differs from the trained model by {keras_difference}")
    return {"keras": keras_path, "saved_model": saved_path, "max_abs_difference": max(difference, keras_difference),
            "raw_inputs": bool(normalisation)}
