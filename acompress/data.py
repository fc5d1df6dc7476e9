"""Data sets and their tf.data pipelines: one entry point, honest splits, offline first.

Every network the package trains (children for the corpus, the teacher, the
finalists) reads its data through this module.

Sources (``DataConfig.name``):

* ``digits`` (the default): scikit-learn's 1,797 handwritten 8x8 digits, shipped
  inside scikit-learn, so nothing is downloaded. Pixel values are 0..16.
* TFDS: ``cifar10``, ``cifar100``, ``fashion_mnist``, ``mnist``, ``svhn_cropped``,
  read from ``data_dir`` (TFDS's default when None). Downloading is opt-in
  (``download=True``, the ``--download`` flag): a data set that is not prepared
  fails at once with `DatasetNotPreparedError`, which names the directory looked
  in and the command that prepares it. TFDS is never given the chance to retry a
  download for minutes.
* A ``.npz`` file with arrays ``x`` (N, H, W) or (N, H, W, C) and ``y`` (N,)
  integer labels; optionally ``x_val`` + ``y_val`` (a fixed validation split),
  ``x_test`` + ``y_test`` (a fixed test split) and ``class_names``.
* An image folder with one sub-folder per class (``root/<class>/<image>``), or
  TFDS's ``ImageFolder`` layout with split folders (``root/train/<class>/...``,
  optionally ``root/val/<class>/...`` or ``root/validation/<class>/...``, and
  ``root/test/<class>/...``; the held-out folders hold the classes of
  ``train/``, each with at least one image). PNG, JPEG, BMP and GIF files are
  decoded, with a progress bar. With ``cache_dir`` (``--data_cache_dir``) the
  decoded arrays are kept in a decode cache there (see "Decode cache" below), so
  only the first load of a folder pays for decoding (CIFAR-10's 60,000 JPEGs:
  ~10-30 s; from the cache ~0.4 s, listing the folder included).

Data sets are held in memory as numpy arrays (float32 images, int32 labels): the
sizes this package works with (CIFAR: ~0.6 GB as float32) allow it, and it keeps
the splits exact and the pipelines simple.

Splits, and who may see which:

* test: the source's own test split (TFDS, ``x_test`` in a ``.npz``, a ``test``
  folder) or else ``test_fraction`` of the data, stratified by class.
* validation: the source's own validation split (``x_val`` in a ``.npz``, a
  ``val`` or ``validation`` folder; then ``validation_fraction`` is not used, which
  is logged) or else ``validation_fraction`` of the remaining training data,
  stratified.
* train: the rest (all of ``x`` / ``train/`` when both held-out splits are
  given), optionally reduced to a stratified proxy (``train_fraction``,
  ``max_examples``) for fast child training; validation and test stay whole so
  accuracies stay comparable across proxy budgets.

The validation split is all the search ever sees: search code takes a
`SearchSplits` (`Splits.for_search()`), which has no test arrays at all. The
test split only reports final results. Every carved split is a deterministic
function of the seed, a given split is used whole and in its order
(`Splits.indices` then index the given arrays), and no split is left without an
example of some class (that is an error).

A warning for a teacher you trained yourself: if it was trained on all of the
data you pass here, a validation or test split carved from that data holds
images the teacher has already seen. Its accuracy there is inflated, and that
inflated number becomes the bar every compressed network is measured against
(and the validation the search ranks by). Give held-out data the teacher never
saw: ``x_val``/``y_val`` and ``x_test``/``y_test`` in the ``.npz``, or ``val/`` and
``test/`` folders beside ``train/``.

Normalisation (``DataConfig.normalise``; the affine used is stored per channel
in ``DatasetInfo.normalisation``, and exports prepend it, so they take raw
inputs):

* ``"fit"`` (the default): ``(x - mean) / std`` with the per-channel mean and
  standard deviation of the final training split (after the proxy subset),
  applied to all three splits. Right for networks this package trains (zoo and
  spec teachers, children, finalists).
* ``"none"``: the raw values as float32, unchanged (``DatasetInfo.normalisation``
  is the identity, mean 0 and std 1 per channel). For a trained teacher that
  takes raw inputs (0..255, say, or with its own ``Rescaling`` or
  ``Normalization`` layer inside).
* a fixed affine ``{"mean": [...], "std": [...]}`` (one entry per channel, or
  one for all; std > 0): ``(x - mean) / std`` on all splits, recorded as given
  (spread to one entry per channel). For a trained teacher that expects inputs
  preprocessed outside the model: ``x / 255`` is ``{"mean": [0], "std": [255]}``;
  a ``Rescaling(scale, offset)`` is ``mean = -offset / scale, std = 1 / scale``.

A user's trained teacher learnt its own input convention; standardising its
inputs with fitted statistics would silently feed it other numbers than it was
trained on, so the caller picks the convention (see ``--normalize``).

Augmentation (random crop after padding, and horizontal flip where a mirrored
image keeps its class) happens in the training pipeline only. The padding is
zeros in the normalised values, whatever the mode: with ``"fit"`` that is the
training mean; with ``"none"`` it is a raw 0 (black), the usual padding of a
network trained on raw pixels; with a fixed affine it is the raw value ``mean``
(black for ``x / 255``, mid-grey for ``Rescaling(1/127.5, offset=-1)``, the
data set mean for a teacher's own ``Normalization``). Zero is kept rather than
a mode-dependent value so that augmented batches stay a function of the
normalised arrays alone (`EpochBatches` is unchanged by the mode).

Decode cache (image folders only, when ``DataConfig.cache_dir`` is set):

* One uncompressed ``.npz`` per (folder, resize) in ``cache_dir``, named
  ``<folder name>-<12 hex: real path + resize>-<32 hex of the key>.npz``. It holds
  the decoded images exactly as decoded (``x``, ``x_val`` for a ``val`` or
  ``validation`` folder and ``x_test`` for a ``test`` folder; labels and class
  names follow from the folder listing), the full key, the format version and a
  sha256 of the arrays.
* The key is a sha256 over the cache format version, the TensorFlow version (the
  decoder), the resize setting, the class names, the splits and, for every
  image file, its path relative to the folder (``val/cat/1.png``), size and
  mtime in nanoseconds. The folder is listed (os.scandir + stat: ~0.3 s for
  60,000 files) on every load, so any
  added, removed, renamed, resized or re-timed file gives another key and
  another file name: a changed folder is never read from a stale cache. A file
  rewritten with the same size and the same mtime to the nanosecond would not be
  noticed (contents are not hashed; that would cost the decode's own reads).
* After a new cache file is written, the older files of the same (folder, resize)
  are deleted, so ``cache_dir`` holds one file per folder and resize setting.
* A cache file that cannot be read, or whose key, format, shapes or checksum do
  not match, is reported with a warning, decoded again and rewritten; a cache
  directory that cannot be written is a warning too (the data is still returned).
* Writes go to a temporary file in ``cache_dir`` and are renamed into place
  (os.replace), so a killed run never leaves a partial file under a cache name.
* ``cache_dir`` must not lie inside the data folder (it may be read-only, and a
  folder there would read as a class). It does not change the data, so it is not
  pinned where the data is (like ``data_dir`` and ``cache``).
* ``.npz`` sources are not cached: np.load of CIFAR-10-sized arrays (~180 MB)
  takes about 0.5 s, the same as reading the cache would.
"""

import dataclasses
import hashlib
import json
import os
import re
import socket
import tempfile
import time
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union
import urllib.parse
import zipfile

from absl import logging
import numpy as np
from sklearn import datasets as sklearn_datasets
from sklearn import model_selection
import tensorflow as tf
import tensorflow_datasets as tfds

from acompress import configs
from acompress import progress

DIGITS = "digits"
TFDS_NAMES = ("cifar10", "cifar100", "fashion_mnist", "mnist", "svhn_cropped")
NAMES = (DIGITS,) + TFDS_NAMES

# Augmentation policies of the training pipeline.
AUGMENT_NONE = "none"
AUGMENT_CROP = "crop"
AUGMENT_CROP_FLIP = "crop_flip"
AUGMENTS = (AUGMENT_NONE, AUGMENT_CROP, AUGMENT_CROP_FLIP)

# Policy used when augmentation is on: digits must not be mirrored (a mirrored
# digit is not the same digit), so digit data sets get crops only.
_AUGMENT_WHEN_ON = {
    DIGITS: AUGMENT_CROP,
    "mnist": AUGMENT_CROP,
    "svhn_cropped": AUGMENT_CROP,
    "fashion_mnist": AUGMENT_CROP_FLIP,
    "cifar10": AUGMENT_CROP_FLIP,
    "cifar100": AUGMENT_CROP_FLIP,
}
# Data sets whose augmentation is on unless the config says otherwise.
_AUGMENT_BY_DEFAULT = ("cifar10", "cifar100", "svhn_cropped")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_CHUNK = 4096  # examples per chunk when resizing or computing statistics
_PROBE_TIMEOUT_S = 5.0
# Bump when what a decode cache file holds, or how images are decoded, changes.
FOLDER_CACHE_VERSION = 2  # 2: optional x_val (a val/ or validation/ folder)
_STALE_TEMP_S = 3600.0  # a cache's temporary file older than this is from a killed run

# DataConfig.normalise: the training split's statistics, or the raw values; else a fixed `Normalisation`.
NORMALISE_FIT = "fit"
NORMALISE_NONE = "none"
NORMALISE_MODES = (NORMALISE_FIT, NORMALISE_NONE)


class DataError(ValueError):
    """Bad data or a bad data option; the message says what was wrong and where."""


class DatasetNotPreparedError(DataError):
    """A TFDS data set is not prepared in its data directory and downloading is off."""


@dataclasses.dataclass(frozen=True)
class Normalisation:
    """Per-channel affine ``(x - mean) / std``: the training split's statistics, the identity, or given.

    Also the fixed form of `DataConfig.normalise`, where ``mean`` and ``std`` may
    have one entry each for all channels (`for_channels` spreads them).
    """

    mean: Tuple[float, ...]
    std: Tuple[float, ...]

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Returns ``x`` (..., C) standardised, as a new float32 array."""
        out = np.asarray(x, dtype=np.float32).copy()
        out -= np.asarray(self.mean, dtype=np.float32)
        out /= np.asarray(self.std, dtype=np.float32)
        return out

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, values, where: str = "normalisation") -> "Normalisation":
        """``{"mean": [...], "std": [...]}`` (finite numbers, std > 0) -> a `Normalisation`; DataError if not."""
        if isinstance(values, Normalisation):
            values = values.to_dict()
        if not isinstance(values, Mapping) or set(values) != {"mean", "std"}:
            keys = sorted(values) if isinstance(values, Mapping) else type(values).__name__
            raise DataError(f"{where}: a fixed normalisation must be a dict with exactly the keys 'mean' and "
                            f"'std' (lists of numbers, one per channel or one for all), got {keys}")
        entries = {}
        for key in ("mean", "std"):
            value = values[key]
            if isinstance(value, np.ndarray):
                value = value.tolist()
            if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
                value = [value]
            if (not isinstance(value, (list, tuple)) or not value
                    or not all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                               for v in value)):
                raise DataError(f"{where}: '{key}' must be a non-empty list of numbers (one per channel, or one "
                                f"for all channels), got {value!r}")
            floats = tuple(float(v) for v in value)
            if not all(np.isfinite(floats)):
                raise DataError(f"{where}: '{key}' must be finite, got {list(floats)}")
            entries[key] = floats
        if min(entries["std"]) <= 0.0:
            raise DataError(f"{where}: 'std' must be > 0 in every channel, got {list(entries['std'])}")
        lengths = {len(entries["mean"]), len(entries["std"])} - {1}
        if len(lengths) > 1:
            raise DataError(f"{where}: 'mean' has {len(entries['mean'])} entries and 'std' "
                            f"{len(entries['std'])}; give one per channel (the same count) or one for all")
        return cls(mean=entries["mean"], std=entries["std"])

    @classmethod
    def identity(cls, channels: int) -> "Normalisation":
        return cls(mean=(0.0,) * channels, std=(1.0,) * channels)

    def for_channels(self, channels: int, where: str) -> "Normalisation":
        """This affine with one entry per channel; DataError when its counts fit neither 1 nor ``channels``."""
        for key in ("mean", "std"):
            count = len(getattr(self, key))
            if count not in (1, channels):
                raise DataError(f"DataConfig.normalise: '{key}' has {count} entries, but the data ({where}) has "
                                f"{channels} channel(s); give one entry per channel or a single entry for all")
        return Normalisation(mean=tuple(self.mean) * (channels // len(self.mean)),
                             std=tuple(self.std) * (channels // len(self.std)))


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Everything that decides the data a run sees; saved with the run as JSON.

    Attributes:
      name: a name in `NAMES`, a path to a ``.npz`` file or a path to an image folder.
      data_dir: TFDS data directory (None: TFDS's default, ``~/tensorflow_datasets``
        or ``$TFDS_DATA_DIR``). Ignored by the other sources.
      download: allow TFDS to download and prepare a data set that is missing.
      seed: decides the splits, the proxy subset, shuffling and augmentation.
      validation_fraction: share of the training data held out for validation.
      test_fraction: share of all data held out for test, for sources without
        their own test split (digits, a ``.npz`` without ``x_test``, a folder
        without a ``test`` sub-folder).
      resize: (height, width) to resize every image to (bilinear), or None.
      train_fraction: share of the training split kept (a stratified proxy).
      max_examples: cap on the training split after `train_fraction`, or None.
      batch_size: examples per batch in every pipeline.
      augment: True/False, or None for the data set's default (on for CIFAR and
        SVHN, off otherwise).
      cache: cache the pipelines' examples after the first pass (see
        `make_dataset`).
      cache_dir: directory for the decode cache of image folders (see "Decode
        cache" in the module docstring), or None: decode every run. Must not lie
        inside the data folder. Does not change the data.
      normalise: the input convention of every split (see "Normalisation" in
        the module docstring): ``"fit"`` (the training split's per-channel mean
        and std), ``"none"`` (the raw values as float32), or a fixed affine
        ``{"mean": [...], "std": [...]}`` (one entry per channel, or one for
        all; std > 0), applied as ``(x - mean) / std``. A dict is stored as a
        `Normalisation` (so the config stays hashable); `to_dict` gives the dict
        back, and leaves the key out for ``"fit"``, so configs and corpora
        written before this field existed read and compare as they did.
    """

    name: str = DIGITS
    data_dir: Optional[str] = None
    download: bool = False
    seed: int = 0
    validation_fraction: float = 0.2
    test_fraction: float = 0.2
    resize: Optional[Tuple[int, int]] = None
    train_fraction: float = 1.0
    max_examples: Optional[int] = None
    batch_size: int = 64
    augment: Optional[bool] = None
    cache: bool = False
    cache_dir: Optional[str] = None
    normalise: Union[str, Normalisation] = NORMALISE_FIT

    def __post_init__(self):
        if self.resize is not None:
            object.__setattr__(self, "resize", tuple(self.resize))
        if isinstance(self.normalise, (Mapping, Normalisation)):
            object.__setattr__(self, "normalise", Normalisation.from_dict(self.normalise, "DataConfig.normalise"))
        _check_config(self)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["resize"] = list(self.resize) if self.resize is not None else None
        if isinstance(self.normalise, Normalisation):
            out["normalise"] = self.normalise.to_dict()
        elif self.normalise == NORMALISE_FIT:
            del out["normalise"]  # the default, and what every config before the field meant
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "DataConfig":
        try:
            fields = configs.strict_fields(cls, values, "DataConfig")
        except ValueError as error:
            raise DataError(str(error)) from None
        return cls(**fields)


def _check_config(config: DataConfig) -> None:
    def fail(field, message):
        raise DataError(f"DataConfig.{field}: {message}, got {getattr(config, field)!r}")

    if not isinstance(config.name, str) or not config.name:
        fail("name", "must be a data set name or a path")
    if not 0.0 < config.validation_fraction < 1.0:
        fail("validation_fraction", "must be in (0, 1)")
    if not 0.0 < config.test_fraction < 1.0:
        fail("test_fraction", "must be in (0, 1)")
    if not 0.0 < config.train_fraction <= 1.0:
        fail("train_fraction", "must be in (0, 1]")
    if config.max_examples is not None and (not _is_int(config.max_examples) or config.max_examples < 1):
        fail("max_examples", "must be a positive integer or None")
    if not _is_int(config.batch_size) or config.batch_size < 1:
        fail("batch_size", "must be a positive integer")
    if not _is_int(config.seed) or config.seed < 0:
        fail("seed", "must be a non-negative integer")
    if config.resize is not None and (len(config.resize) != 2
                                      or not all(_is_int(s) and s > 0 for s in config.resize)):
        fail("resize", "must be (height, width) with positive integers, or None")
    if config.augment not in (None, True, False):
        fail("augment", "must be True, False or None")
    if config.cache_dir is not None and (not isinstance(config.cache_dir, str) or not config.cache_dir):
        fail("cache_dir", "must be a directory path or None")
    if not isinstance(config.normalise, Normalisation) and (not isinstance(config.normalise, str)
                                                            or config.normalise not in NORMALISE_MODES):
        fail("normalise", "must be 'fit', 'none' or a fixed affine {'mean': [...], 'std': [...]}")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about its data (JSON-friendly via `to_dict`).

    Attributes:
      name: the source's name (``digits``, a TFDS name, or the file/folder path).
      input_shape: (height, width, channels) of one image after any resize.
      num_classes: number of classes; labels are 0 .. num_classes - 1.
      class_names: one name per class.
      sizes: examples per split: ``{"train": ..., "validation": ..., "test": ...}``.
      normalisation: the affine applied to all splits, one entry per channel:
        fitted (``normalise="fit"``), the identity (``"none"``) or the given one.
      source: where the data came from (a directory, file or package).
      augment: the training pipeline's augmentation policy, one of `AUGMENTS`.
    """

    name: str
    input_shape: Tuple[int, int, int]
    num_classes: int
    class_names: Tuple[str, ...]
    sizes: Dict[str, int]
    normalisation: Normalisation
    source: str
    augment: str

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["input_shape"] = list(self.input_shape)
        out["class_names"] = list(self.class_names)
        out["sizes"] = dict(self.sizes)
        out["normalisation"] = self.normalisation.to_dict()
        return out


@dataclasses.dataclass(frozen=True, eq=False)
class SearchSplits:
    """The data search code may see: train and validation, never test.

    The corpus trainer and the latent search take this type. It has no test
    arrays to leak: final results are reported from `Splits` by the caller.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    info: DatasetInfo


@dataclasses.dataclass(frozen=True, eq=False)
class Splits:
    """All three splits in memory: x float32 (N, H, W, C) normalised, y int32 (N,).

    Attributes:
      indices: for each split, the positions of its examples in the source
        (the test split of a source that has one indexes its test arrays, and
        the validation split of a source with its own validation split its
        validation arrays: ``x_val`` of a ``.npz``, a ``val/`` folder).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    info: DatasetInfo
    indices: Dict[str, np.ndarray]

    def for_search(self) -> SearchSplits:
        """The train + validation view handed to search code (shares the arrays)."""
        return SearchSplits(x_train=self.x_train, y_train=self.y_train, x_val=self.x_val,
                            y_val=self.y_val, info=self.info)


@dataclasses.dataclass(frozen=True, eq=False)
class _Source:
    """Raw data as read: images (N, H, W, C) of any numeric dtype, labels int32."""

    name: str
    x: np.ndarray
    y: np.ndarray
    x_test: Optional[np.ndarray]
    y_test: Optional[np.ndarray]
    num_classes: int
    class_names: Tuple[str, ...]
    location: str
    x_val: Optional[np.ndarray] = None
    y_val: Optional[np.ndarray] = None


# --------------------------------------------------------------------------- entry points


def load(config: DataConfig) -> Splits:
    """Reads the source named by ``config``, splits, subsamples, resizes and normalises it."""
    source = _read_source(config)
    train_idx, val_idx, test_idx = _split_indices(source, config)
    x_val_raw = source.x if source.x_val is None else source.x_val
    y_val_raw = source.y if source.y_val is None else source.y_val
    x_test_raw = source.x if source.x_test is None else source.x_test
    y_test_raw = source.y if source.y_test is None else source.y_test
    x_train = _to_float(source.x[train_idx], config.resize)
    normalisation = _resolve_normalisation(config, x_train, source.location)
    x_train = _normalise_in_place(x_train, normalisation)
    x_val = _normalise_in_place(_to_float(x_val_raw[val_idx], config.resize), normalisation)
    x_test = _normalise_in_place(_to_float(x_test_raw[test_idx], config.resize), normalisation)
    info = DatasetInfo(
        name=source.name, input_shape=tuple(int(d) for d in x_train.shape[1:]),
        num_classes=source.num_classes, class_names=source.class_names,
        sizes={"train": len(train_idx), "validation": len(val_idx), "test": len(test_idx)},
        normalisation=normalisation, source=source.location, augment=resolve_augment(config))
    logging.info("Data %s: %s", info.name, info.sizes)
    return Splits(x_train=x_train, y_train=source.y[train_idx], x_val=x_val, y_val=y_val_raw[val_idx],
                  x_test=x_test, y_test=y_test_raw[test_idx], info=info,
                  indices={"train": train_idx, "validation": val_idx, "test": test_idx})


def datasets(config: DataConfig) -> Tuple[tf.data.Dataset, tf.data.Dataset, tf.data.Dataset, DatasetInfo]:
    """The one entry point: ``config`` -> (train, validation, test) pipelines and their info.

    Only the training pipeline shuffles and augments. Search code should use
    `search_datasets` on `Splits.for_search()` instead, which cannot reach test.
    """
    splits = load(config)
    return (*pipelines(splits, config), splits.info)


def pipelines(splits: Splits, config: DataConfig) -> Tuple[tf.data.Dataset, tf.data.Dataset, tf.data.Dataset]:
    """(train, validation, test) pipelines over already loaded `splits`."""
    train, val = search_datasets(splits.for_search(), config)
    test = make_dataset(splits.x_test, splits.y_test, batch_size=config.batch_size, training=False,
                        cache=config.cache)
    return train, val, test


def search_datasets(search: SearchSplits, config: DataConfig) -> Tuple[tf.data.Dataset, tf.data.Dataset]:
    """(train, validation) pipelines from the search-side view of the data."""
    if not isinstance(search, SearchSplits):
        raise TypeError(f"search_datasets takes SearchSplits (Splits.for_search()), got {type(search).__name__}")
    train = make_dataset(search.x_train, search.y_train, batch_size=config.batch_size, training=True,
                         seed=config.seed, augment=search.info.augment, cache=config.cache)
    val = make_dataset(search.x_val, search.y_val, batch_size=config.batch_size, training=False,
                       cache=config.cache)
    return train, val


def resolve_augment(config: DataConfig) -> str:
    """The augmentation policy ``config`` asks for (one of `AUGMENTS`)."""
    known = config.name if config.name in NAMES else None
    enabled = config.augment if config.augment is not None else known in _AUGMENT_BY_DEFAULT
    if not enabled:
        return AUGMENT_NONE
    return _AUGMENT_WHEN_ON.get(known, AUGMENT_CROP_FLIP)


# --------------------------------------------------------------------------- pipelines


def make_dataset(x: np.ndarray, y: np.ndarray, *, batch_size: int, training: bool, seed: int = 0,
                 augment: str = AUGMENT_NONE, cache: bool = False,
                 drop_remainder: bool = False) -> tf.data.Dataset:
    """An input pipeline over in-memory arrays: [cache] -> [shuffle] -> batch -> [augment] -> prefetch.

    Args:
      x: images (N, H, W, C), already normalised.
      y: integer labels (N,).
      batch_size: examples per batch.
      training: shuffle (buffer = the whole split, a new order every epoch) and
        augment; evaluation pipelines keep the given order and never augment.
      seed: seeds the shuffle and the augmentation, so the sequence of batches
        over epochs is the same in every run with the same seed.
      augment: one of `AUGMENTS`; used only when ``training``.
      cache: cache examples after the first pass. The arrays are already in
        memory, so this buys little and holds a second copy of the data; it is
        here for parity with file-backed sources (see the pipeline benchmark).
      drop_remainder: drop a last, smaller batch.

    Returns:
      A dataset of ``(images float32 (B, H, W, C), labels int32 (B,))``.
    """
    x, y = _check_arrays(x, y)
    if not _is_int(batch_size) or batch_size < 1:
        raise DataError(f"make_dataset: batch_size must be a positive integer, got {batch_size!r}")
    if augment not in AUGMENTS:
        raise DataError(f"make_dataset: augment must be one of {AUGMENTS}, got {augment!r}")
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if cache:
        dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if training and augment != AUGMENT_NONE:
        dataset = _augment(dataset, augment, seed, x.shape[1])
    return dataset.prefetch(tf.data.AUTOTUNE)


class EpochBatches:
    """Training batches whose order is a pure function of (seed, epoch).

    `make_dataset` reshuffles on every pass, so what a pass sees depends on how many
    passes came before it (and on TensorFlow's global seed). Child training needs
    more: every packed group of children, on any shard, after any resume, must see
    the same batches in epoch k. Here epoch k's order is a numpy permutation drawn
    from ``[seed, k]`` and augmentation uses stateless ops seeded by
    ``[seed, k, batch]``, so nothing depends on iteration history or global state.

    Usage:
      batches = data.EpochBatches(search.x_train, search.y_train, batch_size=64, seed=0)
      for epoch in range(epochs):
        for x, y in batches.for_epoch(epoch):
          ...
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, *, batch_size: int, seed: int,
                 augment: str = AUGMENT_NONE):
        x, y = _check_arrays(x, y)
        if not _is_int(batch_size) or batch_size < 1:
            raise DataError(f"EpochBatches: batch_size must be a positive integer, got {batch_size!r}")
        if augment not in AUGMENTS:
            raise DataError(f"EpochBatches: augment must be one of {AUGMENTS}, got {augment!r}")
        if not len(x):
            raise DataError("EpochBatches: the training split is empty")
        self.size = len(x)
        self.batch_size = batch_size
        self.seed = int(seed)
        self.augment = augment
        self.steps = -(-self.size // batch_size)
        self._x = tf.constant(x)
        self._y = tf.constant(y)
        self._height = x.shape[1]

    @property
    def element_spec(self):
        return (tf.TensorSpec([None, *self._x.shape[1:]], tf.float32), tf.TensorSpec([None], tf.int32))

    def order(self, epoch: int) -> np.ndarray:
        """The example order of `epoch` (a permutation of the split)."""
        return np.random.default_rng([self.seed, int(epoch)]).permutation(self.size)

    def for_epoch(self, epoch: int) -> tf.data.Dataset:
        """The batches of `epoch`: ``(images float32 (B, H, W, C), labels int32 (B,))``."""
        x, y = self._x, self._y
        indices = tf.data.Dataset.from_tensor_slices(self.order(epoch)).batch(self.batch_size)
        dataset = indices.map(lambda idx: (tf.gather(x, idx), tf.gather(y, idx)))
        if self.augment != AUGMENT_NONE:
            policy, pad = self.augment, max(1, round(self._height / 8))
            epoch_seed = tf.constant(self.seed * 100_003 + int(epoch), tf.int64)

            def apply(batch, step):
                images, labels = batch
                images = _random_crop(images, tf.stack([epoch_seed, 2 * step]), pad)
                if policy == AUGMENT_CROP_FLIP:
                    images = _random_flip(images, tf.stack([epoch_seed, 2 * step + 1]))
                return images, labels

            dataset = tf.data.Dataset.zip((dataset, tf.data.Dataset.range(self.steps))).map(apply)
        return dataset.prefetch(tf.data.AUTOTUNE)


def _check_arrays(x, y) -> Tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 4:
        raise DataError(f"make_dataset: x must be (N, H, W, C), got shape {x.shape}")
    if y.shape != (len(x),):
        raise DataError(f"make_dataset: y must be ({len(x)},) to match x, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"make_dataset: y must hold integer labels, got dtype {y.dtype}")
    return x.astype(np.float32, copy=False), y.astype(np.int32, copy=False)


def _augment(dataset: tf.data.Dataset, policy: str, seed: int, height: int) -> tf.data.Dataset:
    """Per-image random crop (and flip) on batches, seeded per batch and per epoch."""
    pad = max(1, round(height / 8))  # 4 pixels on 32x32 images, 1 on 8x8 digits
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def apply(batch, batch_seed):
        images, labels = batch
        images = _random_crop(images, tf.stack([batch_seed, tf.constant(0, tf.int64)]), pad)
        if policy == AUGMENT_CROP_FLIP:
            images = _random_flip(images, tf.stack([batch_seed, tf.constant(1, tf.int64)]))
        return images, labels

    return tf.data.Dataset.zip((dataset, seeds)).map(apply, num_parallel_calls=tf.data.AUTOTUNE)


def _random_crop(images: tf.Tensor, seed: tf.Tensor, pad: int) -> tf.Tensor:
    """Zero-pads and crops back, per image (zero: the training mean with normalise="fit", a raw 0 with
    "none", the raw value ``mean`` with a fixed affine; see the module docstring)."""
    height, width = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    offsets = tf.random.stateless_uniform([tf.shape(images)[0], 2], seed=seed, minval=0,
                                          maxval=2 * pad + 1, dtype=tf.int32)
    rows = offsets[:, :1] + tf.range(height)[tf.newaxis]
    cols = offsets[:, 1:] + tf.range(width)[tf.newaxis]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, cols, axis=2, batch_dims=1)


def _random_flip(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    flip = tf.random.stateless_uniform([tf.shape(images)[0]], seed=seed) < 0.5
    return tf.where(flip[:, tf.newaxis, tf.newaxis, tf.newaxis], tf.reverse(images, axis=[2]), images)


# --------------------------------------------------------------------------- splits


def _split_indices(source: _Source, config: DataConfig) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) example positions; test indexes x_test and validation x_val where the
    source has them."""
    pool = np.arange(len(source.y))
    where = source.location
    if source.y_test is None:
        pool, test_idx = _stratified_split(pool, source.y, config.test_fraction, config.seed,
                                           f"{where} (test split, test_fraction={config.test_fraction})")
        y_test = source.y
    else:
        test_idx = np.arange(len(source.y_test))
        y_test = source.y_test
    if source.y_val is None:
        train_idx, val_idx = _stratified_split(
            pool, source.y, config.validation_fraction, config.seed,
            f"{where} (validation split, validation_fraction={config.validation_fraction})")
        y_val = source.y
    else:
        logging.info("%s: the validation split is the source's own (%d examples); validation_fraction=%s is "
                     "not used and all %d remaining training examples are kept for training", where,
                     len(source.y_val), config.validation_fraction, len(pool))
        train_idx, val_idx = pool, np.arange(len(source.y_val))
        y_val = source.y_val
    train_idx = _proxy_subset(train_idx, source.y, config, where)
    for split, idx, labels in (("train", train_idx, source.y), ("validation", val_idx, y_val),
                               ("test", test_idx, y_test)):
        _check_every_class(labels[idx], source, split)
    return train_idx, val_idx, test_idx


def _stratified_split(idx: np.ndarray, y: np.ndarray, fraction, seed: int,
                      where: str) -> Tuple[np.ndarray, np.ndarray]:
    """Splits positions ``idx`` into (kept, held out); ``fraction`` is a share or a count."""
    counts = np.bincount(y[idx])
    present = np.flatnonzero(counts)
    lonely = present[counts[present] < 2]
    if len(lonely):
        raise DataError(f"{where}: class(es) {lonely.tolist()} have a single example, so a stratified "
                        "split would leave one side without them; every class needs at least 2 examples")
    try:
        kept, held = model_selection.train_test_split(idx, test_size=fraction, stratify=y[idx],
                                                      random_state=seed)
    except ValueError as error:  # e.g. fewer held-out examples than classes
        raise DataError(f"{where}: cannot split {len(idx)} examples of {len(present)} classes: {error}") from error
    return np.sort(kept), np.sort(held)


def _proxy_subset(train_idx: np.ndarray, y: np.ndarray, config: DataConfig, where: str) -> np.ndarray:
    size = int(round(config.train_fraction * len(train_idx)))
    if config.max_examples is not None:
        size = min(size, config.max_examples)
    if size >= len(train_idx):
        return train_idx
    what = f"{where} (proxy training set, train_fraction={config.train_fraction}, max_examples={config.max_examples})"
    _, subset = _stratified_split(train_idx, y, size, config.seed, what)
    return subset


def _check_every_class(labels: np.ndarray, source: _Source, split: str) -> None:
    missing = np.flatnonzero(np.bincount(labels, minlength=source.num_classes) == 0)
    if len(missing):
        names = [source.class_names[i] for i in missing[:10]]
        raise DataError(f"{source.location}: the {split} split ({len(labels)} examples) has no example of "
                        f"class(es) {missing.tolist()[:10]} {names}; use more data (raise train_fraction / "
                        "max_examples) or check the labels")


# --------------------------------------------------------------------------- arrays


def _to_float(x: np.ndarray, resize: Optional[Tuple[int, int]]) -> np.ndarray:
    """float32 copy of images (N, H, W, C), resized (bilinear) when ``resize`` differs."""
    if resize is None or tuple(x.shape[1:3]) == tuple(resize):
        return x.astype(np.float32)
    out = np.empty((len(x),) + tuple(resize) + x.shape[3:], dtype=np.float32)
    for start in range(0, len(x), _CHUNK):
        chunk = tf.convert_to_tensor(x[start:start + _CHUNK], dtype=tf.float32)
        out[start:start + _CHUNK] = tf.image.resize(chunk, resize, method="bilinear").numpy()
    return out


def _fit_normalisation(x: np.ndarray) -> Normalisation:
    """Per-channel mean and std of float32 images, accumulated in float64 by chunks."""
    total = np.zeros(x.shape[-1])
    squares = np.zeros(x.shape[-1])
    for start in range(0, len(x), _CHUNK):
        chunk = x[start:start + _CHUNK].astype(np.float64).reshape(-1, x.shape[-1])
        total += chunk.sum(axis=0)
        squares += np.square(chunk).sum(axis=0)
    count = x.size // x.shape[-1]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
    std = np.where(std > 1e-6, std, 1.0)  # a constant channel is only centred
    return Normalisation(mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))


def _resolve_normalisation(config: DataConfig, x_train: np.ndarray, where: str) -> Normalisation:
    """The per-channel affine ``config.normalise`` asks for, for float32 training images (N, H, W, C)."""
    channels = x_train.shape[-1]
    if config.normalise == NORMALISE_FIT:
        return _fit_normalisation(x_train)
    if config.normalise == NORMALISE_NONE:
        return Normalisation.identity(channels)
    return config.normalise.for_channels(channels, where)


def _normalise_in_place(x: np.ndarray, normalisation: Normalisation) -> np.ndarray:
    if all(m == 0.0 for m in normalisation.mean) and all(s == 1.0 for s in normalisation.std):
        return x  # the identity (normalise="none"): the raw values, bit for bit
    x -= np.asarray(normalisation.mean, dtype=np.float32)
    x /= np.asarray(normalisation.std, dtype=np.float32)
    return x


def _images(x: np.ndarray, where: str) -> np.ndarray:
    """Checks an image array and returns it as (N, H, W, C)."""
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{where}: images must be integers or floats, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4 or min(x.shape[1:]) < 1:
        raise DataError(f"{where}: images must be (N, H, W) or (N, H, W, C), got shape {x.shape}")
    if len(x) == 0:
        raise DataError(f"{where}: holds no images")
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        raise DataError(f"{where}: images contain NaN or infinite values")
    return x


def _labels(y: np.ndarray, count: int, where: str) -> np.ndarray:
    """Checks integer labels for ``count`` images and returns them as int32 (N,)."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{where}: labels must be (N,), got shape {y.shape}")
    if len(y) != count:
        raise DataError(f"{where}: {len(y)} labels for {count} images; the lengths must match")
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: labels must be integers, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise DataError(f"{where}: labels out of range: found {int(y.min())}, labels must be >= 0")
    return y.astype(np.int32)


def _check_label_range(y: np.ndarray, num_classes: int, where: str) -> None:
    if len(y) and y.max() >= num_classes:
        raise DataError(f"{where}: labels out of range: found {int(y.max())}, "
                        f"the data set has {num_classes} classes (0 .. {num_classes - 1})")


# --------------------------------------------------------------------------- sources


def _read_source(config: DataConfig) -> _Source:
    name = config.name
    if name == DIGITS:
        return _read_digits()
    if name in TFDS_NAMES:
        return _read_tfds(name, config.data_dir, config.download)
    if name.lower().endswith(".npz"):
        return _read_npz(name)
    if os.path.isdir(name):
        return _read_folder(name, config.resize, config.cache_dir)
    if os.path.isfile(name):
        raise DataError(f"{name}: unsupported file; expected a .npz file with arrays 'x' and 'y'")
    if os.sep in name or name.startswith("."):
        raise DataError(f"{name}: no such file or directory")
    raise DataError(f"unknown data set {name!r}: expected one of {', '.join(NAMES)}, a path to a .npz "
                    "file with arrays 'x' and 'y', or a folder with one sub-folder of images per class")


def _read_digits() -> _Source:
    bunch = sklearn_datasets.load_digits()
    return _Source(name=DIGITS, x=bunch.images[..., np.newaxis].astype(np.float32),
                   y=bunch.target.astype(np.int32), x_test=None, y_test=None, num_classes=10,
                   class_names=tuple(str(int(c)) for c in bunch.target_names),
                   location="sklearn.datasets.load_digits (shipped with scikit-learn)")


def _read_tfds(name: str, data_dir: Optional[str], download: bool) -> _Source:
    builder = tfds_builder(name, data_dir, download)
    label = builder.info.features["label"]
    splits = {}
    for split in ("train", "test"):
        images, labels = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
        where = f"{builder.data_dir} ({split} split)"
        splits[split] = (_images(images, where), _labels(labels, len(images), where))
        _check_label_range(splits[split][1], label.num_classes, where)
    return _Source(name=name, x=splits["train"][0], y=splits["train"][1], x_test=splits["test"][0],
                   y_test=splits["test"][1], num_classes=label.num_classes, class_names=tuple(label.names),
                   location=builder.data_dir)


def tfds_builder(name: str, data_dir: Optional[str], download: bool):
    """A prepared TFDS builder; never downloads unless ``download``, and then only if reachable.

    Raises:
      DatasetNotPreparedError: the data set is not prepared under ``data_dir``
        and ``download`` is False, or its download hosts cannot be reached.
    """
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    if not download:
        raise DatasetNotPreparedError(_not_prepared_message(builder, name))
    _check_reachable(builder, name)
    logging.info("Downloading and preparing %s into %s", name, builder.data_dir)
    builder.download_and_prepare()
    return builder


def _not_prepared_message(builder, name: str) -> str:
    root = os.fspath(builder.data_dir_root)
    return (f"TFDS data set {name!r} is not prepared: looked for {builder.data_dir} (no dataset_info.json "
            f"and features.json there) and did not download, because downloading is off. Prepare it with "
            f"one of:\n"
            f"  * rerun with --download (DataConfig(download=True))\n"
            f"  * run: tfds build {name} --data_dir={root}\n"
            f"  * or: python -c \"import tensorflow_datasets as tfds; "
            f"tfds.builder('{name}', data_dir='{root}').download_and_prepare()\"\n"
            f"  * or copy a prepared '{name}' folder from another machine into {root}\n"
            f"and pass --data_dir={root} if that is not TFDS's default directory.")


def _check_reachable(builder, name: str) -> None:
    """Fails fast when a download host is unreachable (TFDS would retry for minutes)."""
    if any(os.environ.get(var) for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return  # a proxy decides; a direct probe would say nothing
    hosts = set()
    for url in (builder.url_infos or {}):
        parsed = urllib.parse.urlparse(url)
        if parsed.hostname:
            hosts.add((parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)))
    for host, port in sorted(hosts):
        try:
            socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S).close()
        except OSError as error:
            raise DatasetNotPreparedError(
                f"cannot download {name!r}: {host}:{port} is unreachable ({error}). Prepare it on a machine "
                f"with internet access (tfds build {name} --data_dir=DIR) and copy DIR/{name} into "
                f"{os.fspath(builder.data_dir_root)}.") from error


def _read_npz(path: str) -> _Source:
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise DataError(f"{path}: holds a single array, expected a .npz archive with 'x' and 'y'")
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"{path}: not a readable .npz file ({error})") from error
    return _source_from_arrays(arrays, path)


def _source_from_arrays(arrays: Dict[str, np.ndarray], path: str) -> _Source:
    missing = [key for key in ("x", "y") if key not in arrays]
    if missing:
        raise DataError(f"{path}: missing array(s) {missing}; found {sorted(arrays)}, expected 'x' and 'y'")
    for split in ("test", "val"):
        if (f"x_{split}" in arrays) != (f"y_{split}" in arrays):
            raise DataError(f"{path}: 'x_{split}' and 'y_{split}' must come together; found {sorted(arrays)}")
    ignored = set(arrays) - {"x", "y", "x_test", "y_test", "x_val", "y_val", "class_names"}
    if ignored:
        logging.warning("%s: ignoring arrays %s", path, sorted(ignored))
    x = _images(arrays["x"], f"{path}: array 'x'")
    y = _labels(arrays["y"], len(x), f"{path}: array 'y'")
    held_out = {}  # "test" / "val" -> (images, labels)
    for split in ("test", "val"):
        if f"x_{split}" in arrays:
            images = _images(arrays[f"x_{split}"], f"{path}: array 'x_{split}'")
            labels = _labels(arrays[f"y_{split}"], len(images), f"{path}: array 'y_{split}'")
            if images.shape[1:] != x.shape[1:]:
                raise DataError(f"{path}: 'x_{split}' images are {images.shape[1:]}, 'x' images are {x.shape[1:]}")
            held_out[split] = (images, labels)
    x_test, y_test = held_out.get("test", (None, None))
    x_val, y_val = held_out.get("val", (None, None))
    class_names = _npz_class_names(arrays, [y, y_test, y_val], path)
    for key, labels in (("y", y), ("y_test", y_test), ("y_val", y_val)):
        if labels is not None:
            _check_label_range(labels, len(class_names), f"{path}: array '{key}'")
    return _Source(name=path, x=x, y=y, x_test=x_test, y_test=y_test, num_classes=len(class_names),
                   class_names=class_names, location=os.path.abspath(path), x_val=x_val, y_val=y_val)


def _npz_class_names(arrays, label_arrays, path: str) -> Tuple[str, ...]:
    if "class_names" in arrays:
        names = arrays["class_names"]
        if names.ndim != 1 or len(names) < 2:
            raise DataError(f"{path}: array 'class_names' must list at least 2 names, got shape {names.shape}")
        return tuple(str(name) for name in names)
    num_classes = int(max(labels.max() for labels in label_arrays if labels is not None and len(labels))) + 1
    if num_classes < 2:
        raise DataError(f"{path}: array 'y' has a single class; a classifier needs at least 2")
    return tuple(str(i) for i in range(num_classes))


@dataclasses.dataclass(frozen=True)
class _ClassFiles:
    """The images of one class folder, sorted by name, with their sizes and mtimes (ns)."""

    label: int
    folder: str
    relative: str  # the folder relative to the data folder's root, "/"-separated: "train/cat"
    names: Tuple[str, ...]
    sizes: Tuple[int, ...]
    mtimes_ns: Tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class _FolderLayout:
    """An image folder as listed: class names and, per split ("train", maybe "validation" and "test"), its
    class folders (a "validation" split is read from a ``val/`` or a ``validation/`` folder)."""

    class_names: Tuple[str, ...]
    files: Dict[str, List[_ClassFiles]]

    def count(self, split: str) -> int:
        return sum(len(group.names) for group in self.files[split])

    def labels(self, split: str) -> np.ndarray:
        return np.repeat(np.asarray([group.label for group in self.files[split]], dtype=np.int32),
                         [len(group.names) for group in self.files[split]])


def _read_folder(root: str, resize: Optional[Tuple[int, int]], cache_dir: Optional[str] = None) -> _Source:
    if cache_dir is not None:
        _check_cache_dir(root, cache_dir)
    layout = _folder_layout(root)
    if cache_dir is None:
        arrays = _decode_folder(root, layout, resize)
    else:
        arrays = _cached_decode(root, layout, resize, cache_dir)
    return _Source(name=root, x=arrays["x"], y=layout.labels("train"), x_test=arrays.get("x_test"),
                   y_test=layout.labels("test") if "test" in layout.files else None,
                   num_classes=len(layout.class_names),
                   class_names=layout.class_names, location=os.path.abspath(root),
                   x_val=arrays.get("x_val"),
                   y_val=layout.labels("validation") if "validation" in layout.files else None)


_SPLIT_FOLDERS = ("train", "val", "validation", "test")


def _folder_layout(root: str) -> _FolderLayout:
    """Lists ``root`` (one sub-folder per class, or train/ [val/ or validation/] [test/] of those) without
    decoding."""
    subdirs = _subdirectories(root)
    if "train" in subdirs and set(subdirs) <= set(_SPLIT_FOLDERS):
        if "val" in subdirs and "validation" in subdirs:
            raise DataError(f"{root}: holds both val/ and validation/; keep one validation folder")
        class_names = tuple(_subdirectories(os.path.join(root, "train")))
        files = {"train": _class_files(root, "train", class_names)}
        for split, folder in (("validation", "val"), ("validation", "validation"), ("test", "test")):
            if folder in subdirs:
                unknown = set(_subdirectories(os.path.join(root, folder))) - set(class_names)
                if unknown:
                    raise DataError(f"{os.path.join(root, folder)}: classes {sorted(unknown)} are not in train")
                files[split] = _class_files(root, folder, class_names)
    else:
        class_names = tuple(subdirs)
        files = {"train": _class_files(root, "", class_names)}
    return _FolderLayout(class_names=class_names, files=files)


def _subdirectories(root: str) -> list:
    return sorted(entry.name for entry in os.scandir(root)
                  if entry.is_dir() and not entry.name.startswith("."))


def _class_files(root: str, split: str, class_names: Sequence[str]) -> List[_ClassFiles]:
    """The images of ``root/split/<class>/``, classes in label order, files sorted by name."""
    split_root = os.path.join(root, split) if split else root
    if len(class_names) < 2:
        raise DataError(f"{split_root}: found {len(class_names)} class sub-folder(s) {list(class_names)}; expected "
                        "one sub-folder of images per class, at least 2 classes")
    out = []
    for label, name in enumerate(class_names):
        folder = os.path.join(split_root, name)
        entries = sorted((entry for entry in os.scandir(folder) if entry.is_file()
                          and entry.name.lower().endswith(IMAGE_EXTENSIONS)),
                         key=lambda entry: entry.name) if os.path.isdir(folder) else []
        if not entries:
            raise DataError(f"{folder}: class folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        stats = [entry.stat() for entry in entries]
        out.append(_ClassFiles(label=label, folder=folder, relative=f"{split}/{name}" if split else name,
                               names=tuple(entry.name for entry in entries),
                               sizes=tuple(stat.st_size for stat in stats),
                               mtimes_ns=tuple(stat.st_mtime_ns for stat in stats)))
    return out


# The held-out splits an image folder may have, and their arrays in `_decode_folder` and the decode cache.
_HELD_OUT_ARRAYS = (("validation", "x_val"), ("test", "x_test"))


def _decode_folder(root: str, layout: _FolderLayout, resize: Optional[Tuple[int, int]]) -> Dict[str, np.ndarray]:
    """Decodes every image of ``layout``: {"x": train images, "x_val": validation images (if a val/ or
    validation/ folder), "x_test": test images (if a test/ folder)}."""
    total = sum(layout.count(split) for split in layout.files)
    bar = progress.Progress(total=total, label=f"decoding {root}", unit="images")
    arrays = {"x": _decode_files(layout.files["train"], resize, bar)}
    for split, name in _HELD_OUT_ARRAYS:
        if split in layout.files:
            arrays[name] = _decode_files(layout.files[split], resize, bar)
            if arrays[name].shape[1:] != arrays["x"].shape[1:]:
                raise DataError(f"{root}: {split} images are {arrays[name].shape[1:]}, "
                                f"train images {arrays['x'].shape[1:]}")
    bar.close()
    return arrays


def _decode_files(groups: Sequence[_ClassFiles], resize: Optional[Tuple[int, int]],
                  bar: progress.Progress) -> np.ndarray:
    images, first = [], None
    for group in groups:
        for name in group.names:
            path = os.path.join(group.folder, name)
            image = _decode_image(path, resize)
            if first is None:
                first = (path, image.shape)
            elif image.shape != first[1]:
                raise DataError(f"{path}: image shape {image.shape} differs from {first[0]}: {first[1]}; "
                                "images must share one size and channel count (pass --resize=H,W for the size)")
            images.append(image)
            bar.update(1)
    return np.stack(images)


# --------------------------------------------------------------------------- decode cache


def _check_cache_dir(root: str, cache_dir: str) -> None:
    real_root, real_cache = os.path.realpath(root), os.path.realpath(cache_dir)
    if os.path.commonpath([real_root, real_cache]) == real_root:
        raise DataError(f"DataConfig.cache_dir: the decode cache {cache_dir} lies inside the data folder {root}; "
                        "choose a directory outside it (--data_cache_dir): the data folder may be read-only, "
                        "and a folder there would be read as a class")


def _folder_cache_key(layout: _FolderLayout, resize: Optional[Tuple[int, int]]) -> str:
    """sha256 of what decides the decoded arrays: versions, resize, classes, every file's path/size/mtime."""
    digest = hashlib.sha256()
    header = {"format_version": FOLDER_CACHE_VERSION, "tensorflow": tf.__version__,
              "resize": list(resize) if resize is not None else None, "class_names": list(layout.class_names),
              "splits": sorted(layout.files)}
    digest.update(json.dumps(header, sort_keys=True).encode("utf-8") + b"\n")
    for split in sorted(layout.files):
        for group in layout.files[split]:
            lines = "".join(f"{group.relative}/{name}\0{size}\0{mtime_ns}\n"
                            for name, size, mtime_ns in zip(group.names, group.sizes, group.mtimes_ns))
            digest.update(lines.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _folder_cache_prefix(root: str, resize: Optional[Tuple[int, int]]) -> str:
    """File-name prefix shared by every cache file of this (folder, resize), whatever the key."""
    real_root = os.path.realpath(root)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(real_root) or "root")[:40]
    identity = hashlib.sha256(f"{real_root}\0{list(resize) if resize is not None else None}"
                              .encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return f"{name}-{identity}-"


def _arrays_checksum(arrays: Dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\n".encode("utf-8"))
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def _cached_decode(root: str, layout: _FolderLayout, resize: Optional[Tuple[int, int]],
                   cache_dir: str) -> Dict[str, np.ndarray]:
    key = _folder_cache_key(layout, resize)
    prefix = _folder_cache_prefix(root, resize)
    path = os.path.join(cache_dir, f"{prefix}{key[:32]}.npz")
    if os.path.exists(path):
        start = time.monotonic()
        arrays, problem = _read_folder_cache(path, key, layout)
        if arrays is not None:
            logging.info("Decode cache hit for %s: %s (%.1f s)", root, path, time.monotonic() - start)
            return arrays
        logging.warning("Decode cache %s for %s is corrupt (%s): decoding the folder again and rewriting it",
                        path, root, problem)
    else:
        logging.info("Decode cache miss for %s (key %s): decoding, then writing %s", root, key[:12], path)
    arrays = _decode_folder(root, layout, resize)
    _write_folder_cache(path, prefix, key, arrays)
    return arrays


def _read_folder_cache(path: str, key: str,
                       layout: _FolderLayout) -> Tuple[Optional[Dict[str, np.ndarray]], Optional[str]]:
    """(arrays, None) from a valid cache file, else (None, what is wrong with it)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            stored = {name: archive[name] for name in archive.files}
    except Exception as error:  # pylint: disable=broad-except  # any unreadable file is re-decoded
        return None, f"unreadable: {type(error).__name__}: {error}"
    expected = {"x"} | {name for split, name in _HELD_OUT_ARRAYS if split in layout.files}
    meta = {"format_version", "key", "checksum"}
    if set(stored) != expected | meta:
        return None, f"holds arrays {sorted(stored)}, expected {sorted(expected | meta)}"
    if stored["format_version"].shape != () or int(stored["format_version"]) != FOLDER_CACHE_VERSION:
        return None, f"format version {stored['format_version']!r}, expected {FOLDER_CACHE_VERSION}"
    if str(stored["key"]) != key:
        return None, f"key {str(stored['key'])[:12]}... is not the folder's {key[:12]}..."
    arrays = {name: stored[name] for name in expected}
    for split, name in (("train", "x"),) + _HELD_OUT_ARRAYS:
        if name in arrays and (arrays[name].ndim != 4 or len(arrays[name]) != layout.count(split)):
            return None, f"'{name}' has shape {arrays[name].shape}, expected {layout.count(split)} images"
    if str(stored["checksum"]) != _arrays_checksum(arrays):
        return None, "checksum mismatch"
    return arrays, None


def _write_folder_cache(path: str, prefix: str, key: str, arrays: Dict[str, np.ndarray]) -> None:
    """Writes the cache atomically (temporary file, then os.replace); then deletes this folder's older ones."""
    directory = os.path.dirname(path) or "."
    payload = dict(arrays, format_version=np.asarray(FOLDER_CACHE_VERSION), key=np.asarray(key),
                   checksum=np.asarray(_arrays_checksum(arrays)))
    try:
        os.makedirs(directory, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{prefix}", suffix=".tmp")
        try:
            os.chmod(temporary, 0o644)  # mkstemp makes it 0600; a cache may be shared
            with os.fdopen(handle, "wb") as stream:
                np.savez(stream, **payload)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            _remove_quietly(temporary)
            raise
    except OSError as error:
        logging.warning("Cannot write the decode cache %s (%s); going on without it", path, error)
        return
    logging.info("Decode cache written: %s (%.1f MB)", path, os.path.getsize(path) / 2**20)
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        entries = []
    for entry in entries:
        stale_cache = (entry.name.startswith(prefix) and entry.name.endswith(".npz")
                       and entry.name != os.path.basename(path))
        stale_temp = entry.name.startswith(f".{prefix}") and entry.name.endswith(".tmp")
        try:
            old_temp = stale_temp and now - entry.stat().st_mtime > _STALE_TEMP_S
        except OSError:
            old_temp = False
        if (stale_cache or old_temp) and _remove_quietly(entry.path):
            logging.info("Decode cache: removed the outdated %s", entry.path)


def _remove_quietly(path: str) -> bool:
    try:
        os.remove(path)
        return True
    except OSError:
        return False


def _decode_image(path: str, resize: Optional[Tuple[int, int]]) -> np.ndarray:
    try:
        image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
        raise DataError(f"{path}: cannot decode image ({error.message})") from error
    if resize is not None and tuple(image.shape[:2]) != tuple(resize):
        return tf.image.resize(tf.cast(image, tf.float32), resize, method="bilinear").numpy()
    return image.numpy()
