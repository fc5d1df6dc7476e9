"""Corpus storage: trained children of a teacher, as durable TFRecord shards.

The corpus teaches the embedding: each record is one child architecture, its
tokens, and what training it on the proxy budget gave (validation accuracy,
parameters, FLOPs, status). This module stores and reads records; training them
is the caller's job.

On-disk layout of a corpus directory (any `tf.io.gfile` path, a bucket included)::

    metadata.json                                  pins what the records depend on
    shard-00000-of-00002.part-00000.tfrecord       one batch of records of shard 0
    shard-00000-of-00002.part-00001.tfrecord       the next batch of shard 0
    shard-00001-of-00002.part-00000.tfrecord       ...
    shard-00001-of-00002.part-00002.tfrecord.<hex>.tmp   a batch in flight (ignored)

Durability. A `CorpusWriter` writes each batch of records to its own part file:
first under a unique ``*.tmp`` name, then renamed to its final name. Readers only
look at final names, and a part file never changes once visible, so a writer
killed at any moment (kill -9) loses at most the batch in flight and leaves no
partial record visible; a leftover ``*.tmp`` is ignored (and safe to delete).
Process death is covered; a machine crash before the OS flushes its page cache
is not (`tf.io.gfile` has no fsync). Each record of a part file also carries the
size of its file and its position in it (`part_size`, `part_position`), so a
file cut short even at a record boundary is detected.

Resume. `CorpusWriter.done_keys()` lists the (child_index, replicate) keys its
shard already holds; the caller skips them. A key written twice anyway is skipped
by the writer and, should two files still hold it (two writers on one shard),
deduplicated on read, keeping the first in (shard, part, position) order.

Corrupt files. A part file that cannot be read to its end (`tf.errors.DataLossError`),
or holds a record that does not parse or validate, is rejected as a whole: it is
logged and listed in `Corpus.corrupt_files`, its records are neither returned nor
counted as done (so a resumed writer trains those children again), and the rest
of the corpus stays readable. `as_dataset` reads the same set of files: it uses
the validated file list and record positions of `read_corpus`, not
`ignore_errors` (which would keep the readable prefix of a truncated file and
could not deduplicate).

Metadata. ``metadata.json`` (see `make_metadata`) pins the dataset, the teacher,
the search space, the sampler, the proxy training budget, the seed, the tokens
shape and the number of children. Writers and readers compare it with what they
expect and raise `MetadataMismatchError` naming the first differing field; the
package versions it records are not compared, only logged when they drift.
`CorpusMetadata` (``Corpus.meta``, ``CorpusWriter.meta``) reads its entries as
typed values; the stored dict (``.metadata``) is the file's content as it is.
"""

import copy
import dataclasses
import json
import math
import os
import platform
import re
import uuid
from importlib import metadata as importlib_metadata
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from absl import logging
from google.protobuf import message as protobuf_message
import numpy as np
import tensorflow as tf

import acompress
from acompress import archspec
from acompress import rundir
from acompress import sampler as sampler_lib
from acompress import search_space as search_space_lib
from acompress import status as status_lib

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
TMP_SUFFIX = ".tmp"
STATUSES = status_lib.STATUSES
# Keys of metadata.json that writers and readers do not compare.
UNPINNED_KEYS = ("versions",)
METADATA_KEYS = ("dataset", "extra", "format_version", "num_children", "proxy", "sampler",
                 "search_space", "seed", "teacher", "tokens_shape", "versions")

_PART_RE = re.compile(r"^shard-(\d+)-of-(\d+)\.part-(\d+)\.tfrecord$")
_RENAME_ATTEMPTS = 100


class MetadataMismatchError(ValueError):
    """Stored corpus metadata differs from the expected one in a pinned field.

    Attributes:
      differences: (field path, stored value, given value) for every differing field,
        e.g. ("proxy.epochs", 5, 10); the message starts with the first.
    """

    def __init__(self, corpus_dir: str, differences: Sequence[Tuple[str, Any, Any]]):
        self.corpus_dir = corpus_dir
        self.differences = list(differences)
        shown = "; ".join(f"{path}: stored {_short(stored)}, given {_short(given)}"
                          for path, stored, given in self.differences[:5])
        more = f" (and {len(self.differences) - 5} more)" if len(self.differences) > 5 else ""
        super().__init__(f"{shown}{more} -- the corpus in {corpus_dir} was made with other settings; "
                         "use another corpus directory or the settings it was made with")


# -- the record ----------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class ChildRecord:
    """One trained (or failed) child: the unit of the corpus.

    Values are normalised on construction (numpy scalars become Python numbers,
    tokens a flat tuple of ints) and validated (ValueError naming the field).
    Two records are equal when all fields are, NaN accuracies included.
    """

    # Position of the child in the deterministic list of sampled children, from 0.
    child_index: int
    # The child's canonical spec JSON (`archspec.ArchSpec.to_json()`).
    spec_json: str
    # `archspec.ArchSpec.hash` of that spec (16 hex digits).
    spec_hash: str
    # The spec's tokens, flattened row-major from [max_layers, num_fields]
    # (metadata "tokens_shape"); empty if the corpus is not tokenised.
    tokens: Tuple[int, ...]
    # Validation accuracy after proxy training, in [0, 1]; NaN if training failed.
    # Stored as float32 (the only float type of tf.train.Example).
    val_accuracy: float
    # Exact parameter count of the built child (head included).
    params: int
    # Multiply-adds of the child (head included).
    flops: int
    # Epochs actually run (fewer than the budget if stopped early or failed).
    epochs: int
    # Wall-clock seconds spent training (float32 on disk).
    train_seconds: float
    # Seed the child was trained with.
    seed: int
    # "ok": trained; "failed": could not build or train; "diverged": loss became NaN/inf.
    status: str
    # Why the child is not ok (an error message); empty when ok.
    reason: str
    # 0: the child's first training; 1, 2, ...: further trainings of the same child
    # with other seeds, to measure the noise ceiling.
    replicate: int = 0

    def __post_init__(self):
        for name in ("child_index", "params", "flops", "epochs", "seed", "replicate"):
            self._set(name, _as_int(getattr(self, name), name))
        for name in ("child_index", "params", "flops", "epochs", "replicate"):
            if getattr(self, name) < 0:
                raise ValueError(f"ChildRecord.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("spec_json", "spec_hash", "status", "reason"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"ChildRecord.{name} must be a string, got {type(getattr(self, name)).__name__}")
        for name in ("val_accuracy", "train_seconds"):
            self._set(name, _as_float(getattr(self, name), name))
        self._set("tokens", _as_tokens(self.tokens))
        if self.status not in STATUSES:
            raise ValueError(f"ChildRecord.status must be one of {STATUSES}, got {self.status!r}")
        if self.status == "ok":
            if self.reason:
                raise ValueError(f"ChildRecord.reason must be empty when status is 'ok', got {self.reason!r}")
            if not 0.0 <= self.val_accuracy <= 1.0:
                raise ValueError(f"ChildRecord.val_accuracy must be in [0, 1] when status is 'ok', "
                                 f"got {self.val_accuracy}")
        elif not self.reason:
            raise ValueError(f"ChildRecord.reason must say why the child is {self.status!r}")

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)

    @classmethod
    def from_spec(cls, spec: archspec.ArchSpec, **fields) -> "ChildRecord":
        """A record of `spec`: spec_json and spec_hash are filled in; tokens default to ()."""
        fields.setdefault("tokens", ())
        return cls(spec_json=spec.to_json(), spec_hash=spec.hash, **fields)

    @property
    def key(self) -> Tuple[int, int]:
        """(child_index, replicate): what identifies a record in a corpus."""
        return (self.child_index, self.replicate)

    def spec(self) -> archspec.ArchSpec:
        return archspec.ArchSpec.from_json(self.spec_json)

    def to_dict(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        out["tokens"] = list(self.tokens)
        return out

    def _compared(self) -> tuple:
        values = dataclasses.astuple(self)
        return tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in values)

    def __eq__(self, other) -> bool:
        if not isinstance(other, ChildRecord):
            return NotImplemented
        return self._compared() == other._compared()

    def __hash__(self) -> int:
        return hash(self._compared())


def _as_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"ChildRecord.{name} must be an integer, got {value!r}")
    return int(value)


def _as_float(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"ChildRecord.{name} must be a number, got {value!r}")
    return float(value)


def _as_tokens(tokens) -> Tuple[int, ...]:
    array = np.asarray(tokens)
    if array.size == 0:
        return ()
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"ChildRecord.tokens must be integers, got dtype {array.dtype}")
    return tuple(int(t) for t in array.reshape(-1))


# -- tf.train.Example ------------------------------------------------------------

_INT_FIELDS = ("child_index", "params", "flops", "epochs", "seed", "replicate")
_FLOAT_FIELDS = ("val_accuracy", "train_seconds")
_BYTES_FIELDS = ("spec_json", "spec_hash", "status", "reason")
# Framing features a writer adds to every record of a part file (see module doc).
_PART_SIZE, _PART_POSITION = "part_size", "part_position"


def _int64(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def to_example(record: ChildRecord) -> tf.train.Example:
    """The record as a tf.train.Example: one feature per field, tokens an int64 list."""
    feature = {name: _int64([getattr(record, name)]) for name in _INT_FIELDS}
    feature.update({name: tf.train.Feature(float_list=tf.train.FloatList(value=[getattr(record, name)]))
                    for name in _FLOAT_FIELDS})
    feature.update({name: tf.train.Feature(bytes_list=tf.train.BytesList(value=[getattr(record, name).encode()]))
                    for name in _BYTES_FIELDS})
    feature["tokens"] = _int64(record.tokens)
    return tf.train.Example(features=tf.train.Features(feature=feature))


def from_example(example) -> ChildRecord:
    """The record of a tf.train.Example (or its serialised bytes).

    Raises:
      ValueError: bytes that do not parse, a missing or mistyped feature, or
        values a ChildRecord refuses.
    """
    fields, _ = _fields_of_example(example)
    return ChildRecord(**fields)


def _fields_of_example(example) -> Tuple[Dict[str, Any], Dict[str, int]]:
    """(ChildRecord fields, framing features present) of an Example or its bytes."""
    if isinstance(example, bytes):
        try:
            example = tf.train.Example.FromString(example)
        except protobuf_message.DecodeError as error:
            raise ValueError(f"not a tf.train.Example: {error}") from None
    features = example.features.feature

    def values(name: str, kind: str, single: bool = True):
        if name not in features:
            raise ValueError(f"feature {name!r} is missing")
        if features[name].WhichOneof("kind") not in (kind, None):
            raise ValueError(f"feature {name!r} is a {features[name].WhichOneof('kind')}, expected {kind}")
        found = list(getattr(features[name], kind).value)
        if single and len(found) != 1:
            raise ValueError(f"feature {name!r} holds {len(found)} values, expected 1")
        return found[0] if single else found

    fields = {name: values(name, "int64_list") for name in _INT_FIELDS}
    fields.update({name: values(name, "float_list") for name in _FLOAT_FIELDS})
    for name in _BYTES_FIELDS:
        try:
            fields[name] = values(name, "bytes_list").decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"feature {name!r} is not UTF-8") from None
    fields["tokens"] = tuple(values("tokens", "int64_list", single=False))
    framing = {name: values(name, "int64_list") for name in (_PART_SIZE, _PART_POSITION) if name in features}
    return fields, framing


def _part_example(record: ChildRecord, position: int, size: int) -> bytes:
    example = to_example(record)
    example.features.feature[_PART_SIZE].CopyFrom(_int64([size]))
    example.features.feature[_PART_POSITION].CopyFrom(_int64([position]))
    return example.SerializeToString()


# -- metadata ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class CorpusMetadata:
    """A typed, read-only view of a corpus' metadata (``metadata.json``, as `make_metadata` builds it).

    It reads the stored dict and never changes it: what is written and compared stays
    the dict. Each property builds a fresh value (a parsed object or a copy), so a
    caller cannot alter the metadata through it. A missing entry raises KeyError.

    Attributes:
      stored: the metadata dict.
    """

    stored: Mapping[str, Any]

    @property
    def teacher_spec(self) -> archspec.ArchSpec:
        return archspec.ArchSpec.from_dict(self.stored["teacher"]["spec"])

    @property
    def teacher_hash(self) -> str:
        return self.stored["teacher"]["hash"]

    @property
    def teacher_params(self) -> int:
        return int(self.stored["teacher"]["params"])

    @property
    def search_space(self) -> search_space_lib.SearchSpace:
        return search_space_lib.SearchSpace.from_dict(self.stored["search_space"]["config"])

    @property
    def sampler_config(self) -> sampler_lib.SamplerConfig:
        return sampler_lib.SamplerConfig.from_dict(self.stored["sampler"])

    @property
    def proxy(self) -> Dict[str, Any]:
        """The proxy training recipe the records were trained with (a copy of the stored dict)."""
        return copy.deepcopy(dict(self.stored["proxy"]))

    @property
    def dataset_info(self) -> Dict[str, Any]:
        """What the data is (``input_shape``, ``num_classes``, sizes; a copy of the stored dict)."""
        return copy.deepcopy(dict(self.stored["dataset"]["info"]))

    @property
    def num_children(self) -> int:
        return int(self.stored["num_children"])

    @property
    def seed(self) -> int:
        return int(self.stored["seed"])

    @property
    def tokens_shape(self) -> Optional[Tuple[int, ...]]:
        """[max_layers, num_fields] of the tokens, or None for an untokenised corpus."""
        shape = self.stored.get("tokens_shape")
        return None if shape is None else tuple(shape)


def package_versions() -> Dict[str, str]:
    """Versions of the packages a corpus depends on (recorded, not compared)."""
    try:
        keras_version = importlib_metadata.version("keras")
    except importlib_metadata.PackageNotFoundError:
        keras_version = "unknown"
    return {"acompress": acompress.__version__, "keras": keras_version, "numpy": np.__version__,
            "python": platform.python_version(), "tensorflow": tf.__version__}


def describe_teacher(spec: archspec.ArchSpec, *, params: int, flops: Optional[int] = None) -> Dict[str, Any]:
    """The teacher entry of `make_metadata` for `spec` (params from `spec.count_params`)."""
    out = {"spec": spec.to_dict(), "hash": spec.hash, "params": int(params)}
    if flops is not None:
        out["flops"] = int(flops)
    return out


def make_metadata(*, dataset: Mapping[str, Any], teacher: Mapping[str, Any], search_space,
                  sampler: Any, proxy: Any, seed: int, num_children: int,
                  tokens_shape: Optional[Sequence[int]] = None,
                  extra: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The metadata.json of a corpus, as a plain JSON-ready dict (package versions filled in).

    Args:
      dataset: {"name": ..., "config": {...}, "info": {...}}: which data, how it is
        split and preprocessed, and what it is (shape, classes, sizes). Only "name"
        is required.
      teacher: {"spec": spec dict or JSON, "hash": ..., "params": ...} (see
        `describe_teacher`); the hash must be the spec's.
      search_space: a `search_space.SearchSpace` or its dict; stored with its hash.
      sampler: the sampler configuration (dict, dataclass or object with `to_dict`).
      proxy: the proxy training budget (e.g. a `training.TrainConfig` or its dict).
      seed: the seed children are sampled and trained from.
      num_children: how many children the corpus holds when complete (>= 1).
      tokens_shape: [max_layers, num_fields] of the tokens, or None if untokenised.
      extra: anything else the records depend on (pinned like the rest).

    Raises:
      ValueError: a missing or inconsistent entry.
    """
    if not isinstance(dataset, Mapping) or not dataset.get("name"):
        raise ValueError(f"dataset must be a dict with a 'name', got {dataset!r}")
    dataset_entry = {"config": {}, "info": {}, **_plain(dataset)}
    teacher_entry = _teacher_entry(teacher)
    if isinstance(search_space, Mapping):
        search_space = search_space_lib.SearchSpace.from_dict(dict(search_space))
    if not isinstance(search_space, search_space_lib.SearchSpace):
        raise ValueError(f"search_space must be a SearchSpace or its dict, got {type(search_space).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if isinstance(num_children, bool) or not isinstance(num_children, (int, np.integer)) or num_children < 1:
        raise ValueError(f"num_children must be an integer >= 1, got {num_children!r}")
    if tokens_shape is not None:
        tokens_shape = [int(d) for d in tokens_shape]
        if len(tokens_shape) != 2 or min(tokens_shape) < 1:
            raise ValueError(f"tokens_shape must be [max_layers, num_fields] of positive integers, "
                             f"got {tokens_shape}")
    return _plain({
        "dataset": dataset_entry,
        "extra": dict(extra or {}),
        "format_version": FORMAT_VERSION,
        "num_children": int(num_children),
        "proxy": _plain(proxy),
        "sampler": _plain(sampler),
        "search_space": {"config": search_space.to_dict(), "hash": search_space.hash},
        "seed": int(seed),
        "teacher": teacher_entry,
        "tokens_shape": tokens_shape,
        "versions": package_versions(),
    })


def _teacher_entry(teacher) -> Dict[str, Any]:
    if not isinstance(teacher, Mapping) or not {"spec", "hash", "params"} <= set(teacher):
        raise ValueError("teacher must be a dict with 'spec', 'hash' and 'params' (see describe_teacher)")
    entry = _plain(teacher)
    spec = teacher["spec"]
    if isinstance(spec, archspec.ArchSpec):
        parsed = spec
    elif isinstance(spec, str):
        parsed = archspec.ArchSpec.from_json(spec)
    else:
        parsed = archspec.ArchSpec.from_dict(entry["spec"])
    if parsed.hash != teacher["hash"]:
        raise ValueError(f"teacher hash {teacher['hash']!r} is not the hash of its spec ({parsed.hash!r})")
    entry["spec"] = parsed.to_dict()
    return entry


def _plain(value) -> Any:
    """`value` as plain JSON data (dicts, lists, numbers, strings), as metadata.json stores it."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type) and not hasattr(value, "to_dict"):
        value = dataclasses.asdict(value)
    return json.loads(rundir.to_json(value))


def metadata_differences(stored: Mapping[str, Any], given: Mapping[str, Any], *,
                         include_versions: bool = False) -> List[Tuple[str, Any, Any]]:
    """(field path, stored, given) for each pinned field that differs, in path order."""
    stored, given = _plain(stored), _plain(given)
    if not include_versions:
        for key in UNPINNED_KEYS:
            stored.pop(key, None)
            given.pop(key, None)
    out: List[Tuple[str, Any, Any]] = []
    _diff(stored, given, "", out)
    return out


_MISSING = "<missing>"


def _diff(stored, given, path: str, out: list) -> None:
    if isinstance(stored, dict) and isinstance(given, dict):
        for key in sorted(set(stored) | set(given)):
            _diff(stored.get(key, _MISSING), given.get(key, _MISSING), f"{path}.{key}" if path else key, out)
    elif isinstance(stored, list) and isinstance(given, list) and len(stored) == len(given):
        for index, (a, b) in enumerate(zip(stored, given)):
            _diff(a, b, f"{path}[{index}]", out)
    elif stored != given or type(stored) is not type(given) and not _same_number(stored, given):
        out.append((path or "<root>", stored, given))


def _same_number(a, b) -> bool:
    numbers = (int, float)
    return (isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool)
            and not isinstance(b, bool) and a == b)


def _short(value) -> str:
    text = value if value == _MISSING else json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def check_metadata(corpus_dir: str, stored: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Raises MetadataMismatchError if pinned fields differ; logs package version drift."""
    differences = metadata_differences(stored, expected)
    if differences:
        raise MetadataMismatchError(corpus_dir, differences)
    drift = metadata_differences(stored, expected, include_versions=True)  # only versions are left
    if drift:
        logging.warning("Corpus %s was written with other package versions: %s", corpus_dir,
                        "; ".join(f"{path}: stored {_short(a)}, now {_short(b)}" for path, a, b in drift))


def read_metadata(corpus_dir: str) -> Dict[str, Any]:
    path = os.path.join(corpus_dir, METADATA_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{corpus_dir} is not a corpus: it has no {METADATA_FILE}")
    stored = rundir.read_json(path)
    version = stored.get("format_version") if isinstance(stored, dict) else None
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported corpus format_version {version!r}; "
                         f"this package reads {FORMAT_VERSION}")
    return stored


def _ensure_metadata(corpus_dir: str, metadata: Mapping[str, Any]) -> Dict[str, Any]:
    """Writes metadata.json if absent (atomically, race-safe), else checks it; returns it."""
    missing = set(METADATA_KEYS) - set(metadata)
    if missing:
        raise ValueError(f"metadata lacks {sorted(missing)}; build it with corpus.make_metadata")
    metadata = _plain(metadata)
    path = os.path.join(corpus_dir, METADATA_FILE)
    tf.io.gfile.makedirs(corpus_dir)
    if not tf.io.gfile.exists(path):
        tmp = f"{path}.{uuid.uuid4().hex}{TMP_SUFFIX}"
        with tf.io.gfile.GFile(tmp, "w") as handle:
            handle.write(rundir.to_json(metadata))
        try:
            tf.io.gfile.rename(tmp, path, overwrite=False)
            logging.info("Created corpus %s", corpus_dir)
        except tf.errors.AlreadyExistsError:  # another shard created it first: compare below
            tf.io.gfile.remove(tmp)
    # Read back even after creating it: if a racing writer replaced it with other
    # settings, one of the two fails here instead of both writing.
    check_metadata(corpus_dir, read_metadata(corpus_dir), metadata)
    return metadata


# -- shards and part files ------------------------------------------------------

def shard_indices(num_children: int, num_shards: int, shard_index: int) -> List[int]:
    """The child indices shard `shard_index` of `num_shards` trains: i % num_shards == shard_index.

    Deterministic, disjoint between shards, and together covering range(num_children).
    """
    for name, value in (("num_children", num_children), ("num_shards", num_shards),
                        ("shard_index", shard_index)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if num_children < 0:
        raise ValueError(f"num_children must be >= 0, got {num_children}")
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in [0, {num_shards}) for num_shards={num_shards}, "
                         f"got {shard_index}")
    return list(range(int(shard_index), int(num_children), int(num_shards)))


def part_file_name(shard_index: int, num_shards: int, part: int) -> str:
    return f"shard-{shard_index:05d}-of-{num_shards:05d}.part-{part:05d}.tfrecord"


def _parse_part_name(name: str) -> Optional[Tuple[int, int, int]]:
    """(shard_index, num_shards, part) of a part file name, or None for other files."""
    match = _PART_RE.match(name)
    return tuple(int(g) for g in match.groups()) if match else None


def _list_parts(corpus_dir: str) -> List[Tuple[Tuple[int, int, int], str]]:
    """((shard, num_shards, part), path) of every visible part file, in (shard, num_shards, part) order."""
    if not tf.io.gfile.isdir(corpus_dir):
        return []
    parts = []
    for name in tf.io.gfile.listdir(corpus_dir):
        name = name.rstrip("/")
        parsed = _parse_part_name(name)
        if parsed is not None:
            parts.append((parsed, os.path.join(corpus_dir, name)))
    return sorted(parts)


class _CorruptFile(Exception):
    pass


def _tokens_size(metadata: Mapping[str, Any]) -> Optional[int]:
    shape = metadata.get("tokens_shape")
    return None if shape is None else int(np.prod(shape))


def _check_tokens(record: ChildRecord, tokens_size: Optional[int]) -> None:
    if record.tokens and len(record.tokens) != (tokens_size or 0):
        expected = "none (the corpus metadata has no tokens_shape)" if tokens_size is None else f"{tokens_size}"
        raise ValueError(f"record {record.key} has {len(record.tokens)} tokens; expected {expected} or none")


def _serialized_records(path: str) -> Iterable[bytes]:
    """The raw records of one TFRecord file; tf.errors.DataLossError when its bytes are bad.

    tf.compat.v1's iterator is deprecated (it logs so once) but some 500 times
    faster than a tf.data.TFRecordDataset per small file; the same checksums apply.
    """
    iterator = getattr(tf.compat.v1.io, "tf_record_iterator", None)
    if iterator is None:
        return tf.data.TFRecordDataset(path).as_numpy_iterator()
    return iterator(path)


def _read_part(path: str, tokens_size: Optional[int]) -> List[ChildRecord]:
    """The records of one part file; raises _CorruptFile saying why it cannot be trusted."""
    records = []
    try:
        for position, raw in enumerate(_serialized_records(path)):
            try:
                fields, framing = _fields_of_example(raw)
                record = ChildRecord(**fields)
                _check_tokens(record, tokens_size)
            except ValueError as error:
                raise _CorruptFile(f"record {position} does not parse: {error}") from None
            if framing.get(_PART_POSITION, position) != position:
                raise _CorruptFile(f"record {position} says it is record {framing[_PART_POSITION]}")
            records.append((record, framing.get(_PART_SIZE)))
    except tf.errors.OpError as error:  # DataLossError: truncated or corrupted bytes
        raise _CorruptFile(f"{type(error).__name__}: {error.message.splitlines()[-1].strip()}") from None
    sizes = {size for _, size in records if size is not None}
    if len(sizes) > 1 or sizes and sizes.pop() != len(records):
        raise _CorruptFile(f"holds {len(records)} records but was written with "
                           f"{records[0][1] if records else '?'} (truncated?)")
    return [record for record, _ in records]


# -- writing -----------------------------------------------------------------

class CorpusWriter:
    """Appends records of one shard to a corpus directory, one part file per batch.

    Opening creates the directory and metadata.json, or checks the stored
    metadata.json against `metadata` (MetadataMismatchError naming the field; a
    package version drift is only logged), then reads this shard's part files to
    know which records it already holds (`done_keys`).

    Usage:
      writer = corpus.CorpusWriter(corpus_dir, metadata, shard_index, num_shards)
      todo = [i for i in corpus.shard_indices(n, num_shards, shard_index)
              if (i, 0) not in writer.done_keys()]
      for batch in batches(todo):
        writer.write([train(i) for i in batch])
    """

    def __init__(self, corpus_dir: str, metadata: Mapping[str, Any], shard_index: int = 0, num_shards: int = 1):
        shard_indices(0, num_shards, shard_index)  # validates the pair
        self.corpus_dir = corpus_dir
        self.shard_index = int(shard_index)
        self.num_shards = int(num_shards)
        self.metadata = _ensure_metadata(corpus_dir, metadata)
        self._tokens_size = _tokens_size(self.metadata)
        self._done: Set[Tuple[int, int]] = set()
        self._next_part = 0
        other_layouts = set()
        for (shard, of, part), path in _list_parts(corpus_dir):
            if of != self.num_shards:
                other_layouts.add(of)
            if (shard, of) != (self.shard_index, self.num_shards):
                continue
            self._next_part = max(self._next_part, part + 1)
            try:
                self._done.update(record.key for record in _read_part(path, self._tokens_size))
            except _CorruptFile as error:
                logging.error("Corrupt part file %s (%s): its records will be written again", path, error)
        if other_layouts:
            logging.warning("Corpus %s also holds shards written with num_shards=%s (now %d); "
                            "records are deduplicated on read", corpus_dir, sorted(other_layouts),
                            self.num_shards)
        logging.info("Corpus shard %d/%d in %s: %d records already stored", self.shard_index, self.num_shards,
                     corpus_dir, len(self._done))

    @property
    def meta(self) -> CorpusMetadata:
        """The corpus metadata as typed values."""
        return CorpusMetadata(self.metadata)

    def done_keys(self) -> Set[Tuple[int, int]]:
        """(child_index, replicate) of every record this shard holds (a copy)."""
        return set(self._done)

    def write(self, records: Iterable[ChildRecord]) -> int:
        """Stores `records` as one new part file, atomically; returns how many were written.

        Records whose key this shard already holds (or that repeat a key of the
        batch) are skipped with a warning. An empty batch writes nothing.

        Raises:
          ValueError: a record that is not a ChildRecord, has a child_index outside
            [0, num_children), or tokens that do not fit the metadata tokens_shape.
        """
        batch, seen = [], set()
        for record in records:
            if not isinstance(record, ChildRecord):
                raise ValueError(f"expected a ChildRecord, got {type(record).__name__}")
            if record.child_index >= self.metadata["num_children"]:
                raise ValueError(f"child_index {record.child_index} is outside the corpus "
                                 f"(num_children={self.metadata['num_children']})")
            _check_tokens(record, self._tokens_size)
            if record.key in self._done or record.key in seen:
                logging.warning("Corpus %s already holds child %d replicate %d; not writing it again",
                                self.corpus_dir, *record.key)
                continue
            seen.add(record.key)
            batch.append(record)
        if not batch:
            return 0
        self._write_part(batch)
        self._done.update(seen)
        return len(batch)

    def _write_part(self, batch: List[ChildRecord]) -> str:
        name = part_file_name(self.shard_index, self.num_shards, self._next_part)
        tmp = os.path.join(self.corpus_dir, f"{name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
        with tf.io.TFRecordWriter(tmp) as writer:
            for position, record in enumerate(batch):
                writer.write(_part_example(record, position, len(batch)))
        for _ in range(_RENAME_ATTEMPTS):
            path = os.path.join(self.corpus_dir, part_file_name(self.shard_index, self.num_shards, self._next_part))
            self._next_part += 1
            try:
                tf.io.gfile.rename(tmp, path, overwrite=False)
                logging.debug("Wrote %d records to %s", len(batch), path)
                return path
            except tf.errors.AlreadyExistsError:  # another writer on this shard took the number
                continue
        raise RuntimeError(f"could not find a free part file name for shard {self.shard_index} "
                           f"in {self.corpus_dir}; {tmp} holds the batch")


# -- reading -----------------------------------------------------------------

class Corpus:
    """The records of a corpus directory and what reading them found.

    Attributes:
      corpus_dir: where it was read from.
      metadata: the stored metadata.json (`meta`: the same, as typed values).
      records: readable, deduplicated records (of the requested statuses), sorted by
        (child_index, replicate).
      part_files: every visible part file, corrupt ones included, in read order.
      corrupt_files: part files rejected as a whole (truncated, corrupted, unparsable).
      duplicates: (child_index, replicate, path) of every dropped repeated record.
    """

    def __init__(self, corpus_dir: str, metadata: Dict[str, Any], records: Sequence[ChildRecord],
                 part_files: Sequence[str], corrupt_files: Sequence[str],
                 duplicates: Sequence[Tuple[int, int, str]], locations: Mapping[Tuple[int, int], Tuple[str, int]],
                 file_sizes: Mapping[str, int]):
        self.corpus_dir = corpus_dir
        self.metadata = metadata
        self.records: Tuple[ChildRecord, ...] = tuple(sorted(records, key=lambda r: r.key))
        self.part_files = tuple(part_files)
        self.corrupt_files = tuple(corrupt_files)
        self.duplicates = tuple(duplicates)
        self._locations = dict(locations)  # key -> (part file, position in it)
        self._file_sizes = dict(file_sizes)  # readable part file -> number of records

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    @property
    def meta(self) -> CorpusMetadata:
        """The stored metadata as typed values."""
        return CorpusMetadata(self.metadata)

    @property
    def tokens_shape(self) -> Optional[Tuple[int, ...]]:
        return self.meta.tokens_shape

    def select(self, statuses: Iterable[str]) -> "Corpus":
        """The same corpus with only records of `statuses`."""
        wanted = _check_statuses(statuses)
        return Corpus(self.corpus_dir, self.metadata, [r for r in self.records if r.status in wanted],
                      self.part_files, self.corrupt_files, self.duplicates, self._locations, self._file_sizes)

    def ok(self) -> List[ChildRecord]:
        return [r for r in self.records if r.status == "ok"]

    def counts(self) -> Dict[str, int]:
        """Number of records by status (every status listed)."""
        out = {status: 0 for status in STATUSES}
        for record in self.records:
            out[record.status] += 1
        return out

    # Arrays over `records`, in their order.
    @property
    def child_index(self) -> np.ndarray:
        return np.array([r.child_index for r in self.records], np.int64)

    @property
    def replicate(self) -> np.ndarray:
        return np.array([r.replicate for r in self.records], np.int64)

    @property
    def params(self) -> np.ndarray:
        return np.array([r.params for r in self.records], np.int64)

    @property
    def flops(self) -> np.ndarray:
        return np.array([r.flops for r in self.records], np.int64)

    @property
    def val_accuracy(self) -> np.ndarray:
        return np.array([r.val_accuracy for r in self.records], np.float64)

    @property
    def tokens(self) -> np.ndarray:
        """int32 [n, *tokens_shape]; ValueError if the corpus or a record is not tokenised."""
        shape = self._require_tokens(self.records)
        return np.array([r.tokens for r in self.records], np.int32).reshape((len(self.records),) + shape)

    def _require_tokens(self, records: Sequence[ChildRecord]) -> Tuple[int, ...]:
        if self.tokens_shape is None:
            raise ValueError(f"corpus {self.corpus_dir} is not tokenised (metadata tokens_shape is null)")
        untokenised = [r.key for r in records if not r.tokens]
        if untokenised:
            raise ValueError(f"{len(untokenised)} records of corpus {self.corpus_dir} have no tokens, "
                             f"e.g. (child_index, replicate) {untokenised[0]}")
        return self.tokens_shape

    def summary(self) -> Dict[str, Any]:
        """A JSON-ready overview: counts, failures, accuracy/params/compression spread, files."""
        ok = self.ok()
        teacher_params = self.metadata.get("teacher", {}).get("params")
        params = np.array([r.params for r in ok], np.float64)
        ratios = teacher_params / params[params > 0] if teacher_params else np.zeros(0)
        first = {r.child_index for r in self.records if r.replicate == 0}
        shards = {_parse_part_name(os.path.basename(path))[:2] for path in self.part_files}
        return {
            "num_records": len(self.records),
            "counts": self.counts(),
            "num_children": self.metadata.get("num_children"),
            "num_children_stored": len(first),
            "num_children_missing": max(0, (self.metadata.get("num_children") or 0) - len(first)),
            "num_replicates": sum(1 for r in self.records if r.replicate > 0),
            "not_ok": [{"child_index": r.child_index, "reason": r.reason, "replicate": r.replicate,
                        "status": r.status} for r in self.records if r.status != "ok"],
            "val_accuracy": _spread([r.val_accuracy for r in ok]),
            "params": _spread([r.params for r in ok]),
            "teacher_params": teacher_params,
            "compression_ratio": _quantiles(ratios),
            "num_shards": len(shards),
            "num_part_files": len(self.part_files),
            "corrupt_files": list(self.corrupt_files),
            "num_duplicates": len(self.duplicates),
        }

    def as_dataset(self, statuses: Iterable[str] = ("ok",)) -> tf.data.Dataset:
        """Records of `statuses` read straight from the part files (see module `as_dataset`)."""
        wanted = _check_statuses(statuses)
        selected = [r for r in self.records if r.status in wanted]
        shape = self._require_tokens(selected)
        keep_at = {self._locations[r.key] for r in selected}
        files = [path for path in self.part_files
                 if path in self._file_sizes and any((path, i) in keep_at for i in range(self._file_sizes[path]))]
        mask = np.array([(path, i) in keep_at for path in files for i in range(self._file_sizes[path])], bool)
        # Files are read one after another in this order, so the mask lines up with
        # the record stream. No parallel reads: they would break that alignment.
        raw = tf.data.TFRecordDataset(tf.constant(files, tf.string))
        kept = tf.data.Dataset.zip((raw, tf.data.Dataset.from_tensor_slices(mask))).filter(_is_kept)
        return kept.map(_dataset_parser(shape), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _is_kept(serialized, keep):
    del serialized  # unused
    return keep


def _dataset_parser(tokens_shape: Tuple[int, ...]):
    features = {
        "tokens": tf.io.FixedLenFeature([int(np.prod(tokens_shape))], tf.int64),
        "val_accuracy": tf.io.FixedLenFeature([], tf.float32),
        "params": tf.io.FixedLenFeature([], tf.int64),
        "flops": tf.io.FixedLenFeature([], tf.int64),
        "spec_hash": tf.io.FixedLenFeature([], tf.string),
        "child_index": tf.io.FixedLenFeature([], tf.int64),
        "replicate": tf.io.FixedLenFeature([], tf.int64),
    }

    def parse(serialized, keep):
        del keep  # always true after the filter
        example = tf.io.parse_single_example(serialized, features)
        example["tokens"] = tf.reshape(tf.cast(example["tokens"], tf.int32), tokens_shape)
        return example

    return parse


def _check_statuses(statuses: Iterable[str]) -> Set[str]:
    if isinstance(statuses, str):
        statuses = (statuses,)
    wanted = set(statuses)
    unknown = wanted - set(STATUSES)
    if unknown:
        raise ValueError(f"unknown statuses {sorted(unknown)}; expected some of {STATUSES}")
    return wanted


def _spread(values: Sequence[float]) -> Dict[str, Optional[float]]:
    if not len(values):
        return {"max": None, "median": None, "min": None}
    array = np.asarray(values, np.float64)
    return {"max": float(array.max()), "median": float(np.median(array)), "min": float(array.min())}


_QUANTILES = (("min", 0.0), ("p10", 0.1), ("p25", 0.25), ("median", 0.5), ("p75", 0.75), ("p90", 0.9),
              ("max", 1.0))


def _quantiles(values: np.ndarray) -> Dict[str, Optional[float]]:
    if not values.size:
        return {name: None for name, _ in _QUANTILES}
    return {name: float(np.quantile(values, q)) for name, q in _QUANTILES}


def read_corpus(corpus_dir: str, expected_metadata: Optional[Mapping[str, Any]] = None, *,
                statuses: Optional[Iterable[str]] = None) -> Corpus:
    """Reads every part file of a corpus directory.

    Args:
      corpus_dir: the corpus directory.
      expected_metadata: if given, the stored metadata must equal it in every pinned
        field (package versions are only compared for a logged warning).
      statuses: keep only records of these statuses (default: all).

    Returns:
      A Corpus. Corrupt part files are logged and listed in `corrupt_files`; repeated
      (child_index, replicate) keys keep their first record and are logged.

    Raises:
      FileNotFoundError: no metadata.json.
      MetadataMismatchError: the stored metadata differs from `expected_metadata`.
    """
    metadata = read_metadata(corpus_dir)
    if expected_metadata is not None:
        check_metadata(corpus_dir, metadata, expected_metadata)
    wanted = _check_statuses(statuses) if statuses is not None else set(STATUSES)
    tokens_size = _tokens_size(metadata)
    records, locations, file_sizes, corrupt, duplicates, part_files = [], {}, {}, [], [], []
    for _, path in _list_parts(corpus_dir):
        part_files.append(path)
        try:
            part = _read_part(path, tokens_size)
        except _CorruptFile as error:
            logging.error("Skipping corrupt corpus part file %s: %s", path, error)
            corrupt.append(path)
            continue
        file_sizes[path] = len(part)
        for position, record in enumerate(part):
            if record.key in locations:
                logging.warning("Child %d replicate %d is stored twice (%s and %s); keeping the first",
                                *record.key, locations[record.key][0], path)
                duplicates.append(record.key + (path,))
                continue
            locations[record.key] = (path, position)
            if record.status in wanted:
                records.append(record)
    corpus = Corpus(corpus_dir, metadata, records, part_files, corrupt, duplicates, locations, file_sizes)
    logging.info("Read %d records from %d part files of %s (%d corrupt, %d duplicates)", len(corpus),
                 len(part_files), corpus_dir, len(corrupt), len(duplicates))
    return corpus


def as_dataset(corpus_dir: str, *, statuses: Iterable[str] = ("ok",),
               expected_metadata: Optional[Mapping[str, Any]] = None) -> tf.data.Dataset:
    """A tf.data.Dataset of the corpus records of `statuses`, for the embedding trainer.

    Each element is a dict: "tokens" int32 [*tokens_shape], "val_accuracy" float32,
    "params", "flops", "child_index", "replicate" int64, "spec_hash" string.
    Elements come in part file order (shuffle them yourself). Records are read
    directly from the TFRecord part files; the files and records to read come from
    a validating `read_corpus` pass, so corrupt files are skipped whole and
    repeated keys dropped, exactly as `read_corpus` does.

    Raises:
      ValueError: the corpus, or one of the selected records, has no tokens.
      MetadataMismatchError: as `read_corpus`.
    """
    return read_corpus(corpus_dir, expected_metadata).as_dataset(statuses)
