"""The embedding model: layers, save/reload equality, normalisation, masked decoding, repair; the records its
training reads from a corpus."""

import os

import keras
import numpy as np
import pytest

from acompress import archspec
from acompress import corpus
from acompress import embedding
from acompress import embedding_training
from acompress import sampler
from acompress import search_space
from acompress import tokens

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS_DIR = os.path.join(REPO_ROOT, "testdata", "digits_corpus")
SMALL = embedding.EmbeddingConfig(embed_dim=16, channels=32, conv_layers=2, latent_channels=4, head_units=32)


@pytest.fixture(scope="module")
def stored_corpus():
    return corpus.read_corpus(CORPUS_DIR).select(["ok"])


@pytest.fixture(scope="module")
def tokenizer(stored_corpus):
    return tokens.Tokenizer(search_space.SearchSpace.from_dict(stored_corpus.metadata["search_space"]["config"]))


@pytest.fixture(scope="module")
def stats(stored_corpus):
    return embedding.TargetStats.from_targets(stored_corpus.val_accuracy, stored_corpus.params)


@pytest.fixture(scope="module")
def untrained(tokenizer, stats):
    keras.utils.set_random_seed(0)
    model = embedding.build_model(tokenizer, SMALL, stats)
    return embedding.Embedding(model, tokenizer, input_shape=(8, 8, 1), num_classes=10, targets=stats, config=SMALL)


def test_target_stats_round_trip_and_dict(stored_corpus, stats):
    accuracy, log_params = stored_corpus.val_accuracy, np.log(stored_corpus.params)
    normal_accuracy, normal_size = stats.normalise(accuracy, log_params)
    assert np.mean(normal_accuracy) == pytest.approx(0.0, abs=1e-6)
    assert np.std(normal_size) == pytest.approx(1.0, abs=1e-6)
    back = stats.denormalise(normal_accuracy, normal_size)
    np.testing.assert_allclose(back[0], accuracy, rtol=1e-6)
    np.testing.assert_allclose(back[1], log_params, rtol=1e-6)
    assert embedding.TargetStats.from_dict(stats.to_dict()) == stats


def test_target_stats_reject_empty_and_floor_std():
    with pytest.raises(ValueError):
        embedding.TargetStats.from_targets([], [])
    flat = embedding.TargetStats.from_targets([0.9, 0.9], [100, 100])
    assert flat.accuracy_std == pytest.approx(1e-3) and flat.log_params_std == pytest.approx(1e-3)


def test_config_validation_and_dict():
    with pytest.raises(ValueError, match="latent_channels"):
        embedding.EmbeddingConfig(latent_channels=0)
    with pytest.raises(ValueError, match="unknown"):
        embedding.EmbeddingConfig.from_dict({"nope": 1})
    assert embedding.EmbeddingConfig.from_dict(SMALL.to_dict()) == SMALL


def test_model_shapes_and_float32_outputs(untrained, tokenizer, stored_corpus):
    out = untrained.model(stored_corpus.tokens[:3])
    for field, size in zip(tokenizer.fields, tokenizer.vocab_sizes):
        assert tuple(out[f"logits_{field}"].shape) == (3, tokenizer.shape[0], size)
    assert tuple(out["accuracy"].shape) == (3, 1) and tuple(out["log_params"].shape) == (3, 1)
    assert all(keras.backend.standardize_dtype(value.dtype) == "float32" for value in out.values())
    z = untrained.encode(stored_corpus.tokens[:3])
    assert z.shape == (3,) + untrained.latent_shape
    assert np.all(np.abs(z) < 1.0)


def test_heads_start_at_the_target_means(untrained, stats, stored_corpus):
    # TargetScale carries the statistics: an untrained head predicts near the mean, in real units.
    predicted = untrained.predict(untrained.encode(stored_corpus.tokens))
    assert abs(np.mean(predicted["accuracy"]) - stats.accuracy_mean) < 3 * stats.accuracy_std
    assert abs(np.mean(predicted["log_params"]) - stats.log_params_mean) < 3 * stats.log_params_std


def test_the_search_sees_accuracy_through_the_size_feature_but_training_does_not(tokenizer, stats, stored_corpus):
    import tensorflow as tf
    keras.utils.set_random_seed(3)
    predictor = embedding.build_model(tokenizer, SMALL, stats).get_layer("predictor")
    # Only the size path left in the accuracy head: accuracy = 2 * (normalised size) in accuracy units.
    for index in range(2):
        layer = predictor.get_layer(f"accuracy_dense{index}")
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    out = predictor.get_layer("accuracy_out")
    kernel, bias = out.get_weights()
    kernel[:] = 0.0
    kernel[-1] = 2.0  # the size feature is the last of the concatenated features
    out.set_weights([kernel, np.zeros_like(bias)])
    z = tf.constant(np.random.default_rng(0).uniform(-0.5, 0.5, (3,) + predictor.input_shape[1:]).astype("float32"))
    gradients = {}
    for training in (False, True):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(z)
            outputs = predictor(z, training=training)
            accuracy, log_params = tf.reduce_sum(outputs["accuracy"]), tf.reduce_sum(outputs["log_params"])
        gradients[training] = tape.gradient(accuracy, z), tape.gradient(log_params, z)
    through_size, size = gradients[False]
    # d accuracy / dz = 2 * accuracy_std / log_params_std * d log_params / dz: the search's gradient sees it ...
    expected = 2.0 * stats.accuracy_std / stats.log_params_std * size.numpy()
    np.testing.assert_allclose(through_size.numpy(), expected, rtol=1e-4, atol=1e-7)
    assert np.abs(expected).max() > 1e-4
    # ... while training, the accuracy loss leaves the size head alone (its own loss trains it).
    stopped = gradients[True][0]
    assert stopped is None or np.abs(stopped.numpy()).max() == 0.0


def test_save_and_reload_give_identical_outputs(untrained, stored_corpus, tmp_path):
    untrained.save(str(tmp_path))
    loaded = embedding.Embedding.load(str(tmp_path))
    assert loaded.tokenizer == untrained.tokenizer
    assert loaded.targets == untrained.targets and loaded.config == untrained.config
    assert loaded.input_shape == (8, 8, 1) and loaded.num_classes == 10
    x = stored_corpus.tokens[:8]
    z = untrained.encode(x)
    np.testing.assert_array_equal(loaded.encode(x), z)
    for a, b in zip(loaded.logits(z), untrained.logits(z)):
        np.testing.assert_array_equal(a, b)
    for key, value in untrained.predict(z).items():
        np.testing.assert_array_equal(loaded.predict(z)[key], value)
    full_a, full_b = untrained.model(x), loaded.model(x)
    for key in full_a:
        np.testing.assert_array_equal(np.asarray(full_a[key]), np.asarray(full_b[key]))


def test_load_missing_directory_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="embedding.json"):
        embedding.Embedding.load(str(tmp_path))


def test_masked_decoding_is_valid_from_any_latent_point(untrained):
    # Untrained weights and points all over the box: the raw argmax is mostly invalid, masked never.
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, (200,) + untrained.latent_shape).astype(np.float32)
    points[:20] *= 50.0  # far outside the box too
    masked = untrained.decode(points)
    problems = [embedding.check_tokens(untrained.tokenizer, t, untrained.input_shape) for t in masked]
    assert problems == [None] * len(points)
    for spec in untrained.tokenizer.decode_batch(masked):
        assert untrained.tokenizer.space.contains(spec)
        assert spec.count_params((8, 8, 1), 10) > 0
    raw = untrained.decode_raw(points)
    raw_valid = [embedding.check_tokens(untrained.tokenizer, t, untrained.input_shape) is None for t in raw]
    assert np.mean(raw_valid) < 1.0  # the mask is doing work


def test_check_tokens_and_repair(tokenizer, stored_corpus):
    good = stored_corpus.tokens[0]
    assert embedding.check_tokens(tokenizer, good, (8, 8, 1)) is None
    bad = good.copy()
    bad[0, 0] = tokens.PAD  # a spec cannot start with padding
    assert embedding.check_tokens(tokenizer, bad, (8, 8, 1)) is not None
    fallback = stored_corpus.tokens[:5]
    repaired = embedding.repair(tokenizer, bad, (8, 8, 1), fallback)
    np.testing.assert_array_equal(repaired, good)  # the nearest valid one: a single token differs
    np.testing.assert_array_equal(embedding.repair(tokenizer, good, (8, 8, 1), fallback[1:]), good)
    with pytest.raises(ValueError):
        embedding.repair(tokenizer, bad, (8, 8, 1), bad[None])


def test_too_small_input_is_a_shape_problem(tokenizer, stored_corpus):
    # The first child pools with a 2x2 valid window: a 1x1 input cannot carry it.
    assert embedding.check_tokens(tokenizer, stored_corpus.tokens[0], (1, 1, 1)) is not None


# -- what embedding_training reads from the corpus -------------------------------------------------------

def test_unlabeled_records_continue_the_corpus_sampler():
    stored = corpus.read_corpus(CORPUS_DIR)
    raw, info = stored.metadata, stored.metadata["dataset"]["info"]
    assert len(embedding_training.unlabeled_records(stored, 0)) == 0
    extra = embedding_training.unlabeled_records(stored, 4)
    expected = sampler.sample_children(
        archspec.ArchSpec.from_dict(raw["teacher"]["spec"]), input_shape=info["input_shape"],
        num_classes=info["num_classes"], count=raw["num_children"] + 4, seed=raw["seed"],
        space=search_space.SearchSpace.from_dict(raw["search_space"]["config"]),
        config=sampler.SamplerConfig.from_dict(raw["sampler"]))[raw["num_children"]:]
    assert [h.decode() for h in extra.spec_hash] == [child.hash for child in expected]
    assert extra.child_index.tolist() == [48, 49, 50, 51] and extra.tokens.shape == (4, 18, 9)
    assert np.isnan(extra.val_accuracy).all()
    assert extra.params.tolist() == [child.count_params(info["input_shape"], info["num_classes"]) for child in expected]
    fewer = embedding_training.unlabeled_records(stored, 4, exclude=[extra.spec_hash[0]])
    assert expected[0].hash not in {h.decode() for h in fewer.spec_hash} and len(fewer) < 4


def test_training_records_split_the_ok_records_by_hash_and_add_unlabelled_ones(tokenizer):
    stored = corpus.read_corpus(CORPUS_DIR)
    config = embedding_training.EmbeddingTrainConfig(unlabeled_architectures=3)
    records = embedding_training._training_records(stored, tokenizer, config)  # pylint: disable=protected-access
    assert len(records.train) + len(records.heldout) == len(stored.ok()) and len(records.heldout) >= 1
    assert not set(records.train.spec_hash.tolist()) & set(records.heldout.spec_hash.tolist())
    assert len(records.extra) == 3 and records.train_size == len(records.train) + 3
    assert records.targets == embedding.TargetStats.from_targets(records.train.val_accuracy, records.train.params)
    nothing_held_out = embedding_training.EmbeddingTrainConfig(heldout_fraction=1e-4, unlabeled_architectures=0)
    with pytest.raises(ValueError, match="an embedding needs at least 2 and 1"):
        embedding_training._training_records(stored, tokenizer, nothing_held_out)  # pylint: disable=protected-access


@pytest.mark.slow  # ~1.5 min quiet, ~3 min under load
def test_trained_embedding_meets_its_quality_floors(tmp_path):
    """The default model, trained briefly on testdata/'s corpus, reconstructs and regresses held-out
    architectures. The floors sit well below what main measured (exact 0.6, log-params R^2 0.99, accuracy
    tau 0.82 on the 10 held-out architectures after 40 epochs), so only a real regression fails."""
    trained, metrics = embedding_training.train(
        corpus.read_corpus(CORPUS_DIR), str(tmp_path), embedding.EmbeddingConfig(),
        embedding_training.EmbeddingTrainConfig(epochs=40, unlabeled_architectures=300, patience=40), seed=0)
    held = metrics["heldout"]
    assert held["reconstruction"]["count"] >= 8
    assert held["reconstruction"]["exact"] >= 0.3
    assert min(held["reconstruction"]["per_field"].values()) >= 0.9
    assert held["params_head"]["r2_log"] >= 0.9
    assert held["accuracy_head"]["kendall_tau"] >= 0.4
    assert trained.tokenizer.shape == corpus.read_corpus(CORPUS_DIR).meta.tokens_shape
