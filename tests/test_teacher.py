"""A user's own trained teacher: its input convention, its body, and the accuracy the package reports."""

import logging

import keras
import numpy as np
import pytest
from sklearn import datasets as sk_datasets

from acompress import data
from acompress import keras_parser
from acompress import teacher as teacher_lib
from acompress import training

layers = keras.layers


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    """The digits as 0..255 pixels, with the user's own validation and test splits."""
    digits = sk_datasets.load_digits()
    x = np.clip(digits.images * 16, 0, 255).astype(np.uint8)[..., None]
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(x))
    train, val, test = order[:1100], order[1100:1450], order[1450:]
    path = tmp_path_factory.mktemp("user") / "digits_user.npz"
    np.savez(path, x=x[train], y=y[train], x_val=x[val], y_val=y[val], x_test=x[test], y_test=y[test])
    return path, (x[train], y[train]), (x[val], y[val]), (x[test], y[test])


def _train_outside(model, x, y):
    """What a user does: their own compile and fit, not the package's."""
    keras.utils.set_random_seed(0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=8, batch_size=64, verbose=0)
    return model


def _cnn(*prefix):
    return keras.Sequential([keras.Input((8, 8, 1)), *prefix,
                             layers.Conv2D(16, 3, padding="same", use_bias=False), layers.BatchNormalization(momentum=0.9),
                             layers.ReLU(), layers.MaxPooling2D(), layers.Conv2D(32, 3, padding="same"),
                             layers.ReLU(), layers.GlobalAveragePooling2D(), layers.Dense(10, activation="softmax")],
                            name="user_cnn")


def _package_accuracies(path, normalise, source):
    config = data.DataConfig(name=str(path), normalise=normalise, batch_size=64)
    splits = data.load(config)
    resolved = teacher_lib.resolve(source, splits.info.input_shape, splits.info.num_classes,
                                   normalisation=splits.info.normalisation)
    _, validation, test = data.pipelines(splits, config)
    return resolved, training.accuracy(resolved.model, validation), training.accuracy(resolved.model, test)


def _keras_accuracy(model, x, y):
    return float(model.evaluate(x.astype(np.float32), y, verbose=0, return_dict=True)["accuracy"])


def test_a_teacher_with_a_rescaling_prefix_takes_raw_inputs(digits_npz, tmp_path):
    path, (x_train, y_train), (x_val, y_val), (x_test, y_test) = digits_npz
    model = _train_outside(_cnn(layers.Rescaling(1 / 255, offset=-0.5)), x_train.astype(np.float32), y_train)
    source = str(tmp_path / "user.keras")
    model.save(source)
    normalise = teacher_lib.input_normalisation(source)
    np.testing.assert_allclose(normalise["mean"], [127.5])
    np.testing.assert_allclose(normalise["std"], [255.0])
    resolved, val_accuracy, test_accuracy = _package_accuracies(path, normalise, source)
    assert resolved.preprocessing is not None and resolved.spec[0].kind == "conv"
    # The package sees the user's own validation and test images, and scores the teacher as Keras does.
    assert val_accuracy == pytest.approx(_keras_accuracy(model, x_val, y_val), abs=1e-6)  # Keras keeps float32
    assert test_accuracy == pytest.approx(_keras_accuracy(model, x_test, y_test), abs=1e-6)  # Keras keeps float32
    assert val_accuracy > 0.5  # a trained network, so the check means something


def test_a_teacher_trained_on_inputs_scaled_outside_gets_them_unchanged(digits_npz, tmp_path):
    path, (x_train, y_train), (x_val, y_val), (x_test, y_test) = digits_npz
    scaled = tmp_path / "scaled.npz"  # the user's convention: x / 16, done before the model
    np.savez(scaled, x=x_train / 16.0, y=y_train, x_val=x_val / 16.0, y_val=y_val, x_test=x_test / 16.0,
             y_test=y_test)
    model = _train_outside(_cnn(), x_train / 16.0, y_train)
    source = str(tmp_path / "plain.keras")
    model.save(source)
    assert teacher_lib.input_normalisation(source) == "none"
    _, val_accuracy, test_accuracy = _package_accuracies(scaled, "none", source)
    assert val_accuracy == pytest.approx(_keras_accuracy(model, x_val / 16.0, y_val), abs=1e-6)  # Keras keeps float32
    assert test_accuracy == pytest.approx(_keras_accuracy(model, x_test / 16.0, y_test), abs=1e-6)  # Keras keeps float32
    assert val_accuracy > 0.5


def test_data_normalised_unlike_the_teachers_own_preprocessing_is_refused(digits_npz, tmp_path):
    path, (x_train, y_train), _, _ = digits_npz
    model = _cnn(layers.Rescaling(1 / 255))
    source = str(tmp_path / "prefixed.keras")
    model.save(source)
    with pytest.raises(teacher_lib.TeacherError, match="normalises its inputs itself"):
        _package_accuracies(path, "fit", source)


def test_standardising_for_a_teacher_without_preprocessing_warns(digits_npz, tmp_path, caplog):
    path = digits_npz[0]
    source = str(tmp_path / "plain.keras")
    _cnn().save(source)
    with caplog.at_level(logging.WARNING):
        _package_accuracies(path, "fit", source)
    assert "no preprocessing of its own" in caplog.text


def test_zoo_and_spec_teachers_are_standardised():
    assert teacher_lib.input_normalisation("digits_cnn") == "fit"
    assert teacher_lib.input_normalisation("testdata/specs/small_cnn.json") == "fit"


def test_the_body_of_a_keras_application_computes_what_it_computes(tmp_path):
    """MobileNetV2 with a Rescaling prefix: the body on normalised inputs equals the model on raw ones."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    outputs = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10, alpha=0.35)(x)
    model = keras.Model(inputs, outputs)
    source = str(tmp_path / "mobilenet.keras")
    model.save(source)
    normalise = teacher_lib.input_normalisation(source)
    resolved = teacher_lib.resolve(source, (32, 32, 3), 10,
                                   normalisation=data.Normalisation.from_dict(normalise))
    assert keras_parser.parse_model(resolved.model) == resolved.spec
    raw = np.random.default_rng(0).uniform(0, 255, size=(4, 32, 32, 3)).astype(np.float32)
    body_inputs = (raw - np.float32(normalise["mean"][0])) / np.float32(normalise["std"][0])
    np.testing.assert_allclose(resolved.model(body_inputs), model(raw), atol=1e-5)
