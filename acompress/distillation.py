"""Knowledge distillation (Hinton et al., 2015): the one loss children and finalists share.

    loss = alpha * CE(y, student) + (1 - alpha) * T^2 * KL(p_teacher || p_student)

with ``p = softmax(logits / T)``. The KL runs from the teacher's (soft target) distribution to
the student's, KL(p_t || p_s) = sum_k p_t[k] * log(p_t[k] / p_s[k]); T^2 keeps the soft term's
gradients on the scale of the hard one's as T grows. No gradient flows into the teacher.
"""

import keras
import tensorflow as tf


def soft_targets(teacher_logits: tf.Tensor, temperature: float) -> tf.Tensor:
    """The teacher's softened distribution, without gradients."""
    return tf.stop_gradient(tf.nn.softmax(tf.cast(teacher_logits, tf.float32) / temperature))


def kl_per_example(targets: tf.Tensor, student_logits: tf.Tensor, temperature: float) -> tf.Tensor:
    """KL(targets || softmax(student_logits / T)) of each example, shape [batch]."""
    return keras.losses.kl_divergence(targets, tf.nn.softmax(tf.cast(student_logits, tf.float32) / temperature))


def combine(hard: tf.Tensor, soft: tf.Tensor, alpha: float, temperature: float) -> tf.Tensor:
    """alpha * hard + (1 - alpha) * T^2 * soft (both already reduced the same way)."""
    return alpha * hard + (1.0 - alpha) * temperature ** 2 * soft
