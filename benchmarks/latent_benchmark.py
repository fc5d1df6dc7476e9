"""The latent loop: 1,000 steps for 64 codes, graph vs. XLA, and the embedding's epoch time by corpus size.

  PYTHONPATH=. python benchmarks/latent_benchmark.py                      # ~3 min on 2 cores
  PYTHONPATH=. python benchmarks/latent_benchmark.py --sizes=1000 --steps=100   # smoke test

Uses the default `EmbeddingConfig` on the digits teacher's token shape (18 x 9) with
untrained weights (timing does not depend on them). Records for the epoch-time part
are real samples of the digits corpus sampler (tokens and exact parameter counts)
with random accuracy labels, fed from memory through `embedding_training.batched`
(the same pipeline as training; after the first epoch it is served from its cache).
Prints one JSON line per measurement (sorted keys) and the ratios.
"""

import json
import time

from absl import app
from absl import flags
import keras
import numpy as np

from acompress import embedding
from acompress import embedding_training
from acompress import latent_search
from acompress import sampler
from acompress import search_space
from acompress import tokens
from acompress import zoo

FLAGS = flags.FLAGS
flags.DEFINE_integer("codes", 64, "Latent codes optimised at once.")
flags.DEFINE_integer("steps", 1000, "Steps of the loop.")
flags.DEFINE_integer("repeats", 3, "Timed repeats of the loop (after one untimed trace).")
flags.DEFINE_list("sizes", ["1000", "10000", "100000"], "Corpus sizes for the epoch time.")
flags.DEFINE_integer("seed", 0, "Seed.")


def emit(record):
    print(json.dumps(record, sort_keys=True), flush=True)


def make_embedding(tokenizer, stats):
    keras.utils.set_random_seed(FLAGS.seed)
    config = embedding.EmbeddingConfig()
    model = embedding.build_model(tokenizer, config, stats)
    return embedding.Embedding(model, tokenizer, input_shape=(8, 8, 1), num_classes=10, targets=stats, config=config)


def time_loop(emb, jit):
    optimiser = latent_search.make_optimiser(emb, jit_compile=jit)
    rng = np.random.default_rng(FLAGS.seed)
    z0 = rng.uniform(-0.5, 0.5, (FLAGS.codes,) + emb.latent_shape).astype(np.float32)
    lambdas = np.linspace(0.05, 1.5, FLAGS.codes).astype(np.float32)
    config = latent_search.SearchConfig(steps=FLAGS.steps)
    start = time.perf_counter()
    latent_search.run_loop(emb, z0, lambdas, config, optimiser)
    first = time.perf_counter() - start
    times = []
    for _ in range(FLAGS.repeats):
        start = time.perf_counter()
        out = latent_search.run_loop(emb, z0, lambdas, config, optimiser)
        times.append(time.perf_counter() - start)
    record = {"measure": "latent_loop", "variant": "xla" if jit else "graph", "codes": FLAGS.codes,
              "steps": FLAGS.steps, "first_call_seconds": first, "seconds": float(np.median(times)),
              "all_seconds": times, "objective_drop": float(np.mean(out["objective"][0] - out["objective"][-1]))}
    emit(record)
    return record


def records_of(children, tokenizer, rng):
    n = len(children)
    return embedding_training.Records(
        tokens=tokenizer.encode_batch(children).astype(np.int32),
        val_accuracy=rng.uniform(0.5, 1.0, n).astype(np.float32),
        params=np.asarray([c.count_params((8, 8, 1), 10) for c in children], np.int64),
        child_index=np.arange(n, dtype=np.int64), replicate=np.zeros(n, np.int64),
        spec_hash=np.asarray([c.hash.encode() for c in children], object))


def time_epochs(emb, records):
    config = embedding_training.EmbeddingTrainConfig(epochs=2, min_steps_per_epoch=1)
    steps = embedding_training.steps_per_epoch(len(records), config)
    embedding_training.compile_model(emb.model, emb.tokenizer, emb.targets, config, steps)
    dataset = embedding_training.batched(records.as_dataset(), emb.tokenizer.fields, config.batch_size,
                                         shuffle_seed=FLAGS.seed, size=len(records)).repeat()
    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    emb.model.fit(dataset, epochs=2, steps_per_epoch=steps, verbose=0, callbacks=[Timer()])
    record = {"measure": "embedding_epoch", "records": len(records), "steps": steps,
              "first_epoch_seconds": times[0], "epoch_seconds": times[1],
              "ms_per_step": 1000 * times[1] / steps, "records_per_second": len(records) / times[1]}
    emit(record)
    return record


def main(argv):
    del argv
    teacher = zoo.get("digits_cnn", (8, 8, 1), 10)
    space = search_space.SearchSpace(max_layers=len(teacher))
    tokenizer = tokens.Tokenizer(space)
    stats = embedding.TargetStats(0.9, 0.1, 10.0, 1.5)
    emb = make_embedding(tokenizer, stats)
    graph = time_loop(emb, jit=False)
    xla = time_loop(emb, jit=True)
    emit({"measure": "latent_loop_ratio", "graph_over_xla": graph["seconds"] / xla["seconds"]})

    sizes = sorted(int(s) for s in FLAGS.sizes)
    start = time.perf_counter()
    children = sampler.sample_children(teacher, input_shape=(8, 8, 1), num_classes=10, count=max(sizes),
                                       seed=FLAGS.seed, space=space)
    emit({"measure": "sampling", "children": len(children), "seconds": time.perf_counter() - start})
    rng = np.random.default_rng(FLAGS.seed)
    everything = records_of(children, tokenizer, rng)
    results = [time_epochs(make_embedding(tokenizer, stats), everything.select(slice(0, size))) for size in sizes]
    base = results[0]
    for result in results[1:]:
        emit({"measure": "epoch_growth", "records": result["records"], "vs_records": base["records"],
              "size_ratio": result["records"] / base["records"],
              "time_ratio": result["epoch_seconds"] / base["epoch_seconds"]})


if __name__ == "__main__":
    app.run(main)
