"""Generating a corpus: sample children of a teacher, train them, store them durably.

    teacher spec --sampler--> children --child_training (packed, proxy)--> corpus shards

The list of children is a pure function of the teacher, the search space, the
sampler configuration and the seed, so every process (shard) and every resumed
run sees the same list; `corpus.shard_indices` gives each shard its part, and
`corpus.CorpusWriter.done_keys` tells a resumed run what is already stored.
Each packed group is written as one part file as soon as it finishes, so a
killed run loses at most the group in flight.
"""

import contextlib
import dataclasses
import functools
import math
import os
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from acompress import archspec
from acompress import child_training
from acompress import child_workers
from acompress import corpus
from acompress import data
from acompress import progress
from acompress import sampler as sampler_lib
from acompress import search_space as search_space_lib
from acompress import supernet as supernet_lib
from acompress import tokens


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    """What corpus to make.

    Attributes:
      num_children: children in the complete corpus (over all shards).
      replicate_fraction: share of children trained a second time with another seed
        (replicate 1), which measures the noise ceiling of the accuracy predictor.
      num_shards: processes the work is split over.
      shard_index: which of them this process is.
      sampler: how children are drawn.
      proxy: how children are trained.
      groups_per_worker: 0 trains the children in this process; N > 0 trains each packed
        group in a worker process that is replaced after N groups (`child_workers`), so
        memory stays bounded whatever the corpus size (TensorFlow keeps ~180 MB per traced
        group). Results are the same either way; not pinned in the metadata.
    """

    num_children: int = 500
    replicate_fraction: float = 0.1
    num_shards: int = 1
    shard_index: int = 0
    sampler: sampler_lib.SamplerConfig = dataclasses.field(default_factory=sampler_lib.SamplerConfig)
    proxy: child_training.ProxyConfig = dataclasses.field(default_factory=child_training.ProxyConfig)
    groups_per_worker: int = 0

    def __post_init__(self):
        if self.groups_per_worker < 0:
            raise ValueError(f"groups_per_worker must be >= 0, got {self.groups_per_worker}")
        if self.num_children < 1:
            raise ValueError(f"num_children must be >= 1, got {self.num_children}")
        if not 0.0 <= self.replicate_fraction <= 1.0:
            raise ValueError(f"replicate_fraction must be in [0, 1], got {self.replicate_fraction}")
        corpus.shard_indices(self.num_children, self.num_shards, self.shard_index)
        if self.proxy.init == child_training.SUPERNET:
            if self.sampler.p_remove > 0:
                raise ValueError("supernet labels (--proxy_init=supernet) are for children that keep every layer of "
                                 f"the teacher: set --p_remove=0 (got {self.sampler.p_remove:g})")
            if self.num_shards > 1:
                raise ValueError("supernet labels need one supernet for the whole corpus: they are not supported "
                                 "with --num_shards > 1 yet (one process labels thousands of children a minute)")

    def to_dict(self) -> dict:
        return {"num_children": self.num_children, "replicate_fraction": self.replicate_fraction,
                "num_shards": self.num_shards, "shard_index": self.shard_index,
                "sampler": self.sampler.to_dict(), "proxy": self.proxy.to_dict(),
                "groups_per_worker": self.groups_per_worker}


def search_space_for(teacher: archspec.ArchSpec) -> search_space_lib.SearchSpace:
    """The default space for a teacher's corpus: the default vocabularies widened by the
    kinds and values the teacher itself uses (`SearchSpace.extended_for`: a teacher inside
    the defaults gets them unchanged), and no more layers than the teacher has (children
    only remove layers)."""
    return search_space_lib.SearchSpace(max_layers=len(teacher)).extended_for(teacher)


def replicated_indices(num_children: int, fraction: float, seed: int) -> List[int]:
    """The children trained twice: a seeded random subset of ceil(fraction * n)."""
    count = int(math.ceil(fraction * num_children))
    order = np.random.RandomState(seed + 7919).permutation(num_children)
    return sorted(int(i) for i in order[:count])


def make_metadata(teacher: archspec.ArchSpec, data_config: data.DataConfig, info: data.DatasetInfo,
                  config: CorpusConfig, space: search_space_lib.SearchSpace, seed: int) -> Dict[str, Any]:
    """The corpus metadata: everything a record's meaning depends on.

    The shard layout (num_shards, shard_index) is not pinned: shards written by
    different processes form one corpus.
    """
    input_shape, num_classes = info.input_shape, info.num_classes
    tokenizer = tokens.Tokenizer(space)
    # Pinned: what changes a record. Not pinned: how children are packed (packed and solo
    # results are identical), so machines with other pack sizes share a corpus.
    # An inherited recipe pins init, importance and recalibrate_batches; a scratch one leaves them
    # out (as corpora made before inheritance did), so a corpus never resumes under another recipe.
    proxy = config.proxy.recipe()
    # Children follow the global dtype policy; a mixed-precision corpus says so (a float32 one
    # has no entry, as before mixed-precision children existed), and resuming it under another
    # policy is refused. Under mixed_float16 one loss scale serves a packed group, so the pack
    # size changes results and is pinned too.
    policy = keras.mixed_precision.global_policy().name
    if policy != "float32":
        proxy.update(precision=policy, pack=config.proxy.pack)
    return corpus.make_metadata(
        dataset=dataset_entry(data_config, info),
        teacher=corpus.describe_teacher(teacher, params=teacher.count_params(input_shape, num_classes),
                                        flops=teacher.count_flops(input_shape, num_classes)),
        search_space=space, sampler=config.sampler.to_dict(), proxy=proxy, seed=seed,
        num_children=config.num_children, tokens_shape=tokenizer.shape,
        extra={"replicate_fraction": config.replicate_fraction})


def dataset_entry(data_config: data.DataConfig, info: data.DatasetInfo) -> Dict[str, Any]:
    """The metadata's "dataset": which data, split and preprocessed how. Not pinned: where the
    data lives and how it is read (data_dir, download, cache, the source path), so machines
    with other paths share a corpus."""
    unpinned = ("data_dir", "download", "cache", "cache_dir")
    dataset_config = {k: v for k, v in data_config.to_dict().items() if k not in unpinned}
    dataset_info = {k: v for k, v in info.to_dict().items() if k != "source"}
    return {"name": info.name, "config": dataset_config, "info": dataset_info}


def check_source(stored: corpus.Corpus, teacher: archspec.ArchSpec, data_config: data.DataConfig,
                 info: data.DatasetInfo) -> None:
    """Refuses a corpus made from another data set or another teacher than these.

    For readers that take the data and the teacher from their own flags (acompress-compress);
    `data_config` and `info` are the proxy data's, as `generate` was given them.

    Raises:
      corpus.MetadataMismatchError: naming the differing fields ("dataset....", "teacher.hash").
    """
    metadata = stored.metadata
    differences = corpus.metadata_differences(
        {"dataset": metadata.get("dataset"), "teacher": {"hash": (metadata.get("teacher") or {}).get("hash")}},
        {"dataset": dataset_entry(data_config, info), "teacher": {"hash": teacher.hash}})
    if differences:
        raise corpus.MetadataMismatchError(stored.corpus_dir, differences)


def sample(teacher: archspec.ArchSpec, info: data.DatasetInfo, config: CorpusConfig,
           space: search_space_lib.SearchSpace, seed: int) -> List[archspec.ArchSpec]:
    return sampler_lib.sample_children(teacher, input_shape=info.input_shape, num_classes=info.num_classes,
                                   count=config.num_children, seed=seed, space=space, config=config.sampler)


def todo(children: Sequence[archspec.ArchSpec], config: CorpusConfig, done: set,
         seed: int) -> List[Tuple[int, int]]:
    """(child_index, replicate) pairs this shard still has to train, first trainings first."""
    mine = corpus.shard_indices(len(children), config.num_shards, config.shard_index)
    replicated = set(replicated_indices(len(children), config.replicate_fraction, seed))
    keys = [(i, 0) for i in mine] + [(i, 1) for i in mine if i in replicated]
    return [key for key in keys if key not in done]


def generate(corpus_dir: str, teacher: archspec.ArchSpec, search: data.SearchSplits,
             data_config: data.DataConfig, config: CorpusConfig, *, seed: int,
             space: Optional[search_space_lib.SearchSpace] = None,
             teacher_model: Optional[keras.Model] = None, strategy=None) -> corpus.Corpus:
    """Generates (or resumes) this shard of the corpus in `corpus_dir`; returns the corpus as stored
    (all shards there, read once: `.summary()` for the overview).

    Args:
      corpus_dir: where the shards and metadata.json go (any tf.io.gfile path).
      teacher: the teacher's spec.
      search: the train/validation data children see (never the test split). Its
        training split is the proxy data (see `data.DataConfig.train_fraction`).
      data_config: how `search` was made (pinned in the metadata, and its batch
        size and seed drive the pipelines).
      config: the corpus to make.
      seed: the run seed: sampling and every child's initialisation derive from it.
      space: the search space; default `search_space_for(teacher)`.
      teacher_model: the trained teacher, needed to distil (`config.proxy.distill`) and for inherited
        children (`config.proxy.init`).
      strategy: the `tf.distribute.Strategy` children train under (None: one device). Shards
        (`config.shard_index`) split the children across processes; a strategy splits each
        child's batches across devices or workers.
    """
    if not isinstance(search, data.SearchSplits):
        raise TypeError(f"generate takes data.SearchSplits (Splits.for_search()), got {type(search).__name__}")
    space = space or search_space_for(teacher)
    info = search.info
    metadata = make_metadata(teacher, data_config, info, config, space, seed)
    writer = corpus.CorpusWriter(corpus_dir, metadata, config.shard_index, config.num_shards)
    children = sample(teacher, info, config, space, seed)
    keys = todo(children, config, set(), seed)
    done = writer.done_keys()
    pending = [key for key in keys if key not in done]
    total = len(keys)
    logging.info("Corpus shard %d/%d: %d of %d trainings to do (%d children, %.0f%% replicated)",
                 config.shard_index, config.num_shards, len(pending), total, len(children),
                 100 * config.replicate_fraction)
    if pending:
        if config.proxy.init == child_training.SUPERNET:
            teacher_model = train_supernet(corpus_dir, teacher_model, children, search, data_config, config.proxy,
                                           seed=seed)
        _train_pending(children, pending, writer, search, data_config, config, seed, space, teacher_model, total,
                       strategy)
    return corpus.read_corpus(corpus_dir)


def train_supernet(corpus_dir: str, teacher_model: Optional[keras.Model], children, search: data.SearchSplits,
                   data_config: data.DataConfig, proxy: child_training.ProxyConfig, *, seed: int) -> keras.Model:
    """The corpus' supernet (`supernet.train_or_load` in `supernet.corpus_supernet_dir`), trained on the corpus'
    own children."""
    if teacher_model is None:
        raise ValueError("supernet labels (--proxy_init=supernet) need the trained teacher")
    return supernet_lib.train_or_load(supernet_lib.corpus_supernet_dir(corpus_dir), teacher_model, children, search,
                                      epochs=proxy.epochs, learning_rate=proxy.learning_rate, schedule=proxy.schedule,
                                      children_per_step=proxy.supernet_children,
                                      recalibrate_batches=proxy.recalibrate_batches,
                                      batch_size=data_config.batch_size, seed=seed)


def _train_pending(children, pending, writer, search, data_config, config, seed, space, teacher_model, total,
                   strategy=None):
    info = search.info
    teacher_params = writer.meta.teacher_params
    tokenizer = tokens.Tokenizer(space)
    bar = progress.Progress(total=total, label="children", unit="children", start=total - len(pending))

    def store(results: List[child_training.ChildResult], replicate: int) -> None:
        records = [_record(result, replicate, info, tokenizer) for result in results]
        writer.write(records)
        best = max((r.val_accuracy for r in records if r.status == child_training.OK), default=float("nan"))
        sizes = ", ".join(f"{teacher_params / r.params:.0f}x" for r in records)
        bar.update(len(records), extra=f"last group: ratios {sizes}; best acc {best:.3f}")

    with _trainer(config, teacher_model, strategy) as train:
        for replicate in sorted({r for _, r in pending}):
            indices = [i for i, r in pending if r == replicate]
            train([children[i] for i in indices], indices, search, config.proxy, batch_size=data_config.batch_size,
                  seed=seed, replicate=replicate,
                  on_result=lambda results, replicate=replicate: store(results, replicate))
    bar.close()


@contextlib.contextmanager
def _trainer(config: CorpusConfig, teacher_model, strategy):
    """`child_training.train_children` in this process, or in worker processes (`child_workers`) with the
    teacher saved once for them. A strategy always trains in this process (its devices and workers are
    this process's), and so does a machine with a GPU: this process already holds the device's memory, and
    a worker could not get any."""
    # Supernet labels trace once for every child (no per-group graphs, no leak): always in this process.
    in_process = not config.groups_per_worker or strategy is not None or config.proxy.init == child_training.SUPERNET
    if not in_process and tf.config.list_physical_devices("GPU"):
        logging.info("a GPU is visible: children train in this process (--groups_per_worker ignored)")
        in_process = True
    if in_process:
        yield functools.partial(child_training.train_children, teacher=teacher_model, strategy=strategy)
        return
    with tempfile.TemporaryDirectory(prefix="acompress_teacher_") as directory:
        teacher_path = None
        if teacher_model is not None and config.proxy.needs_teacher:  # workers load it only when they use it
            teacher_path = os.path.join(directory, "teacher.keras")
            teacher_model.save(teacher_path)
        yield functools.partial(child_workers.train_children_in_workers, teacher_path=teacher_path,
                                groups_per_worker=config.groups_per_worker, work_dir=directory)


def _record(result: child_training.ChildResult, replicate: int, info: data.DatasetInfo,
            tokenizer: tokens.Tokenizer) -> corpus.ChildRecord:
    spec = result.spec
    return corpus.ChildRecord.from_spec(
        spec, child_index=result.index, tokens=tokenizer.encode(spec).ravel().tolist(),
        val_accuracy=result.val_accuracy, params=spec.count_params(info.input_shape, info.num_classes),
        flops=spec.count_flops(info.input_shape, info.num_classes), epochs=result.epochs,
        train_seconds=result.train_seconds, seed=result.seed, status=result.status, reason=result.reason,
        replicate=replicate)
