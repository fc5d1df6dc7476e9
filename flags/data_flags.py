"""Flags that choose the data and its pipelines; `config_from_flags` turns them into a `data.DataConfig`.

The seed is not defined here: every seed flows from the one ``--seed`` flag
(`runtime_flags`), which binaries pass to `config_from_flags`.
"""

from absl import flags

from acompress import data

AUGMENT_CHOICES = ("auto", "on", "off")
_AUGMENT = {"auto": None, "on": True, "off": False}
NORMALIZE_CHOICES = ("auto", data.NORMALISE_FIT, data.NORMALISE_NONE)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines the data flags on ``flag_values``; a flag already defined is left alone."""
    defaults = data.DataConfig()

    def define(define_fn, name, default, help_text, **kwargs):
        if name not in flag_values:
            define_fn(name, default, help=help_text, flag_values=flag_values, **kwargs)

    define(flags.DEFINE_string, "dataset", defaults.name,
           f"Data set: one of {', '.join(data.NAMES)}; a path to a .npz file with arrays x (N, H, W[, C]) "
           "and y (N,) (optionally x_val, y_val: the validation split, then --validation_fraction is not "
           "used; x_test, y_test: the test split; class_names); or a folder with one sub-folder of images "
           "per class (or train/ with optional val/ or validation/ and test/ folders of those). A teacher "
           "you trained on all of x (or train/) scores an inflated bar on splits carved from it: give "
           "x_val/x_test (or val/ and test/) it never saw.")
    define(flags.DEFINE_string, "data_dir", defaults.data_dir,
           "TFDS data directory holding prepared data sets (default: TFDS's own, ~/tensorflow_datasets "
           "or $TFDS_DATA_DIR).")
    define(flags.DEFINE_bool, "download", defaults.download,
           "Let TFDS download and prepare a data set missing from --data_dir. Off: a missing data set "
           "fails at once, naming the directory and the command that prepares it.")
    define(flags.DEFINE_float, "validation_fraction", defaults.validation_fraction,
           "Share of the training data held out (stratified) as the validation split, the only "
           "held-out data the search sees.")
    define(flags.DEFINE_float, "test_fraction", defaults.test_fraction,
           "Share of all data held out as the test split, for sources without their own test split "
           "(digits, .npz without x_test, folders without test/). Test only reports final results.")
    define(flags.DEFINE_list, "resize", None,
           "Resize every image to HEIGHT,WIDTH (e.g. 32,32 to run a CIFAR-style teacher on digits); "
           "a single number means a square. Empty: keep the size.")
    define(flags.DEFINE_float, "train_fraction", defaults.train_fraction,
           "Keep this share of the training split (stratified) as a proxy for fast training; "
           "validation and test stay whole.")
    define(flags.DEFINE_integer, "max_examples", defaults.max_examples,
           "Cap on the training split after --train_fraction (stratified); empty: no cap.", lower_bound=1)
    define(flags.DEFINE_integer, "batch_size", defaults.batch_size,
           "Examples per batch in the image pipelines (child, teacher and finalist training).",
           lower_bound=1)
    define(flags.DEFINE_enum, "augment", "auto",
           "Training augmentation: auto (on for cifar10, cifar100, svhn_cropped; off otherwise), on "
           "(random crop after padding, plus horizontal flip unless the images are digits), or off.",
           enum_values=AUGMENT_CHOICES)
    define(flags.DEFINE_bool, "data_cache", defaults.cache,
           "Cache pipeline examples after the first epoch (the data is already in memory, so this "
           "mostly doubles memory; see benchmarks/pipeline_benchmark.py).")
    define(flags.DEFINE_string, "data_cache_dir", defaults.cache_dir,
           "Directory for the decode cache of image-folder data sets: the decoded arrays are saved there "
           "on the first load, keyed by the folder's listing (every file's path, size and mtime) and "
           "--resize, so later loads skip decoding (CIFAR-10's 60,000 JPEGs: ~10-30 s to decode, ~0.4 s from the cache). Must lie "
           "outside the data folder; one file per folder and resize, replaced when the folder changes. "
           "Empty: decode on every run. Not used by digits, TFDS or .npz sources. (Unrelated to "
           "--data_cache, which caches pipeline examples in memory.)")
    define(flags.DEFINE_enum, "normalize", "auto",
           "Input convention of every split: fit (standardise with the training split's per-channel "
           "mean and std), none (the raw values as float32), or auto: fit for zoo and spec teachers; for "
           "a trained .keras teacher, the teacher's own convention (the binary decides: none, or the "
           "affine of the teacher's Rescaling/Normalization preprocessing). Exports always take raw inputs.",
           enum_values=NORMALIZE_CHOICES)


def config_from_flags(flag_values: flags.FlagValues, seed: int, *,
                      auto_normalise=data.NORMALISE_FIT) -> data.DataConfig:
    """The `data.DataConfig` the parsed flags describe; ``seed`` is the run's one seed.

    ``auto_normalise`` is what ``--normalize=auto`` means for this run's teacher: ``"fit"`` (zoo and
    spec teachers, the default), ``"none"``, or a fixed ``{"mean": [...], "std": [...]}`` (a
    `data.Normalisation` too). ``--normalize=fit`` and ``none`` override it.
    """
    return data.DataConfig(
        name=flag_values.dataset, data_dir=flag_values.data_dir or None, download=flag_values.download,
        seed=seed, validation_fraction=flag_values.validation_fraction,
        test_fraction=flag_values.test_fraction, resize=parse_resize(flag_values.resize),
        train_fraction=flag_values.train_fraction, max_examples=flag_values.max_examples,
        batch_size=flag_values.batch_size, augment=_AUGMENT[flag_values.augment],
        cache=flag_values.data_cache, cache_dir=flag_values.data_cache_dir or None,
        normalise=normalise_from_flag(flag_values.normalize, auto_normalise))


def normalise_from_flag(value: str, auto_normalise=data.NORMALISE_FIT):
    """``--normalize`` -> `data.DataConfig.normalise`: ``auto`` -> ``auto_normalise``; fit/none as they are."""
    if value == "auto":
        return auto_normalise
    if value not in NORMALIZE_CHOICES:
        raise data.DataError(f"--normalize: expected one of {', '.join(NORMALIZE_CHOICES)}, got {value!r}")
    return value


def parse_resize(values):
    """``["32", "32"]`` -> (32, 32); ``["28"]`` -> (28, 28); empty -> None."""
    if not values:
        return None
    try:
        sizes = [int(value) for value in values]
    except ValueError as error:
        raise data.DataError(f"--resize: expected HEIGHT,WIDTH integers, got {','.join(values)!r}") from error
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or min(sizes) < 1:
        raise data.DataError(f"--resize: expected HEIGHT,WIDTH positive integers, got {','.join(values)!r}")
    return tuple(sizes)
