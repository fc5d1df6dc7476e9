"""The teacher: where it comes from (zoo name, .keras file, spec JSON) and its training.

`resolve` turns a user's `--teacher` value into a spec (and, for a .keras file,
the trained model itself). `train` trains a teacher by the same code that trains
children and finalists, so their accuracies are comparable.
"""

import dataclasses
import os
from typing import Optional, Sequence

import keras

from acompress import archspec
from acompress import keras_builder
from acompress import keras_parser
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
      model: the loaded model when the source is a .keras file (already trained), else None.
    """

    spec: archspec.ArchSpec
    source: str
    model: Optional[keras.Model] = None

    @property
    def trained(self) -> bool:
        return self.model is not None


def resolve(source: str, input_shape: Sequence[int], num_classes: int) -> Teacher:
    """Resolves a zoo name, a .keras file or a spec .json file into a Teacher.

    Raises:
      TeacherError: unknown name or extension, or a .keras model whose input shape or
        class count differs from the data's.
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
        model = keras_parser.load_keras_model(source)
        spec, model_shape, model_classes = keras_parser.describe_model(model)
        if tuple(model_shape) != input_shape or model_classes != num_classes:
            raise TeacherError(
                f"{source}: the model takes {tuple(model_shape)} inputs with {model_classes} classes, but the "
                f"data set has {input_shape} inputs with {num_classes} classes (see --resize)")
        return Teacher(spec, source, model)
    raise TeacherError(f"unknown teacher {source!r}: give a zoo name ({', '.join(zoo.names())}), "
                       "a .keras model file or a spec .json file")


def train(teacher: Teacher, train_data, validation_data, input_shape: Sequence[int], num_classes: int,
          config: training.TrainConfig, *, bn_momentum: float = 0.9, callbacks=(), verbose: int = 0):
    """Builds and trains the teacher's spec; returns (model, summary).

    A teacher loaded from a .keras file is already trained: it is returned as is,
    with its validation accuracy.
    """
    if teacher.trained:
        return teacher.model, {"epochs": 0, "val_accuracy": training.accuracy(teacher.model, validation_data),
                               "loaded_from": teacher.source}
    model = keras_builder.build_model(teacher.spec, input_shape, num_classes, bn_momentum=bn_momentum,
                                      name="teacher")
    summary = training.fit(model, train_data, validation_data, config, callbacks=callbacks, verbose=verbose)
    return model, summary
