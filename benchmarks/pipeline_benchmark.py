"""Training throughput: the tf.data pipelines of `acompress.data` vs. numpy arrays fed to `fit`.

One run, one model architecture, one data set (digits by default): every variant
trains its own copy of the same small CNN from the same initial weights. After
an untimed warm-up epoch (tracing), the variants are timed round-robin, so drift
in the machine's speed hits them alike; the median of the repeats is reported.

Prints one JSON line per variant and one per ratio (pipeline / numpy), e.g.

  PYTHONPATH=. python benchmarks/pipeline_benchmark.py     (from a checkout; no PYTHONPATH once
  PYTHONPATH=. python benchmarks/pipeline_benchmark.py --resize=32,32 --epochs=2   pip-installed)

Variants:
  numpy_fit        model.fit(x, y, batch_size, shuffle=True) on the same arrays.
  tfdata           data.make_dataset(training=True): shuffle, batch, prefetch.
  tfdata_cache     the same with cache().
  tfdata_augment   the same with random-crop augmentation.
  pipeline_only    iterating `tfdata` without a model: the pipeline's own ceiling.
"""

import json
import statistics
import time

from absl import app
from absl import flags
import keras
import tensorflow as tf

from acompress import data
from acompress.flags import data_flags

FLAGS = flags.FLAGS


def define_flags() -> None:
    data_flags.define_flags()
    if "seed" not in FLAGS:
        flags.DEFINE_integer("seed", 0, "Seed for the split, shuffling and the model's weights.")
    flags.DEFINE_integer("epochs", 10, "Timed epochs per variant and repeat.", lower_bound=1)
    flags.DEFINE_integer("repeats", 5, "Timed repeats per variant (the median is reported).", lower_bound=1)


def small_cnn(input_shape, num_classes: int, seed: int) -> keras.Model:
    """conv16-conv32-GAP-dense: the size of a child network on digits."""
    init = lambda offset: keras.initializers.GlorotUniform(seed=seed + offset)  # noqa: E731
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", kernel_initializer=init(0))(inputs)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", kernel_initializer=init(1))(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", kernel_initializer=init(2))(x)
    return keras.Model(inputs, outputs)


def compiled_copy(weights, input_shape, num_classes: int, seed: int) -> keras.Model:
    model = small_cnn(input_shape, num_classes, seed)
    model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def fit_runners(splits: data.Splits, config: data.DataConfig):
    """{variant: callable(epochs) -> None}, each with its own model from the same weights."""
    info = splits.info
    weights = small_cnn(info.input_shape, info.num_classes, config.seed).get_weights()
    x, y = splits.x_train, splits.y_train
    pipelines = {
        "tfdata": data.make_dataset(x, y, batch_size=config.batch_size, training=True, seed=config.seed),
        "tfdata_cache": data.make_dataset(x, y, batch_size=config.batch_size, training=True,
                                          seed=config.seed, cache=True),
        "tfdata_augment": data.make_dataset(x, y, batch_size=config.batch_size, training=True,
                                            seed=config.seed, augment=data.AUGMENT_CROP),
    }
    runners = {}
    model = compiled_copy(weights, info.input_shape, info.num_classes, config.seed)
    runners["numpy_fit"] = lambda n, m=model: m.fit(x, y, batch_size=config.batch_size, epochs=n,
                                                     shuffle=True, verbose=0)
    for name, dataset in pipelines.items():
        model = compiled_copy(weights, info.input_shape, info.num_classes, config.seed)
        runners[name] = lambda n, m=model, d=dataset: m.fit(d, epochs=n, verbose=0)
    runners["pipeline_only"] = lambda n, d=pipelines["tfdata"]: [None for _ in d.repeat(n)]
    return runners


def measure(runners, epochs: int, repeats: int):
    """Seconds per repeat and variant for ``epochs`` epochs, after one untimed warm-up epoch each."""
    for run in runners.values():
        run(1)
    seconds = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run(epochs)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def main(argv) -> None:
    del argv
    keras.utils.set_random_seed(FLAGS.seed)
    config = data_flags.config_from_flags(FLAGS, seed=FLAGS.seed)
    splits = data.load(config)
    n = len(splits.y_train)
    seconds = measure(fit_runners(splits, config), FLAGS.epochs, FLAGS.repeats)
    common = {"benchmark": "pipeline", "dataset": splits.info.name, "input_shape": list(splits.info.input_shape),
              "train_examples": n, "batch_size": config.batch_size, "epochs": FLAGS.epochs,
              "repeats": FLAGS.repeats, "devices": [d.device_type for d in tf.config.list_logical_devices()]}
    rates = {name: FLAGS.epochs * n / statistics.median(values) for name, values in seconds.items()}
    for name, values in seconds.items():
        print(json.dumps({**common, "variant": name, "seconds_median": round(statistics.median(values), 4),
                          "seconds_min_max": [round(min(values), 4), round(max(values), 4)],
                          "examples_per_sec": round(rates[name], 1)}, sort_keys=True))
    for name in ("tfdata", "tfdata_cache", "tfdata_augment"):
        print(json.dumps({"benchmark": "pipeline", "ratio": f"{name}/numpy_fit",
                          "value": round(rates[name] / rates["numpy_fit"], 3)}, sort_keys=True))


if __name__ == "__main__":
    define_flags()
    app.run(main)
