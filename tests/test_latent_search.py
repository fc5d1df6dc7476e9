"""The latent search loop: objective goes down, codes stay in the trust region, every candidate is valid."""

import dataclasses
import os

import keras
import numpy as np
import pytest

from acompress import archspec
from acompress import corpus
from acompress import embedding
from acompress import latent_search
from acompress import search_space
from acompress import tokens

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS_DIR = os.path.join(REPO_ROOT, "testdata", "digits_corpus")
SMALL = embedding.EmbeddingConfig(embed_dim=16, channels=32, conv_layers=2, latent_channels=4, head_units=16)
FAST = latent_search.SearchConfig(steps=60, learning_rate=0.05, lambdas=(0.1, 1.0), num_starts=3, trust_radius=0.3,
                                  snapshot_every=5)


@pytest.fixture(scope="module")
def stored_corpus():
    return corpus.read_corpus(CORPUS_DIR).select(["ok"])


@pytest.fixture(scope="module")
def emb(stored_corpus):
    tokenizer = tokens.Tokenizer(search_space.SearchSpace.from_dict(stored_corpus.metadata["search_space"]["config"]))
    stats = embedding.TargetStats.from_targets(stored_corpus.val_accuracy, stored_corpus.params)
    keras.utils.set_random_seed(1)
    model = embedding.build_model(tokenizer, SMALL, stats)
    return embedding.Embedding(model, tokenizer, input_shape=(8, 8, 1), num_classes=10, targets=stats, config=SMALL)


@pytest.fixture(scope="module")
def teacher(stored_corpus):
    return archspec.ArchSpec.from_dict(stored_corpus.metadata["teacher"]["spec"])


@pytest.fixture(scope="module")
def result(emb, teacher, stored_corpus):
    return latent_search.search(emb, teacher, FAST, corpus_tokens=stored_corpus.tokens,
                                corpus_params=stored_corpus.params, corpus_accuracy=stored_corpus.val_accuracy)


def test_config_validation():
    with pytest.raises(ValueError):
        latent_search.SearchConfig(steps=0)
    with pytest.raises(ValueError):
        latent_search.SearchConfig(lambdas=())
    with pytest.raises(ValueError):
        latent_search.SearchConfig(trust_radius=0)
    assert latent_search.SearchConfig(lambdas=[1, 2]).lambdas == (1.0, 2.0)


def test_loop_lowers_the_objective_and_respects_the_trust_region(emb):
    rng = np.random.default_rng(0)
    z0 = np.clip(rng.normal(0, 0.3, (6,) + emb.latent_shape), -0.9, 0.9).astype(np.float32)
    lambdas = np.array([0.0, 0.5, 1.0, 0.0, 0.5, 1.0], np.float32)
    config = latent_search.SearchConfig(steps=80, learning_rate=0.05, trust_radius=0.25, snapshot_every=10)
    out = latent_search.run_loop(emb, z0, lambdas, config)
    objective = out["objective"]
    assert objective.shape == (80, 6)
    assert np.all(objective[-1] < objective[0])
    rms = np.sqrt(np.mean(np.square(out["final"] - z0), axis=(1, 2)))
    assert np.all(rms <= 0.25 + 1e-5)
    assert np.all(np.abs(out["snapshots"]) <= 1.0)
    assert out["snapshots"].shape == (1 + 80 // 10, 6) + emb.latent_shape
    np.testing.assert_array_equal(out["snapshots"][0], z0)


def test_loop_is_traced_once_for_repeated_calls(emb):
    optimiser = latent_search.make_optimiser(emb)
    z0 = np.zeros((4,) + emb.latent_shape, np.float32)
    for steps in (10, 20):
        latent_search.run_loop(emb, z0, np.ones(4), latent_search.SearchConfig(steps=steps), optimiser)
    assert optimiser.experimental_get_tracing_count() == 1


def test_candidates_are_valid_new_and_exactly_counted(result, emb, stored_corpus):
    candidates = result.candidates
    assert candidates, "the search found nothing"
    known = {t.tobytes() for t in stored_corpus.tokens}
    hashes = [c.spec.hash for c in candidates]
    assert len(hashes) == len(set(hashes))
    for candidate in candidates:
        encoded = emb.tokenizer.encode(candidate.spec)
        assert embedding.check_tokens(emb.tokenizer, encoded, emb.input_shape) is None
        assert encoded.tobytes() not in known
        assert candidate.params == candidate.spec.count_params((8, 8, 1), 10)
        assert candidate.flops == candidate.spec.count_flops((8, 8, 1), 10)
        assert archspec.simplified(candidate.spec) is candidate.spec  # no repeated bn / act left
        assert 0 <= candidate.start < result.starts and candidate.lam in FAST.lambdas
    assert [c.params for c in candidates] == sorted(c.params for c in candidates)
    assert result.codes == result.starts * len(FAST.lambdas)
    assert result.max_radius <= FAST.trust_radius + 1e-5
    assert result.objective_last < result.objective_first


def test_pareto_front():
    params = [10, 20, 30, 15, 40]
    accuracy = [0.5, 0.7, 0.6, 0.4, 0.9]
    front = latent_search.pareto_front(params, accuracy)
    assert list(front) == [0, 1, 4]


def test_choose_starts_teacher_first_then_front(stored_corpus, emb, teacher):
    teacher_tokens = emb.tokenizer.encode(teacher)
    starts = latent_search.choose_starts(teacher_tokens, stored_corpus.tokens, stored_corpus.params,
                                         stored_corpus.val_accuracy, 4)
    np.testing.assert_array_equal(starts[0], teacher_tokens)
    assert 2 <= len(starts) <= 4
    front = set(latent_search.pareto_front(stored_corpus.params, stored_corpus.val_accuracy).tolist())
    rows = {stored_corpus.tokens[i].tobytes(): i for i in range(len(stored_corpus.tokens))}
    assert all(rows[s.tobytes()] in front for s in starts[1:])
    only_teacher = latent_search.choose_starts(teacher_tokens, stored_corpus.tokens[:0], np.zeros(0), np.zeros(0), 4)
    assert len(only_teacher) == 1


@pytest.mark.parametrize("skeleton", ["teacher", "widths"])
def test_teacher_skeleton_search_finds_only_aligned_children_of_the_teacher(emb, teacher, stored_corpus, result,
                                                                            skeleton):
    from acompress import inheritance
    from tests.test_tokens import assert_child_of
    config = dataclasses.replace(FAST, skeleton=skeleton)
    assert config.to_dict()["skeleton"] == skeleton and "skeleton" not in FAST.to_dict()  # old keys unchanged
    found = latent_search.search(emb, teacher, config, corpus_tokens=stored_corpus.tokens,
                                 corpus_params=stored_corpus.params, corpus_accuracy=stored_corpus.val_accuracy)
    assert found.candidates, "the skeleton search found nothing"
    teacher_params = teacher.count_params((8, 8, 1), 10)
    for candidate in found.candidates:
        assert_child_of(candidate.spec, teacher)
        assert None not in inheritance.align(teacher, candidate.spec)  # every layer inherits by alignment
        assert candidate.params < teacher_params
    kernels = lambda spec: [layer.kernel for layer in spec]
    changed = sum(kernels(candidate.spec) != kernels(teacher) for candidate in found.candidates)
    if skeleton == "widths":  # only the widths shrink
        assert changed == 0
    else:  # so the widths search's constraint binds: here the teacher search shrinks kernels
        assert changed > 0

    def is_child(spec):
        try:
            assert_child_of(spec, teacher)
        except AssertionError:
            return False
        return True

    assert not all(is_child(c.spec) for c in result.candidates)  # the free search does leave the skeleton
    with pytest.raises(ValueError, match="skeleton"):
        latent_search.SearchConfig(skeleton="student")
