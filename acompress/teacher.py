"""The teacher: where it comes from (zoo name, .keras file, spec JSON) and its training.

`resolve` turns a user's `--teacher` value into a spec (and, for a .keras file,
the trained model itself). `train` trains a teacher by the same code that trains
children and finalists, so their accuracies are comparable.

A trained .keras teacher keeps its own input convention. `input_normalisation`
says what the data must be given as (`data.DataConfig.normalise`): the affine map
of the model's leading Rescaling/Normalization layers, or ``"none"`` (raw values,
as the user's arrays hold them) when it has none. The package then works with the
teacher's *body* (`Teacher.model`): the builder's model of its spec holding its
weights, which takes the inputs after that preprocessing. The body computes what
the user's model computes, checked on random inputs when it is made.
"""

import dataclasses
import functools
import json
import os
from typing import Optional, Sequence

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from acompress import archspec
from acompress import distribution
from acompress import inheritance
from acompress import keras_builder
from acompress import keras_parser
from acompress import rundir
from acompress import training
from acompress import zoo


class TeacherError(ValueError):
    """The teacher cannot be used: unknown name, unreadable file, or a mismatch with the data."""


@dataclasses.dataclass(frozen=True)
class Teacher:
    """A resolved teacher.

    Attributes:
      spec: its architecture.
      source: what the user gave (zoo name or path).
      model: for a .keras file (already trained), its body: the builder's model of `spec`
        with the file's weights, taking inputs after the file's own preprocessing; else None.
      preprocessing: the .keras model's input preprocessing (see the module docstring), or None.
    """

    spec: archspec.ArchSpec
    source: str
    model: Optional[keras.Model] = None
    preprocessing: Optional[keras_parser.Preprocessing] = None

    @property
    def trained(self) -> bool:
        return self.model is not None


def _is_keras_file(source: str) -> bool:
    return source not in zoo.names() and os.path.splitext(source)[1].lower() == ".keras"


def input_normalisation(source: str):
    """What `data.DataConfig.normalise` must be for this teacher (``--normalize=auto``).

    ``"fit"`` (standardise with the training split's statistics) for a zoo name or a
    spec, which the package trains itself; for a trained .keras teacher its own
    convention: its preprocessing's ``{"mean": [...], "std": [...]}``, or ``"none"``.
    """
    if not _is_keras_file(source):
        return "fit"
    parsed = _load(source)[1]
    return parsed.preprocessing.to_dict() if parsed.preprocessing is not None else "none"


def _load(path: str):
    """(model, `keras_parser.parse_fixed` of it) of a .keras file, read once per version of the file:
    a binary asks for its input convention (`input_normalisation`) before it resolves it."""
    try:
        stamp = os.stat(path).st_mtime_ns
    except OSError:
        stamp = None  # load_keras_model names the missing file
    return _load_stamped(path, stamp)


@functools.lru_cache(maxsize=2)
def _load_stamped(path: str, stamp):
    del stamp  # part of the cache key only
    model = keras_parser.load_keras_model(path)
    return model, keras_parser.parse_fixed(model)


def resolve(source: str, input_shape: Sequence[int], num_classes: int, *, normalisation=None) -> Teacher:
    """Resolves a zoo name, a .keras file or a spec .json file into a Teacher.

    Args:
      source: a zoo name, or a path to a .keras or spec .json file.
      input_shape, num_classes: the data's.
      normalisation: the data's `data.Normalisation`, if known: a .keras teacher with its
        own preprocessing refuses data normalised another way.

    Raises:
      TeacherError: unknown name or extension, a .keras model whose input shape or
        class count differs from the data's, or data normalised other than the .keras
        model's own preprocessing.
      archspec.SpecError, keras_parser.UnsupportedModelError: the spec or model is malformed
        or uses layers this package cannot express.
    """
    input_shape = tuple(input_shape)
    if source in zoo.names():
        return Teacher(zoo.get(source, input_shape, num_classes), source)
    extension = os.path.splitext(source)[1].lower()
    if extension == ".json":
        spec = archspec.load(source)
        spec.output_shapes(input_shape)  # fails early, naming the layer, if it cannot run on this data
        return Teacher(spec, source)
    if extension == ".keras":
        model, parsed = _load(source)
        spec, model_shape, model_classes = parsed.spec, parsed.input_shape, parsed.num_classes
        if tuple(model_shape) != input_shape or model_classes != num_classes:
            raise TeacherError(
                f"{source}: the model takes {tuple(model_shape)} inputs with {model_classes} classes, but the "
                f"data set has {input_shape} inputs with {num_classes} classes (see --resize)")
        _check_convention(source, parsed.preprocessing, normalisation)
        try:
            body, _ = inheritance.canonical_model(model, spec, input_shape, num_classes, parsed=parsed)
        except ValueError as error:
            raise TeacherError(f"{source}: {error}") from None
        return Teacher(spec, source, body, parsed.preprocessing)
    raise TeacherError(f"unknown teacher {source!r}: give a zoo name ({', '.join(zoo.names())}), "
                       "a .keras model file or a spec .json file")


def _check_convention(source: str, preprocessing, normalisation) -> None:
    """A .keras teacher's body needs the data exactly as its own preprocessing makes it."""
    if normalisation is None:
        return
    mean, std = np.asarray(normalisation.mean, np.float64), np.asarray(normalisation.std, np.float64)
    if preprocessing is None:
        if not (np.allclose(mean, 0.0) and np.allclose(std, 1.0)):
            logging.warning("%s: the data is standardised (mean %s, std %s) although this trained teacher has "
                            "no preprocessing of its own; it sees other inputs than it was trained on unless "
                            "that is its convention (--normalize=auto gives raw values)", source,
                            np.round(mean, 3).tolist(), np.round(std, 3).tolist())
        return
    if not (np.allclose(mean, preprocessing.mean, rtol=1e-5, atol=1e-6)
            and np.allclose(std, preprocessing.std, rtol=1e-5, atol=1e-6)):
        raise TeacherError(f"{source}: the model normalises its inputs itself (mean {list(preprocessing.mean)}, "
                           f"std {list(preprocessing.std)}), but the data is normalised with mean "
                           f"{mean.tolist()}, std {std.tolist()}; give the data raw, as the model takes it "
                           "(--normalize=auto)")


def train(teacher: Teacher, train_data, validation_data, input_shape: Sequence[int], num_classes: int,
          config: training.TrainConfig, *, bn_momentum: float = 0.9, callbacks=(), verbose: int = 0,
          strategy=None):
    """Builds and trains the teacher's spec; returns (model, summary).

    `strategy`: a `tf.distribute.Strategy` to train under (None: the default one device).

    A teacher loaded from a .keras file is already trained: it is returned as is,
    with its validation accuracy.
    """
    if teacher.trained:
        return teacher.model, {"epochs": 0, "val_accuracy": training.accuracy(teacher.model, validation_data),
                               "loaded_from": teacher.source}
    distribution.agree(strategy, f"teacher {teacher.spec.hash} {config.to_dict()}")
    with distribution.scope(strategy):
        model = keras_builder.build_model(teacher.spec, input_shape, num_classes, bn_momentum=bn_momentum,
                                          name="teacher")
    summary = training.fit(model, train_data, validation_data, config,
                           callbacks=[training.EpochLog("teacher"), *callbacks], verbose=verbose, strategy=strategy)
    return model, summary


MODEL_FILE = "teacher.keras"
SPEC_FILE = "teacher_spec.json"
METRICS_FILE = "metrics.json"


def stage_key(teacher: Teacher, info, config: training.TrainConfig, *, seed: int, bn_momentum: float) -> dict:
    """What a stored teacher stage must have been made with to be reused (its metrics.json "key")."""
    return {"spec_hash": teacher.spec.hash, "source": teacher.source, "seed": seed, "train": config.to_dict(),
            "bn_momentum": bn_momentum, "data": info.to_dict()}


def train_or_load(teacher_dir: str, teacher: Teacher, splits, train_data, validation_data, test_data,
                  config: training.TrainConfig, *, seed: int, bn_momentum: float = 0.9, strategy=None):
    """The teacher stage, resumable: trains and saves the teacher, or loads it if already done.

    Writes `teacher_dir`/teacher.keras, teacher_spec.json and metrics.json (parameters,
    FLOPs, validation and test accuracy, the training summary). A directory whose
    metrics.json was made from another spec, seed or training config is retrained.

    Args:
      teacher_dir: the stage's directory (created if missing).
      teacher: the resolved teacher.
      splits: the `data.Splits` (for the data's info).
      train_data, validation_data, test_data: batched pipelines; the test split is
        evaluated once, here, to report the teacher's accuracy.
      config: the training budget.
      seed: initialisation seed.
      bn_momentum: batch norm momentum of the built teacher.
      strategy: the `tf.distribute.Strategy` to train under (None: one device).

    Returns:
      (model, metrics dict).
    """
    info = splits.info
    key = stage_key(teacher, info, config, seed=seed, bn_momentum=bn_momentum)
    model_path = os.path.join(teacher_dir, MODEL_FILE)
    metrics_path = os.path.join(teacher_dir, METRICS_FILE)
    if tf.io.gfile.exists(metrics_path) and tf.io.gfile.exists(model_path):
        stored = rundir.read_json(metrics_path)
        if stored.get("key") == json.loads(rundir.to_json(key)):
            logging.info("teacher: reusing %s", model_path)
            return keras_parser.load_keras_model(model_path), stored
    keras.utils.set_random_seed(seed)
    model, summary = train(teacher, train_data, validation_data, info.input_shape, info.num_classes, config,
                           strategy=strategy,
                           bn_momentum=bn_momentum)
    metrics = {
        "key": key,
        "params": teacher.spec.count_params(info.input_shape, info.num_classes),
        "flops": teacher.spec.count_flops(info.input_shape, info.num_classes),
        "val_accuracy": training.accuracy(model, validation_data),
        "test_accuracy": training.accuracy(model, test_data),
        "summary": summary,
    }
    tf.io.gfile.makedirs(teacher_dir)
    model.save(model_path)
    archspec.save(teacher.spec, os.path.join(teacher_dir, SPEC_FILE))
    rundir.write_json(metrics_path, metrics)
    logging.info("teacher: %d params, validation accuracy %.4f, test accuracy %.4f", metrics["params"],
                 metrics["val_accuracy"], metrics["test_accuracy"])
    return model, metrics

