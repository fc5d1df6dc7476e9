"""The distillation loss against numbers computed by hand: T^2, alpha, the direction of the KL."""

import math

import numpy as np
import pytest
import tensorflow as tf

from acompress import distillation
from acompress import finalists


def softmax(logits, temperature):
    z = np.exp(np.asarray(logits, np.float64) / temperature)
    return z / z.sum(axis=-1, keepdims=True)


TEACHER = [[2.0, 0.0, -1.0]]
STUDENT = [[0.5, 1.0, 0.0]]


def test_kl_runs_from_the_teacher_to_the_student():
    t, s = softmax(TEACHER, 2.0)[0], softmax(STUDENT, 2.0)[0]
    by_hand = float(np.sum(t * np.log(t / s)))          # KL(p_teacher || p_student)
    reverse = float(np.sum(s * np.log(s / t)))          # KL(p_student || p_teacher): a different number
    assert abs(by_hand - reverse) > 1e-3
    targets = distillation.soft_targets(tf.constant(TEACHER), 2.0)
    np.testing.assert_allclose(targets.numpy()[0], t, rtol=1e-6)
    kl = distillation.kl_per_example(targets, tf.constant(STUDENT), 2.0).numpy()
    assert kl.shape == (1,) and kl[0] == pytest.approx(by_hand, rel=1e-5)


def test_combine_weighs_the_soft_term_by_t_squared():
    assert float(distillation.combine(tf.constant(1.5), tf.constant(0.2), 0.25, 4.0)) == pytest.approx(
        0.25 * 1.5 + 0.75 * 16 * 0.2)


def test_the_finalists_distiller_computes_the_loss_by_hand():
    import keras
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    teacher = keras.Model(inputs, keras.layers.Dense(3, name="t")(inputs))
    student = keras.Model(inputs, keras.layers.Dense(3, name="s")(inputs))
    distiller = finalists._Distiller(student, teacher, alpha=0.3, temperature=3.0)
    x = np.random.RandomState(0).normal(size=(4, 3)).astype("float32")
    y = np.array([0, 2, 1, 2])
    student_logits = student(x).numpy()
    teacher_logits = teacher(x).numpy()
    loss = float(distiller.compute_loss(tf.constant(x), tf.constant(y), tf.constant(student_logits), training=True))
    probabilities = softmax(student_logits, 1.0)
    hard = -np.mean(np.log(probabilities[np.arange(4), y]))
    t, s = softmax(teacher_logits, 3.0), softmax(student_logits, 3.0)
    soft = np.mean(np.sum(t * np.log(t / s), axis=-1))
    assert loss == pytest.approx(0.3 * hard + 0.7 * 9.0 * soft, rel=1e-4)
    # Evaluation reports the hard loss alone.
    assert float(distiller.compute_loss(tf.constant(x), tf.constant(y), tf.constant(student_logits),
                                        training=False)) == pytest.approx(hard, rel=1e-4)
    assert math.isfinite(loss)
