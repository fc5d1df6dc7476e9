"""A user's own keras.applications MobileNetV2 and ResNet50, trained outside the package, compressed end
to end.

Slow. The data is the digits, made the way a user's file would be: 32x32 raw pixels (0..255) in a .npz
with the user's own validation and test splits; the teacher is MobileNetV2 (alpha 0.35) or ResNet50
behind its own Rescaling layer, trained with plain `model.fit`. The pipeline binary runs with `--normalize=auto` (so the
teacher gets raw pixels, as it was trained) on a tiny budget.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn import datasets as sk_datasets

from tests import test_binaries

pytestmark = pytest.mark.slow

TINY_BUDGET = ["--teacher_epochs=1", "--num_children=12", "--replicate_fraction=0.25", "--proxy_epochs=1",
               "--proxy_fraction=0.5", "--pack=4", "--groups_per_worker=0", "--embedding_epochs=3",
               "--embedding_min_steps_per_epoch=4", "--unlabeled_architectures=40", "--embedding_patience=3",
               "--search_steps=20", "--snapshot_every=5", "--rounds=1", "--num_finalists=2", "--finalist_epochs=1",
               "--target_ratio=2", "--max_accuracy_drop=0.5", "--proxy_init=inherit", "--finalist_init=inherit",
               "--recalibrate_batches=4", "--batch_size=64", "--bn_momentum=0.9"]


def _user_files(root, architecture):
    digits = sk_datasets.load_digits()
    # 8x8 -> 32x32 by pixel repetition, 0..16 -> 0..255: the raw images of a user's data set.
    x = np.kron(digits.images, np.ones((4, 4)))[..., None]
    x = np.clip(x * 16, 0, 255).astype(np.uint8)
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(x))
    train, val, test = order[:1000], order[1000:1400], order[1400:]
    data_path = os.path.join(root, "digits32.npz")
    np.savez(data_path, x=x[train], y=y[train], x_val=x[val], y_val=y[val], x_test=x[test], y_test=y[test])
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 1))
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    options = {"alpha": 0.35} if architecture == "MobileNetV2" else {}
    network = getattr(keras.applications, architecture)(weights=None, input_shape=(32, 32, 1), classes=10, **options)
    for layer in network.layers:  # keras.applications' 0.999 has not settled after a few epochs
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    model = keras.Model(inputs, network(scaled))
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x[train].astype(np.float32), y[train], epochs=3, batch_size=64, verbose=0)
    model_path = os.path.join(root, f"{architecture}.keras")
    model.save(model_path)
    keras_test = model.evaluate(x[test].astype(np.float32), y[test], verbose=0, return_dict=True)["accuracy"]
    return data_path, model_path, (x[test], y[test]), float(keras_test), model.count_params()


@pytest.fixture(scope="module", params=["MobileNetV2", "ResNet50"])
def run(request, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("own_model"))
    data_path, model_path, test, keras_test, params = _user_files(root, request.param)
    output_dir = os.path.join(root, "run")
    result = test_binaries.run_binary("pipeline", f"--dataset={data_path}", f"--teacher={model_path}",
                                      "--normalize=auto", "--augment=off", *TINY_BUDGET, f"--output_dir={output_dir}",
                                      timeout=1800)
    assert result.returncode == 0, test_binaries.describe(result)
    return {"output_dir": output_dir, "test": test, "keras_test": keras_test, "params": params,
            "block": "inverted" if request.param == "MobileNetV2" else "bottleneck_v1"}


def test_the_users_model_is_compressed_with_its_own_accuracy_as_the_bar(run):
    report = test_binaries.read_json(os.path.join(run["output_dir"], "compressed", "report.json"))
    teacher, chosen = report["teacher"], report["chosen"]
    assert teacher["params"] == run["params"]  # no preprocessing weights: the spec counts them all
    # The bar is what Keras' evaluate says on the user's own test images, raw as the teacher takes them.
    assert teacher["test_accuracy"] == pytest.approx(run["keras_test"], abs=1e-6)
    assert chosen["ratio"] >= 2 and len(report["finalists"]) == 2
    metadata = test_binaries.read_json(os.path.join(run["output_dir"], "corpus", "metadata.json"))
    info = metadata["dataset"]["info"]
    # The user's own splits, whole (the corpus trains children on a half proxy of the training split).
    assert info["sizes"] == {"train": 500, "validation": 400, "test": 397}
    assert info["normalisation"]["mean"] == pytest.approx([127.5]) and info["normalisation"]["std"] == \
        pytest.approx([127.5])
    assert run["block"] in metadata["search_space"]["config"]["kinds"]  # the space widened for the teacher


def test_the_saved_model_takes_the_users_raw_pixels(run):
    x_test, y_test = run["test"]
    loaded = tf.saved_model.load(os.path.join(run["output_dir"], "compressed", "saved_model"))
    output = loaded.signatures["serving_default"](tf.constant(x_test.astype(np.float32)))
    accuracy = float(np.mean(np.argmax(next(iter(output.values())).numpy(), axis=-1) == y_test))
    report = test_binaries.read_json(os.path.join(run["output_dir"], "compressed", "report.json"))
    assert accuracy == pytest.approx(report["chosen"]["test_accuracy"], abs=1e-6)
