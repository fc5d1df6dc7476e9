"""A user's own teacher, made the way a Keras user makes one: the input to `acompress` from outside it.

Writes, under --output_dir:

  <name>.npz     the user's data with its own splits: x/y (train), x_val/y_val, x_test/y_test, raw
                 0..255 pixels as uint8 (the package reads these splits as given: `data` "explicit splits")
  <name>.keras   a keras.applications network behind its own preprocessing layer (Rescaling to
                 [-1, 1], the MobileNetV2 convention), trained with plain `model.fit` on x/y only:
                 it never sees x_val or x_test, so the accuracy bar it sets is honest
  <name>.json    what was trained and what Keras' `evaluate` gives on x_val and x_test

  python benchmarks/keras_teacher.py --dataset=../shared/datasets/cifar10 --output_dir=runs/user \\
      --data_cache_dir=runs/data_cache --architecture=MobileNetV2 --alpha=0.35 --epochs=20

Then compress it (benchmarks/mobilenetv2_cifar10.sh does both):

  acompress-pipeline --flagfile=flags/mobilenetv2_cifar10_cpu.flags --dataset=runs/user/<name>.npz \\
      --teacher=runs/user/<name>.keras --output_dir=runs/mobilenetv2_cifar10
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from acompress import data  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "../shared/datasets/cifar10", "An image folder (or .npz) to read.")
flags.DEFINE_string("data_cache_dir", None, "Decode cache for an image folder.")
flags.DEFINE_string("output_dir", "runs/user", "Where the .npz, .keras and .json go.")
flags.DEFINE_string("name", None, "File stem; default <architecture>_<alpha>.")
flags.DEFINE_enum("architecture", "MobileNetV2", ["MobileNetV2", "ResNet50"], "keras.applications network.")
flags.DEFINE_float("alpha", 0.35, "MobileNetV2 width multiplier.")
flags.DEFINE_float("validation_fraction", 0.1, "Share of the training images held out as x_val.")
flags.DEFINE_integer("epochs", 20, "Training epochs.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_float("learning_rate", 3e-3, "Peak learning rate (AdamW, cosine decay).")
flags.DEFINE_integer("seed", 0, "Split and initialisation seed.")
flags.DEFINE_float("bn_momentum", 0.9, "Momentum of every batch norm's moving statistics.")


def _user_data(path: str) -> dict:
    """The raw pixels, split once by the package's own stratified split (seeded), as uint8."""
    config = data.DataConfig(name=FLAGS.dataset, validation_fraction=FLAGS.validation_fraction, seed=FLAGS.seed,
                             cache_dir=FLAGS.data_cache_dir, normalise="none")
    splits = data.load(config)
    arrays = {"x": splits.x_train, "y": splits.y_train, "x_val": splits.x_val, "y_val": splits.y_val,
              "x_test": splits.x_test, "y_test": splits.y_test}
    arrays = {key: np.clip(np.rint(value), 0, 255).astype(np.uint8) if key.startswith("x") else value
              for key, value in arrays.items()}
    np.savez(path, class_names=np.array(splits.info.class_names), **arrays)
    return arrays


def _model(input_shape, num_classes: int) -> keras.Model:
    inputs = keras.Input(input_shape)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="to_unit_range")(inputs)
    options = {"alpha": FLAGS.alpha} if FLAGS.architecture == "MobileNetV2" else {}
    network = getattr(keras.applications, FLAGS.architecture)(weights=None, input_shape=input_shape,
                                                              classes=num_classes, **options)
    # What a careful user does for a short training from scratch: keras.applications' batch norms keep
    # moving statistics with momentum 0.999 (MobileNetV2) or 0.99, which have not settled after a few
    # thousand steps (measured here: validation accuracy stayed at 10.0 % for 5 epochs while training
    # accuracy rose to 39 %). 0.9 settles within tens of steps.
    for layer in network.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = FLAGS.bn_momentum
    return keras.Model(inputs, network(x), name=f"user_{FLAGS.architecture.lower()}")


def _augmented(x: np.ndarray, y: np.ndarray) -> tf.data.Dataset:
    """Random crop after 4-pixel padding (edge values) and horizontal flip, done outside the model."""
    def augment(image, label):
        image = tf.image.random_flip_left_right(image)
        image = tf.pad(image, [[4, 4], [4, 4], [0, 0]], mode="SYMMETRIC")
        return tf.image.random_crop(image, tf.shape(image) - [8, 8, 0]), label

    dataset = tf.data.Dataset.from_tensor_slices((x.astype(np.float32), y)).shuffle(len(x), seed=FLAGS.seed)
    return dataset.map(augment, num_parallel_calls=tf.data.AUTOTUNE).batch(FLAGS.batch_size).prefetch(2)


def main(argv):
    del argv
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    name = FLAGS.name or f"{FLAGS.architecture.lower()}_{FLAGS.alpha:g}"
    npz_path = os.path.join(FLAGS.output_dir, f"{name}.npz")
    arrays = _user_data(npz_path)
    keras.utils.set_random_seed(FLAGS.seed)
    model = _model(arrays["x"].shape[1:], int(arrays["y"].max()) + 1)
    steps = FLAGS.epochs * int(np.ceil(len(arrays["x"]) / FLAGS.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(FLAGS.learning_rate, steps)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.05),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(_augmented(arrays["x"], arrays["y"]), epochs=FLAGS.epochs, verbose=2,
              validation_data=(arrays["x_val"].astype(np.float32), arrays["y_val"]))
    seconds = time.perf_counter() - start
    model_path = os.path.join(FLAGS.output_dir, f"{name}.keras")
    model.save(model_path)
    report = {"architecture": FLAGS.architecture, "alpha": FLAGS.alpha, "params": model.count_params(),
              "epochs": FLAGS.epochs, "train_seconds": seconds, "data": npz_path, "model": model_path,
              "sizes": {key: len(arrays[key]) for key in ("x", "x_val", "x_test")}}
    for split in ("val", "test"):
        result = model.evaluate(arrays[f"x_{split}"].astype(np.float32), arrays[f"y_{split}"], verbose=0,
                                return_dict=True)
        report[f"keras_{split}_accuracy"] = float(result["accuracy"])
    with open(os.path.join(FLAGS.output_dir, f"{name}.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2, sort_keys=True)
    print(json.dumps(report, sort_keys=True))


if __name__ == "__main__":
    app.run(main)
