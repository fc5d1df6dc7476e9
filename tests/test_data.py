"""Tests for acompress.data and flags/data_flags.py: sources, splits, pipelines, errors, flags.

Everything runs offline: TFDS data sets are mocked with `tfds.testing.mock_data`
over a data directory that holds only their metadata (what a prepared data set
looks like to TFDS), and every download path is patched to fail the test.
"""

import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import re
import socket
from unittest import mock

from absl import flags
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from acompress import data
from acompress.flags import data_flags

DIGITS_SIZES = {"train": 1149, "validation": 288, "test": 360}


@pytest.fixture(scope="module")
def digits():
    return data.load(data.DataConfig())


# --------------------------------------------------------------------------- helpers


def _labels_of(dataset):
    return np.concatenate([labels.numpy() for _, labels in dataset])


def _images_of(dataset):
    return np.concatenate([images.numpy() for images, _ in dataset])


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def _toy_arrays(n=60, classes=3, shape=(6, 6), seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n,) + shape, dtype=np.uint8), np.arange(n) % classes


def _write_png(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(image).numpy())


def _write_folder(root, classes=("cat", "dog", "owl"), per_class=6, shape=(8, 8, 3), seed=0):
    rng = np.random.default_rng(seed)
    for name in classes:
        for i in range(per_class):
            _write_png(root / name / f"{i}.png", rng.integers(0, 256, size=shape, dtype=np.uint8))
    return str(root)


# TFDS: a "prepared" data directory holding metadata only, plus balanced fake examples.

_TFDS_EXAMPLES = {"cifar100": 500}  # 5 per class, so every class reaches every split
_TFDS_SHAPES = {"cifar10": ((32, 32, 3), 10), "cifar100": ((32, 32, 3), 100),
                "fashion_mnist": ((28, 28, 1), 10), "mnist": ((28, 28, 1), 10),
                "svhn_cropped": ((32, 32, 3), 10)}


def _num_examples(name):
    return _TFDS_EXAMPLES.get(name, 60)


def _write_tfds_metadata(builder):
    """Writes what `tfds build` leaves besides the records: dataset_info.json, features.json."""
    name = builder.name
    builder.data_path.mkdir(parents=True, exist_ok=True)
    split_infos = [
        tfds.core.SplitInfo(name=split, shard_lengths=[_num_examples(name)], num_bytes=0,
                            filename_template=tfds.core.ShardedFileTemplate(
                                data_dir=builder.data_path, dataset_name=name, split=split,
                                filetype_suffix="tfrecord"))
        for split in ("train", "test")]
    builder.info.set_splits(tfds.core.SplitDict(split_infos))
    builder.info.write_to_directory(builder.data_dir)


def _balanced_as_dataset(builder, split, **unused_kwargs):
    """Replaces reading TFRecords: deterministic images, labels cycling through every class."""
    del unused_kwargs
    n = _num_examples(builder.name)
    image = builder.info.features["image"]
    rng = np.random.default_rng(0 if split == "train" else 1)
    images = rng.integers(0, 256, size=(n,) + tuple(image.shape), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % builder.info.features["label"].num_classes
    return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})


@contextlib.contextmanager
def _offline_tfds(data_dir, prepared=(), download_and_prepare=None):
    """Mocks TFDS over ``data_dir``; yields the list of download attempts (each fails)."""
    for name in prepared:
        _write_tfds_metadata(tfds.builder(name, data_dir=str(data_dir)))
    attempts = []

    def refuse(what, error=AssertionError):
        def fail(*args, **kwargs):
            attempts.append(what)
            raise error(f"{what} called: a download was attempted")
        return fail

    with contextlib.ExitStack() as stack:
        stack.enter_context(tfds.testing.mock_data(data_dir=str(data_dir), as_dataset_fn=_balanced_as_dataset))
        # Patched after mock_data, so these win over its no-op download_and_prepare.
        stack.enter_context(mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare",
                                              download_and_prepare or refuse("download_and_prepare")))
        for method in ("download", "download_and_extract"):
            stack.enter_context(mock.patch.object(tfds.download.DownloadManager, method, refuse(method)))
        stack.enter_context(mock.patch.object(socket, "create_connection", refuse("socket", OSError)))
        yield attempts


# --------------------------------------------------------------------------- digits and splits


def test_digits_split_sizes_dtypes_and_classes(digits):
    info = digits.info
    assert info.sizes == DIGITS_SIZES
    assert (info.name, info.input_shape, info.num_classes) == ("digits", (8, 8, 1), 10)
    assert info.augment == data.AUGMENT_NONE
    for x, y, size in ((digits.x_train, digits.y_train, 1149), (digits.x_val, digits.y_val, 288),
                       (digits.x_test, digits.y_test, 360)):
        assert x.shape == (size, 8, 8, 1) and x.dtype == np.float32
        assert y.shape == (size,) and y.dtype == np.int32
        assert np.bincount(y, minlength=10).min() >= int(0.09 * size)  # stratified: ~10% each


def test_digits_normalisation_uses_train_statistics(digits):
    mean, std = digits.info.normalisation.mean[0], digits.info.normalisation.std[0]
    assert 0.0 < mean < 16.0 and 0.0 < std < 16.0  # raw pixels are 0..16
    assert abs(float(digits.x_train.mean())) < 1e-4
    assert float(digits.x_train.std()) == pytest.approx(1.0, abs=1e-4)
    pixels = digits.x_test * std + mean  # the same statistics normalise every split
    np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-3)
    assert pixels.min() == pytest.approx(0.0, abs=1e-3) and pixels.max() == pytest.approx(16.0, abs=1e-3)


def test_splits_are_disjoint_and_cover_the_data(digits):
    train, val, test = (set(digits.indices[k].tolist()) for k in ("train", "validation", "test"))
    assert not train & val and not train & test and not val & test
    assert len(train | val | test) == 1797
    # By content too (the 1,797 digit images are all distinct).
    rows = lambda x: {row.tobytes() for row in x.reshape(len(x), -1)}  # noqa: E731
    assert not rows(digits.x_train) & rows(digits.x_test)
    assert not rows(digits.x_val) & rows(digits.x_test)
    assert not rows(digits.x_train) & rows(digits.x_val)


def test_splits_are_deterministic_for_a_seed(digits):
    again = data.load(data.DataConfig(seed=0))
    for key in ("train", "validation", "test"):
        np.testing.assert_array_equal(digits.indices[key], again.indices[key])
    np.testing.assert_array_equal(digits.x_train, again.x_train)
    other = data.load(data.DataConfig(seed=1))
    assert other.info.sizes == DIGITS_SIZES
    assert not np.array_equal(digits.indices["test"], other.indices["test"])


def test_test_split_never_reaches_search_code(digits):
    search = digits.for_search()
    field_names = {field.name for field in dataclasses.fields(search)}
    assert field_names == {"x_train", "y_train", "x_val", "y_val", "info"}
    assert not hasattr(search, "x_test") and not hasattr(search, "y_test")
    for name in ("x_train", "x_val"):
        assert not np.shares_memory(getattr(search, name), digits.x_test)
    with pytest.raises(TypeError, match="SearchSplits"):
        data.search_datasets(digits, data.DataConfig())  # the full Splits is refused
    train, val = data.search_datasets(search, data.DataConfig())
    seen = {row.tobytes() for row in np.concatenate([_images_of(train), _images_of(val)]).reshape(-1, 64)}
    assert len(seen) == 1149 + 288
    assert not seen & {row.tobytes() for row in digits.x_test.reshape(-1, 64)}


def test_datasets_entry_point_gives_three_pipelines():
    config = data.DataConfig(batch_size=100)
    train, val, test, info = data.datasets(config)
    assert info.sizes == DIGITS_SIZES
    assert train.element_spec[0].shape.as_list() == [None, 8, 8, 1]
    assert train.element_spec[0].dtype == tf.float32 and train.element_spec[1].dtype == tf.int32
    assert [len(_labels_of(ds)) for ds in (train, val, test)] == [1149, 288, 360]


def test_proxy_training_set_keeps_validation_and_test_whole(digits):
    half = data.load(data.DataConfig(train_fraction=0.5))
    assert half.info.sizes == {"train": 574, "validation": 288, "test": 360}
    capped = data.load(data.DataConfig(train_fraction=0.5, max_examples=100))
    assert capped.info.sizes["train"] == 100
    assert np.bincount(capped.y_train, minlength=10).min() == 10  # stratified
    for proxy in (half, capped):
        assert set(proxy.indices["train"].tolist()) <= set(digits.indices["train"].tolist())
        for split in ("validation", "test"):
            np.testing.assert_array_equal(proxy.indices[split], digits.indices[split])
    with pytest.raises(data.DataError, match="proxy training set"):
        data.load(data.DataConfig(max_examples=5))  # 5 examples cannot cover 10 classes


def test_resize_changes_input_shape():
    splits = data.load(data.DataConfig(resize=(32, 32), max_examples=50))
    assert splits.info.input_shape == (32, 32, 1)
    assert splits.x_train.shape == (50, 32, 32, 1) and splits.x_test.shape == (360, 32, 32, 1)


# --------------------------------------------------------------------------- pipelines


def test_training_pipeline_shuffles_deterministically_and_reshuffles_each_epoch(digits):
    make = lambda: data.make_dataset(digits.x_train, digits.y_train, batch_size=64,  # noqa: E731
                                     training=True, seed=3)
    first, second = make(), make()
    epoch_a, epoch_b = _labels_of(first), _labels_of(first)
    np.testing.assert_array_equal(epoch_a, _labels_of(second))  # same seed, same order
    assert not np.array_equal(epoch_a, epoch_b)  # a new order every epoch
    assert sorted(epoch_a.tolist()) == sorted(digits.y_train.tolist())
    evaluation = data.make_dataset(digits.x_val, digits.y_val, batch_size=64, training=False)
    np.testing.assert_array_equal(_labels_of(evaluation), digits.y_val)


@pytest.mark.parametrize("policy", [data.AUGMENT_CROP, data.AUGMENT_CROP_FLIP])
def test_augmentation_is_seeded_and_training_only(digits, policy):
    x, y = digits.x_train[:128], digits.y_train[:128]
    make = lambda seed: data.make_dataset(x, y, batch_size=32, training=True, seed=seed,  # noqa: E731
                                          augment=policy)
    plain = _images_of(data.make_dataset(x, y, batch_size=32, training=True, seed=0))
    augmented = _images_of(make(0))
    assert augmented.shape == plain.shape and augmented.dtype == np.float32
    assert not np.array_equal(augmented, plain)
    np.testing.assert_array_equal(augmented, _images_of(make(0)))
    assert not np.array_equal(augmented, _images_of(make(1)))
    evaluation = data.make_dataset(x, y, batch_size=32, training=False, augment=policy)
    np.testing.assert_array_equal(_images_of(evaluation), x)


def test_augmentation_defaults_per_data_set():
    resolve = lambda **kw: data.resolve_augment(data.DataConfig(**kw))  # noqa: E731
    assert resolve(name="digits") == data.AUGMENT_NONE
    assert resolve(name="mnist") == data.AUGMENT_NONE
    assert resolve(name="cifar10") == data.AUGMENT_CROP_FLIP
    assert resolve(name="svhn_cropped") == data.AUGMENT_CROP  # a mirrored digit is not a digit
    assert resolve(name="digits", augment=True) == data.AUGMENT_CROP
    assert resolve(name="cifar100", augment=False) == data.AUGMENT_NONE
    assert resolve(name="mine.npz", augment=True) == data.AUGMENT_CROP_FLIP


def test_cache_gives_the_same_batches(digits):
    plain = data.make_dataset(digits.x_val, digits.y_val, batch_size=50, training=False)
    cached = data.make_dataset(digits.x_val, digits.y_val, batch_size=50, training=False, cache=True)
    np.testing.assert_array_equal(_images_of(plain), _images_of(cached))
    np.testing.assert_array_equal(_images_of(cached), _images_of(cached))  # second pass from the cache


def test_make_dataset_rejects_bad_arguments(digits):
    with pytest.raises(data.DataError, match="augment"):
        data.make_dataset(digits.x_val, digits.y_val, batch_size=8, training=True, augment="rotate")
    with pytest.raises(data.DataError, match="batch_size"):
        data.make_dataset(digits.x_val, digits.y_val, batch_size=0, training=False)
    with pytest.raises(data.DataError, match="to match x"):
        data.make_dataset(digits.x_val, digits.y_val[:-1], batch_size=8, training=False)


# --------------------------------------------------------------------------- .npz


def test_npz_source(tmp_path):
    x, y = _toy_arrays(n=60, classes=3)
    path = _write_npz(tmp_path / "toy.npz", x=x, y=y)
    splits = data.load(data.DataConfig(name=path))
    assert splits.info.sizes == {"train": 38, "validation": 10, "test": 12}
    assert (splits.info.input_shape, splits.info.num_classes) == ((6, 6, 1), 3)
    assert splits.x_train.dtype == np.float32 and splits.y_train.dtype == np.int32
    assert splits.info.source == os.path.abspath(path)


def test_npz_with_its_own_test_split_and_class_names(tmp_path):
    x, y = _toy_arrays(n=40, classes=4, shape=(5, 5, 3))
    x_test, y_test = _toy_arrays(n=12, classes=4, shape=(5, 5, 3), seed=1)
    path = _write_npz(tmp_path / "own.npz", x=x, y=y, x_test=x_test, y_test=y_test,
                      class_names=np.array(["a", "b", "c", "d"]))
    splits = data.load(data.DataConfig(name=path))
    assert splits.info.sizes == {"train": 32, "validation": 8, "test": 12}
    assert splits.info.class_names == ("a", "b", "c", "d")
    np.testing.assert_array_equal(splits.y_test, y_test)


def _bad_npz(tmp_path, case):
    x, y = _toy_arrays()
    path = tmp_path / f"{case}.npz"
    if case == "missing_y":
        return _write_npz(path, x=x, labels=y), r"missing array\(s\) \['y'\]"
    if case == "mismatched":
        return _write_npz(path, x=x, y=y[:-3]), "57 labels for 60 images"
    if case == "float_labels":
        return _write_npz(path, x=x, y=y.astype(np.float32)), "labels must be integers, got dtype float32"
    if case == "string_images":
        return _write_npz(path, x=np.array(["a"] * 60), y=y), "images must be integers or floats"
    if case == "negative_label":
        return _write_npz(path, x=x, y=np.where(y == 2, -1, y)), "labels out of range: found -1"
    if case == "label_too_big":
        return (_write_npz(path, x=x, y=y + 1, class_names=np.array(["a", "b", "c"])),
                "labels out of range: found 3, the data set has 3 classes")
    if case == "nan":
        return _write_npz(path, x=np.full((60, 4, 4), np.nan), y=y), "NaN"
    if case == "bad_shape":
        return _write_npz(path, x=x.reshape(60, -1), y=y), r"\(N, H, W\) or \(N, H, W, C\)"
    if case == "not_npz":
        path.write_text("not a zip archive")
        return str(path), "not a readable .npz file"
    if case == "missing_file":
        return str(tmp_path / "absent.npz"), "no such file"
    if case == "lonely_class":
        return _write_npz(path, x=x[:31], y=np.r_[np.zeros(15), np.ones(15), [2]].astype(int)), \
            r"class\(es\) \[2\] have a single example"
    raise ValueError(case)


@pytest.mark.parametrize("case", ["missing_y", "mismatched", "float_labels", "string_images",
                                  "negative_label", "label_too_big", "nan", "bad_shape", "not_npz",
                                  "missing_file", "lonely_class"])
def test_bad_npz_raises_a_clear_error(tmp_path, case):
    path, message = _bad_npz(tmp_path, case)
    with pytest.raises(data.DataError, match=message) as raised:
        data.load(data.DataConfig(name=path))
    assert path in str(raised.value)


def test_a_split_that_leaves_a_class_empty_is_an_error(tmp_path):
    x, y = _toy_arrays(n=60, classes=3)
    path = _write_npz(tmp_path / "gap.npz", x=x, y=np.where(y == 1, 2, y))  # classes 0 and 2 only
    with pytest.raises(data.DataError, match=r"train split .* no example of class\(es\) \[1\]"):
        data.load(data.DataConfig(name=path))


# --------------------------------------------------------------------------- image folders


def test_image_folder_source(tmp_path):
    root = _write_folder(tmp_path / "pets", per_class=10)
    splits = data.load(data.DataConfig(name=root))
    info = splits.info
    assert (info.input_shape, info.num_classes, info.class_names) == ((8, 8, 3), 3, ("cat", "dog", "owl"))
    assert info.sizes == {"train": 19, "validation": 5, "test": 6}
    assert splits.x_train.dtype == np.float32


def test_image_folder_with_train_and_test_folders(tmp_path):
    _write_folder(tmp_path / "split" / "train", per_class=10)
    _write_folder(tmp_path / "split" / "test", per_class=2, seed=1)
    splits = data.load(data.DataConfig(name=str(tmp_path / "split")))
    assert splits.info.sizes == {"train": 24, "validation": 6, "test": 6}
    assert splits.info.class_names == ("cat", "dog", "owl")


def test_image_folder_resizes_mixed_sizes(tmp_path):
    root = _write_folder(tmp_path / "mixed", per_class=6)
    _write_png(tmp_path / "mixed" / "cat" / "big.png", np.zeros((12, 10, 3), np.uint8))
    with pytest.raises(data.DataError, match=r"big.png: image shape \(12, 10, 3\) differs.*--resize"):
        data.load(data.DataConfig(name=root))
    splits = data.load(data.DataConfig(name=root, resize=(8, 8)))
    assert splits.info.input_shape == (8, 8, 3) and sum(splits.info.sizes.values()) == 19


def test_bad_image_folders_raise_clear_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(data.DataError, match=f"{empty}: found 0 class sub-folder"):
        data.load(data.DataConfig(name=str(empty)))
    root = _write_folder(tmp_path / "holes", per_class=4)
    (tmp_path / "holes" / "yak").mkdir()
    with pytest.raises(data.DataError, match="yak: class folder holds no images"):
        data.load(data.DataConfig(name=root))
    root = _write_folder(tmp_path / "corrupt", per_class=4)
    (tmp_path / "corrupt" / "dog" / "2.png").write_bytes(b"not a png")
    with pytest.raises(data.DataError, match=r"dog/2.png: cannot decode image"):
        data.load(data.DataConfig(name=root))


def test_unknown_data_set_name_lists_the_choices():
    with pytest.raises(data.DataError, match="unknown data set 'imagenet'.*cifar10.*npz"):
        data.load(data.DataConfig(name="imagenet"))
    with pytest.raises(data.DataError, match="no such file or directory"):
        data.load(data.DataConfig(name="/nowhere/at/all"))


# --------------------------------------------------------------------------- image folders: decode cache


@pytest.fixture
def absl_logs(caplog):
    caplog.set_level(logging.INFO, logger="absl")
    return caplog


def _cache_files(cache_dir):
    return sorted(name for name in os.listdir(cache_dir)) if os.path.isdir(cache_dir) else []


def _assert_same_splits(a, b):
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.info == b.info


def _no_decoding(monkeypatch):
    def refuse(path, resize):
        raise AssertionError(f"decoded {path}: the decode cache should have been used")
    monkeypatch.setattr(data, "_decode_image", refuse)


@pytest.mark.parametrize("layout", ["flat", "split"])
def test_decode_cache_hit_returns_the_same_arrays_without_decoding(tmp_path, monkeypatch, absl_logs, layout):
    if layout == "flat":
        root = _write_folder(tmp_path / "pets", per_class=5)
    else:
        _write_folder(tmp_path / "pets" / "train", per_class=5)
        _write_folder(tmp_path / "pets" / "test", per_class=2, seed=1)
        root = str(tmp_path / "pets")
    cache_dir = str(tmp_path / "cache")
    plain = data.load(data.DataConfig(name=root))
    first = data.load(data.DataConfig(name=root, cache_dir=cache_dir))
    assert "Decode cache miss" in absl_logs.text and f"decoding {root}" in absl_logs.text  # progress
    [cache_file] = _cache_files(cache_dir)
    assert cache_file.startswith("pets-") and cache_file.endswith(".npz")
    absl_logs.clear()
    _no_decoding(monkeypatch)
    second = data.load(data.DataConfig(name=root, cache_dir=cache_dir))
    assert "Decode cache hit" in absl_logs.text
    _assert_same_splits(first, plain)
    _assert_same_splits(second, plain)
    assert _cache_files(cache_dir) == [cache_file]


def test_decode_cache_keys_on_resize(tmp_path, monkeypatch):
    root = _write_folder(tmp_path / "pets", per_class=5)
    cache_dir = str(tmp_path / "cache")
    small = data.load(data.DataConfig(name=root, cache_dir=cache_dir, resize=(4, 4)))
    full = data.load(data.DataConfig(name=root, cache_dir=cache_dir))
    assert small.info.input_shape == (4, 4, 3) and full.info.input_shape == (8, 8, 3)
    assert len(_cache_files(cache_dir)) == 2  # one per resize setting, neither replaces the other
    _no_decoding(monkeypatch)
    _assert_same_splits(data.load(data.DataConfig(name=root, cache_dir=cache_dir, resize=(4, 4))), small)
    _assert_same_splits(data.load(data.DataConfig(name=root, cache_dir=cache_dir)), full)


def _change_folder(root, change):
    path = os.path.join(root, "dog", "2.png")
    if change == "rewrite":  # other pixels, the same size: only the mtime tells
        stat = os.stat(path)
        for seed in range(100, 200):
            image = np.random.default_rng(seed).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
            image[0, 0] = 7  # marks the new pixels
            if len(tf.io.encode_png(image).numpy()) == stat.st_size:
                break
        _write_png(pathlib.Path(path), image)
        assert os.stat(path).st_size == stat.st_size
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
        return image
    elif change == "same_mtime":  # other pixels and size, the mtime put back as it was
        stat = os.stat(path)
        image = np.zeros((8, 8, 3), np.uint8)
        _write_png(pathlib.Path(path), image)
        assert os.stat(path).st_size != stat.st_size
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        return image
    elif change == "add":
        _write_png(pathlib.Path(os.path.join(root, "owl", "9.png")), np.full((8, 8, 3), 200, np.uint8))
    elif change == "remove":
        os.remove(path)
    elif change == "rename":
        os.rename(path, os.path.join(root, "dog", "2b.png"))
    else:
        raise ValueError(change)
    return None


@pytest.mark.parametrize("change", ["rewrite", "same_mtime", "add", "remove", "rename"])
def test_decode_cache_misses_when_the_folder_changes(tmp_path, absl_logs, change):
    root = _write_folder(tmp_path / "pets", per_class=5)
    other = _write_folder(tmp_path / "other", per_class=5, seed=3)  # shares the cache directory
    cache_dir = str(tmp_path / "cache")
    before = data.load(data.DataConfig(name=root, cache_dir=cache_dir))
    data.load(data.DataConfig(name=other, cache_dir=cache_dir))
    [old_file] = [name for name in _cache_files(cache_dir) if name.startswith("pets-")]
    new_image = _change_folder(root, change)
    absl_logs.clear()
    after = data.load(data.DataConfig(name=root, cache_dir=cache_dir))
    assert "Decode cache miss" in absl_logs.text and "Decode cache hit" not in absl_logs.text
    _assert_same_splits(after, data.load(data.DataConfig(name=root)))  # what decoding the folder gives now
    source = data._read_source(data.DataConfig(name=root, cache_dir=cache_dir))
    if new_image is not None:
        dog = source.class_names.index("dog")
        np.testing.assert_array_equal(source.x[source.y == dog][2], new_image)  # the new pixels
        assert not np.array_equal(before.x_train, after.x_train) or not np.array_equal(before.x_test, after.x_test)
    else:
        assert len(source.y) == 15 + {"add": 1, "remove": -1, "rename": 0}[change]
    new_files = [name for name in _cache_files(cache_dir) if name.startswith("pets-")]
    assert len(new_files) == 1 and new_files != [old_file]  # another key; the stale file was replaced
    assert len(_cache_files(cache_dir)) == 2  # the other folder's cache is kept


def _corrupt(path, how):
    raw = open(path, "rb").read()
    if how == "truncated":
        raw = raw[:len(raw) // 2]
    elif how == "garbage":
        raw = np.random.default_rng(0).integers(0, 256, len(raw), dtype=np.uint8).tobytes()
    elif how == "empty":
        raw = b""
    elif how == "flipped_byte":  # in the image data: the archive's CRC or the stored checksum catches it
        middle = len(raw) // 2
        raw = raw[:middle] + bytes([raw[middle] ^ 0xFF]) + raw[middle + 1:]
    elif how in ("tampered", "wrong_key", "short"):  # a well-formed archive that does not match
        with np.load(path) as archive:
            arrays = {name: archive[name] for name in archive.files}
        if how == "tampered":
            arrays["x"] = arrays["x"].copy()
            arrays["x"][0] ^= 1  # checksum left as it was
        elif how == "wrong_key":
            arrays["key"] = np.asarray("0" * 64)
        else:
            arrays["x"] = arrays["x"][1:]
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)
        return
    else:
        raise ValueError(how)
    with open(path, "wb") as handle:
        handle.write(raw)


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty", "flipped_byte", "tampered", "wrong_key", "short"])
def test_corrupt_decode_cache_is_decoded_again_and_rewritten(tmp_path, monkeypatch, absl_logs, how):
    root = _write_folder(tmp_path / "pets", per_class=5)
    cache_dir = str(tmp_path / "cache")
    expected = data.load(data.DataConfig(name=root, cache_dir=cache_dir))
    [cache_file] = _cache_files(cache_dir)
    _corrupt(os.path.join(cache_dir, cache_file), how)
    absl_logs.clear()
    again = data.load(data.DataConfig(name=root, cache_dir=cache_dir))
    _assert_same_splits(again, expected)
    warnings = [r.getMessage() for r in absl_logs.records if r.levelno == logging.WARNING]
    assert any("is corrupt" in message and cache_file in message for message in warnings), warnings
    assert _cache_files(cache_dir) == [cache_file]  # rewritten under the same name
    absl_logs.clear()
    _no_decoding(monkeypatch)
    _assert_same_splits(data.load(data.DataConfig(name=root, cache_dir=cache_dir)), expected)
    assert "Decode cache hit" in absl_logs.text


def test_decode_cache_is_never_inside_the_data_folder(tmp_path):
    root = _write_folder(tmp_path / "pets", per_class=5)
    listing = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files)
    for inside in (root, os.path.join(root, "cache"), os.path.join(root, "cat", "cache")):
        with pytest.raises(data.DataError, match="DataConfig.cache_dir.*inside the data folder"):
            data.load(data.DataConfig(name=root, cache_dir=inside))
    cache_dir = str(tmp_path / "cache")
    data.load(data.DataConfig(name=root, cache_dir=cache_dir))
    assert len(_cache_files(cache_dir)) == 1
    after = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files)
    assert after == listing  # nothing written into the data folder


def test_decode_cache_write_is_atomic_and_never_fatal(tmp_path, monkeypatch, absl_logs):
    root = _write_folder(tmp_path / "pets", per_class=5)
    expected = data.load(data.DataConfig(name=root))
    cache_dir = str(tmp_path / "cache")
    real_savez = np.savez

    def killed_halfway(stream, **arrays):
        stream.write(b"PK\x03\x04 half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", killed_halfway)
    _assert_same_splits(data.load(data.DataConfig(name=root, cache_dir=cache_dir)), expected)
    assert "Cannot write the decode cache" in absl_logs.text
    assert _cache_files(cache_dir) == []  # neither a partial cache file nor the temporary file
    monkeypatch.setattr(np, "savez", real_savez)
    # A killed run's temporary file: removed once it is old, by the next write of that folder's cache.
    data.load(data.DataConfig(name=root, cache_dir=cache_dir))
    [cache_file] = _cache_files(cache_dir)
    prefix = cache_file[:-len(cache_file.split("-")[-1])]
    leftover, fresh = (os.path.join(cache_dir, f".{prefix}{tag}.tmp") for tag in ("killed", "writing"))
    for path in (leftover, fresh):
        open(path, "wb").close()
    os.utime(leftover, (1, 1))
    os.remove(os.path.join(cache_dir, cache_file))
    data.load(data.DataConfig(name=root, cache_dir=cache_dir))
    assert _cache_files(cache_dir) == sorted([cache_file, os.path.basename(fresh)])
    # A cache directory that cannot be made: a warning, and the data as decoded.
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    absl_logs.clear()
    _assert_same_splits(data.load(data.DataConfig(name=root, cache_dir=str(blocker / "cache"))), expected)
    assert "Cannot write the decode cache" in absl_logs.text


# --------------------------------------------------------------------------- TFDS, offline


@pytest.mark.parametrize("name", data.TFDS_NAMES)
def test_tfds_data_sets_load_offline(tmp_path, name):
    shape, classes = _TFDS_SHAPES[name]
    n = _num_examples(name)
    with _offline_tfds(tmp_path, prepared=[name]) as attempts:
        train, val, test, info = data.datasets(data.DataConfig(name=name, data_dir=str(tmp_path),
                                                               batch_size=128))
        x, y = next(iter(train))
    assert attempts == []
    assert info.input_shape == shape and info.num_classes == classes and len(info.class_names) == classes
    assert info.sizes == {"train": n - n // 5, "validation": n // 5, "test": n}
    assert info.source.startswith(os.path.join(str(tmp_path), name))
    assert x.dtype == tf.float32 and y.dtype == tf.int32 and tuple(x.shape[1:]) == shape
    assert len(np.unique(_labels_of(val))) == classes  # validation is stratified
    assert len(_labels_of(test)) == n


def test_tfds_not_prepared_fails_at_once_with_the_fix(tmp_path):
    with _offline_tfds(tmp_path, prepared=["mnist"]) as attempts:
        with pytest.raises(data.DatasetNotPreparedError) as raised:
            data.load(data.DataConfig(name="cifar10", data_dir=str(tmp_path)))
    message = str(raised.value)
    assert attempts == []
    assert os.path.join(str(tmp_path), "cifar10") in message
    assert "--download" in message and f"tfds build cifar10 --data_dir={tmp_path}" in message
    assert isinstance(raised.value, ValueError)


def test_tfds_not_prepared_without_any_mocking(tmp_path):
    """The real TFDS code path: an empty data directory, downloads forbidden."""
    with mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare",
                           side_effect=AssertionError("download attempted")):
        looked_in = re.escape(os.path.join(str(tmp_path), "svhn_cropped"))
        with pytest.raises(data.DatasetNotPreparedError, match=f"looked for {looked_in}"):
            data.load(data.DataConfig(name="svhn_cropped", data_dir=str(tmp_path)))


def test_tfds_download_opt_in_probes_the_host_first(tmp_path, monkeypatch):
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    with _offline_tfds(tmp_path) as attempts:
        with pytest.raises(data.DatasetNotPreparedError, match="cs.toronto.edu:443 is unreachable"):
            data.load(data.DataConfig(name="cifar10", data_dir=str(tmp_path), download=True))
    assert attempts == ["socket"]  # the probe failed; download_and_prepare never ran


def test_tfds_download_opt_in_prepares_then_loads(tmp_path, monkeypatch):
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    prepared = []

    def fake_download_and_prepare(builder, *args, **kwargs):
        prepared.append(builder.name)
        _write_tfds_metadata(builder)  # as TFDS does: files written, builder.info updated

    with _offline_tfds(tmp_path, download_and_prepare=fake_download_and_prepare):
        with mock.patch.object(socket, "create_connection"):
            splits = data.load(data.DataConfig(name="mnist", data_dir=str(tmp_path), download=True))
    assert prepared == ["mnist"]
    assert splits.info.input_shape == (28, 28, 1)


# --------------------------------------------------------------------------- config and flags


@pytest.mark.parametrize("changes, field", [
    ({"validation_fraction": 0.0}, "validation_fraction"), ({"test_fraction": 1.0}, "test_fraction"),
    ({"train_fraction": 1.5}, "train_fraction"), ({"max_examples": 0}, "max_examples"),
    ({"batch_size": 0}, "batch_size"), ({"resize": (32,)}, "resize"), ({"seed": -1}, "seed"),
    ({"name": ""}, "name"), ({"cache_dir": ""}, "cache_dir"), ({"cache_dir": 3}, "cache_dir"),
    ({"normalise": "standardise"}, "normalise"), ({"normalise": {"mean": [0.0], "std": [0.0]}}, "normalise"),
])
def test_data_config_rejects_bad_values(changes, field):
    with pytest.raises(data.DataError, match=f"DataConfig.{field}"):
        data.DataConfig(**changes)


def test_data_config_round_trips_through_json():
    config = data.DataConfig(name="cifar10", resize=(16, 16), max_examples=500, augment=False,
                             cache_dir="/tmp/decoded")
    restored = data.DataConfig.from_dict(json.loads(json.dumps(config.to_dict(), sort_keys=True)))
    assert restored == config
    json.dumps(data.load(data.DataConfig(max_examples=100)).info.to_dict(), sort_keys=True)


def test_flags_define_twice_and_build_the_config():
    flag_values = flags.FlagValues()
    data_flags.define_flags(flag_values)
    data_flags.define_flags(flag_values)  # binaries may share groups
    flag_values(["prog"])
    assert data_flags.config_from_flags(flag_values, seed=0) == data.DataConfig()
    flag_values = flags.FlagValues()
    data_flags.define_flags(flag_values)
    flag_values(["prog", "--dataset=cifar10", "--data_dir=/data/tfds", "--download", "--resize=32,32",
                 "--train_fraction=0.5", "--max_examples=1000", "--batch_size=32", "--augment=off",
                 "--validation_fraction=0.1", "--data_cache_dir=/tmp/decoded"])
    config = data_flags.config_from_flags(flag_values, seed=7)
    assert config == data.DataConfig(name="cifar10", data_dir="/data/tfds", download=True, seed=7,
                                     validation_fraction=0.1, resize=(32, 32), train_fraction=0.5,
                                     max_examples=1000, batch_size=32, augment=False, cache_dir="/tmp/decoded")
    flag_values = flags.FlagValues()
    data_flags.define_flags(flag_values)
    flag_values(["prog", "--data_cache_dir="])  # empty: no decode cache
    assert data_flags.config_from_flags(flag_values, seed=0).cache_dir is None
    for flag_name in ("dataset", "data_dir", "download", "resize", "augment", "max_examples", "data_cache_dir"):
        assert flag_values[flag_name].help


def test_resize_flag_parsing():
    assert data_flags.parse_resize(["28"]) == (28, 28)
    assert data_flags.parse_resize([]) is None
    with pytest.raises(data.DataError, match="--resize"):
        data_flags.parse_resize(["32", "x"])
    with pytest.raises(data.DataError, match="--resize"):
        data_flags.parse_resize(["1", "2", "3"])


# --------------------------------------------------------------------------- normalise modes (a user's teacher)


def _rgb_npz(tmp_path, name="rgb.npz", **extra):
    """60 train images 6x6x3 (uint8, each channel on its own scale) and 12 test images, 3 classes."""
    x, y = _toy_arrays(n=60, classes=3, shape=(6, 6, 3))
    x = (x // np.array([1, 2, 4], np.uint8)).astype(np.uint8)  # channel means ~127, ~64, ~32
    x_test, y_test = _toy_arrays(n=12, classes=3, shape=(6, 6, 3), seed=1)
    return _write_npz(tmp_path / name, x=x, y=y, x_test=x_test, y_test=y_test, **extra), x, y, x_test, y_test


@pytest.mark.parametrize("normalise", ["fit", "none", "per_channel", "broadcast"])
def test_normalise_modes_match_numpy(tmp_path, normalise):
    path, x, _, x_test, _ = _rgb_npz(tmp_path)
    given = {"per_channel": {"mean": [100.0, 50.0, 25.0], "std": [2.0, 4.0, 8.0]},
             "broadcast": {"mean": [0], "std": [255]}}.get(normalise, normalise)  # x / 255
    splits = data.load(data.DataConfig(name=path, normalise=given))
    raw = {"train": x[splits.indices["train"]], "validation": x[splits.indices["validation"]],
           "test": x_test[splits.indices["test"]]}
    if normalise == "fit":
        train64 = raw["train"].astype(np.float64).reshape(-1, 3)
        mean, std = train64.mean(axis=0), train64.std(axis=0)
        np.testing.assert_allclose(splits.info.normalisation.mean, mean, rtol=1e-9)
        np.testing.assert_allclose(splits.info.normalisation.std, std, rtol=1e-9)
        np.testing.assert_allclose(splits.x_train.reshape(-1, 3).mean(axis=0), 0.0, atol=1e-5)
        np.testing.assert_allclose(splits.x_train.reshape(-1, 3).std(axis=0), 1.0, atol=1e-5)
    elif normalise == "none":
        mean, std = np.zeros(3), np.ones(3)
        assert splits.info.normalisation == data.Normalisation(mean=(0.0,) * 3, std=(1.0,) * 3)
    else:
        mean = np.broadcast_to(np.asarray(given["mean"], np.float64), (3,))
        std = np.broadcast_to(np.asarray(given["std"], np.float64), (3,))
        assert splits.info.normalisation.to_dict() == {"mean": mean.tolist(), "std": std.tolist()}
    for split, array in (("train", splits.x_train), ("validation", splits.x_val), ("test", splits.x_test)):
        expected = (raw[split].astype(np.float32) - mean.astype(np.float32)) / std.astype(np.float32)
        assert array.dtype == np.float32
        np.testing.assert_allclose(array, expected, rtol=1e-6, atol=1e-6, err_msg=split)
        if normalise == "none":
            np.testing.assert_array_equal(array, raw[split].astype(np.float32))  # bit for bit
        # What the export prepends (compression.with_normalisation) maps raw inputs back to these values.
        np.testing.assert_allclose(splits.info.normalisation.apply(raw[split]), array, rtol=1e-6, atol=1e-6)
    json.dumps(splits.info.to_dict())


def test_fixed_normalise_with_the_wrong_channel_count_fails_at_load(tmp_path):
    path = _rgb_npz(tmp_path)[0]
    config = data.DataConfig(name=path, normalise={"mean": [0.5, 0.5], "std": [1.0]})  # fine until loaded
    with pytest.raises(data.DataError, match=r"DataConfig.normalise: 'mean' has 2 entries, but the data .* "
                                             r"has 3 channel\(s\)"):
        data.load(config)
    grey = _write_npz(tmp_path / "grey.npz", x=_toy_arrays()[0], y=_toy_arrays()[1])
    with pytest.raises(data.DataError, match=r"'std' has 3 entries, but the data .* has 1 channel"):
        data.load(data.DataConfig(name=grey, normalise={"mean": [0.0], "std": [1.0, 2.0, 3.0]}))


@pytest.mark.parametrize("normalise, message", [
    ("standard", "must be 'fit', 'none' or a fixed affine"),
    (None, "must be 'fit', 'none' or a fixed affine"),
    (3, "must be 'fit', 'none' or a fixed affine"),
    ({"mean": [0.0]}, "exactly the keys 'mean' and 'std'"),
    ({"mean": [0.0], "std": [1.0], "scale": 2}, "exactly the keys 'mean' and 'std'"),
    ({"mean": [0.0], "std": [0.0]}, "'std' must be > 0"),
    ({"mean": [0.0, 0.0], "std": [1.0, -1.0]}, "'std' must be > 0"),
    ({"mean": [], "std": [1.0]}, "'mean' must be a non-empty list of numbers"),
    ({"mean": ["0"], "std": [1.0]}, "'mean' must be a non-empty list of numbers"),
    ({"mean": [True], "std": [1.0]}, "'mean' must be a non-empty list of numbers"),
    ({"mean": [float("nan")], "std": [1.0]}, "'mean' must be finite"),
    ({"mean": [0.0, 1.0], "std": [1.0, 1.0, 1.0]}, "'mean' has 2 entries and 'std' 3"),
])
def test_data_config_rejects_bad_normalise(normalise, message):
    with pytest.raises(data.DataError, match=re.escape("DataConfig.normalise") + ".*" + re.escape(message)):
        data.DataConfig(normalise=normalise)


def test_data_config_with_a_fixed_normalise_round_trips_and_stays_hashable():
    config = data.DataConfig(name="x.npz", normalise={"mean": [127.5], "std": [127.5]})
    assert config.normalise == data.Normalisation(mean=(127.5,), std=(127.5,))
    assert config == data.DataConfig(name="x.npz", normalise=data.Normalisation(mean=(127.5,), std=(127.5,)))
    assert config != data.DataConfig(name="x.npz")
    assert len({config, data.DataConfig(name="x.npz", normalise={"mean": [127.5], "std": [127.5]})}) == 1
    as_dict = config.to_dict()
    assert as_dict["normalise"] == {"mean": [127.5], "std": [127.5]}
    restored = data.DataConfig.from_dict(json.loads(json.dumps(as_dict, sort_keys=True)))
    assert restored == config and hash(restored) == hash(config)
    for mode in ("none", "fit"):
        plain = data.DataConfig(normalise=mode)
        assert data.DataConfig.from_dict(json.loads(json.dumps(plain.to_dict()))) == plain
    # "fit" (the default) is left out, so configs and corpus metadata from before the field compare as they did.
    assert "normalise" not in data.DataConfig().to_dict()
    assert data.DataConfig(normalise="none").to_dict()["normalise"] == "none"
    assert data.DataConfig.from_dict({"name": "digits"}).normalise == "fit"


# --------------------------------------------------------------------------- explicit validation splits


def test_npz_validation_split_is_used_exactly_as_given(tmp_path, absl_logs):
    x_val, y_val = _toy_arrays(n=9, classes=3, shape=(6, 6, 3), seed=2)
    path, x, y, x_test, y_test = _rgb_npz(tmp_path, x_val=x_val, y_val=y_val)
    splits = data.load(data.DataConfig(name=path, normalise="none", validation_fraction=0.5))
    assert splits.info.sizes == {"train": 60, "validation": 9, "test": 12}  # train is all of x
    np.testing.assert_array_equal(splits.x_val, x_val.astype(np.float32))
    np.testing.assert_array_equal(splits.y_val, y_val)
    np.testing.assert_array_equal(splits.x_train, x.astype(np.float32))
    np.testing.assert_array_equal(splits.y_train, y)
    np.testing.assert_array_equal(splits.indices["validation"], np.arange(9))  # indexes x_val
    np.testing.assert_array_equal(splits.indices["train"], np.arange(60))
    assert "validation_fraction=0.5 is not used" in absl_logs.text
    fitted = data.load(data.DataConfig(name=path))  # "fit": x_val standardised with train's statistics
    np.testing.assert_allclose(fitted.x_val, fitted.info.normalisation.apply(x_val), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fitted.info.normalisation.mean, x.reshape(-1, 3).mean(axis=0), rtol=1e-9)
    # Without x_test, test is still carved from x (test_fraction) and train is the rest of x.
    no_test = _write_npz(tmp_path / "no_test.npz", x=x, y=y, x_val=x_val, y_val=y_val)
    splits = data.load(data.DataConfig(name=no_test, normalise="none"))
    assert splits.info.sizes == {"train": 48, "validation": 9, "test": 12}
    assert sorted(np.concatenate([splits.indices["train"], splits.indices["test"]]).tolist()) == list(range(60))
    np.testing.assert_array_equal(splits.x_val, x_val.astype(np.float32))
    # The proxy subset still applies to train; validation stays whole.
    proxy = data.load(data.DataConfig(name=path, max_examples=30))
    assert proxy.info.sizes == {"train": 30, "validation": 9, "test": 12}


@pytest.mark.parametrize("case, message", [
    ("x_val_alone", "'x_val' and 'y_val' must come together"),
    ("y_val_alone", "'x_val' and 'y_val' must come together"),
    ("shape", "'x_val' images are"),
    ("label_count", "array 'y_val'.*labels for"),
    ("label_range", "array 'y_val'.*labels out of range"),
    ("missing_class", "the validation split .* has no example of class"),
])
def test_bad_npz_validation_split_raises_a_clear_error(tmp_path, case, message):
    x, y = _toy_arrays(n=30, classes=3)
    x_val, y_val = _toy_arrays(n=6, classes=3, seed=1)
    arrays = {"x_val_alone": {"x_val": x_val}, "y_val_alone": {"y_val": y_val},
              "shape": {"x_val": x_val[:, :5], "y_val": y_val},
              "label_count": {"x_val": x_val, "y_val": y_val[:5]},
              "label_range": {"x_val": x_val, "y_val": np.full(6, 7), "class_names": np.array(["a", "b", "c"])},
              "missing_class": {"x_val": x_val, "y_val": np.where(y_val == 2, 0, y_val)}}[case]
    path = _write_npz(tmp_path / f"{case}.npz", x=x, y=y, **arrays)
    with pytest.raises(data.DataError, match=message):
        data.load(data.DataConfig(name=path))


def _image_list(root, split, classes=("cat", "dog", "owl")):
    """The images of ``root/split/<class>/`` in load order (classes in label order, files by name)."""
    images = []
    for name in classes:
        folder = os.path.join(root, split, name)
        for file_name in sorted(os.listdir(folder)):
            images.append(tf.io.decode_png(open(os.path.join(folder, file_name), "rb").read()).numpy())
    return np.stack(images).astype(np.float32)


@pytest.mark.parametrize("val_folder", ["val", "validation"])
def test_image_folder_with_a_validation_folder(tmp_path, absl_logs, val_folder):
    root = tmp_path / "split"
    _write_folder(root / "train", per_class=8)
    _write_folder(root / val_folder, per_class=3, seed=1)
    _write_folder(root / "test", per_class=2, seed=2)
    splits = data.load(data.DataConfig(name=str(root), normalise="none"))
    assert splits.info.sizes == {"train": 24, "validation": 9, "test": 6}
    np.testing.assert_array_equal(splits.x_val, _image_list(str(root), val_folder))
    np.testing.assert_array_equal(splits.y_val, np.repeat([0, 1, 2], 3))
    np.testing.assert_array_equal(splits.x_train, _image_list(str(root), "train"))
    np.testing.assert_array_equal(splits.indices["validation"], np.arange(9))
    assert "validation_fraction=0.2 is not used" in absl_logs.text
    # Without test/, test is carved from train/ and validation is still the folder's.
    os.rename(root / "test", tmp_path / "elsewhere")
    splits = data.load(data.DataConfig(name=str(root), normalise="none"))
    assert splits.info.sizes == {"train": 19, "validation": 9, "test": 5}


def test_bad_validation_folders_raise_clear_errors(tmp_path):
    root = tmp_path / "both"
    _write_folder(root / "train", per_class=4)
    _write_folder(root / "val", per_class=2)
    _write_folder(root / "validation", per_class=2)
    with pytest.raises(data.DataError, match="both val/ and validation/"):
        data.load(data.DataConfig(name=str(root)))
    root = tmp_path / "unknown"
    _write_folder(root / "train", per_class=4)
    _write_folder(root / "val", classes=("cat", "dog", "owl", "yak"), per_class=2)
    with pytest.raises(data.DataError, match=r"val: classes \['yak'\] are not in train"):
        data.load(data.DataConfig(name=str(root)))
    root = tmp_path / "missing"
    _write_folder(root / "train", per_class=4)
    _write_folder(root / "val", classes=("cat", "dog"), per_class=2)
    with pytest.raises(data.DataError, match=r"val/owl: class folder holds no images"):
        data.load(data.DataConfig(name=str(root)))


def test_decode_cache_misses_when_a_validation_folder_is_added(tmp_path, monkeypatch, absl_logs):
    root = tmp_path / "pets"
    _write_folder(root / "train", per_class=6)
    _write_folder(root / "test", per_class=2, seed=1)
    cache_dir = str(tmp_path / "cache")
    before = data.load(data.DataConfig(name=str(root), cache_dir=cache_dir))
    [old_file] = _cache_files(cache_dir)
    assert before.info.sizes["validation"] == 4  # carved from train/
    _write_folder(root / "val", per_class=2, seed=3)
    absl_logs.clear()
    after = data.load(data.DataConfig(name=str(root), cache_dir=cache_dir))
    assert "Decode cache miss" in absl_logs.text and "Decode cache hit" not in absl_logs.text
    assert after.info.sizes == {"train": 18, "validation": 6, "test": 6}
    _assert_same_splits(after, data.load(data.DataConfig(name=str(root))))  # as decoding gives it
    [new_file] = _cache_files(cache_dir)
    assert new_file != old_file  # another key; the stale file was replaced
    with np.load(os.path.join(cache_dir, new_file)) as archive:
        assert archive["x_val"].shape == (6, 8, 8, 3) and int(archive["format_version"]) == 2
    absl_logs.clear()
    _no_decoding(monkeypatch)
    _assert_same_splits(data.load(data.DataConfig(name=str(root), cache_dir=cache_dir)), after)
    assert "Decode cache hit" in absl_logs.text
    # Renaming val/ to validation/ changes the listed paths, so the key too (another decode, same data).
    monkeypatch.undo()
    os.rename(root / "val", root / "validation")
    absl_logs.clear()
    renamed = data.load(data.DataConfig(name=str(root), cache_dir=cache_dir))
    assert "Decode cache miss" in absl_logs.text
    _assert_same_splits(renamed, after)
    assert _cache_files(cache_dir) != [new_file] and len(_cache_files(cache_dir)) == 1


# --------------------------------------------------------------------------- --normalize


def _flag_values(*argv):
    flag_values = flags.FlagValues()
    data_flags.define_flags(flag_values)
    flag_values(["prog", *argv])
    return flag_values


def test_normalize_flag_maps_auto_to_the_callers_choice():
    fixed = {"mean": [0.0], "std": [255.0]}
    assert _flag_values().normalize == "auto"
    assert data_flags.config_from_flags(_flag_values(), seed=0).normalise == "fit"  # zoo and spec teachers
    assert data_flags.config_from_flags(_flag_values(), 0, auto_normalise="none").normalise == "none"
    config = data_flags.config_from_flags(_flag_values("--normalize=auto"), 0, auto_normalise=fixed)
    assert config == data.DataConfig(normalise=fixed)
    assert config.normalise == data.Normalisation(mean=(0.0,), std=(255.0,))
    for value in ("fit", "none"):  # explicit choices win over the caller's auto
        for auto in ("fit", "none", fixed):
            assert data_flags.config_from_flags(_flag_values(f"--normalize={value}"), 0,
                                                auto_normalise=auto).normalise == value
    with pytest.raises(flags.IllegalFlagValueError):
        _flag_values("--normalize=standard")
    with pytest.raises(data.DataError, match="DataConfig.normalise"):
        data_flags.config_from_flags(_flag_values(), 0, auto_normalise="standard")
    help_text = _flag_values()["normalize"].help
    assert "auto" in help_text and ".keras" in help_text
    assert "x_val" in _flag_values()["dataset"].help and "val/" in _flag_values()["dataset"].help
