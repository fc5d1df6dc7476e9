"""Precision policy by device.

Measured on the 2-core CPU this package is developed on: ``mixed_float16`` trains
children about 6x slower than float32 and ``mixed_bfloat16`` gains nothing, while
on a GPU ``mixed_float16`` is the standard speed-up. So ``auto`` means
``mixed_float16`` when TensorFlow sees a GPU and ``float32`` otherwise. Models
built by `keras_builder` keep their outputs in float32 either way, and Keras'
`LossScaleOptimizer` is applied automatically by `Model.compile` under
``mixed_float16``.
"""

import contextlib
from typing import Optional, Sequence

from absl import logging
import keras
import tensorflow as tf

POLICIES = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def resolve(policy: str = "auto", gpus: Optional[Sequence] = None) -> str:
    """The concrete Keras dtype policy name for `policy` ('auto' looks at the devices).

    Args:
      policy: one of POLICIES.
      gpus: the visible GPUs; defaults to `tf.config.list_physical_devices("GPU")`.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown precision policy {policy!r}; expected one of {', '.join(POLICIES)}")
    if policy != "auto":
        return policy
    if gpus is None:
        gpus = tf.config.list_physical_devices("GPU")
    return "mixed_float16" if gpus else "float32"


@contextlib.contextmanager
def policy_scope(name: str):
    """Sets the global Keras dtype policy `name` (a concrete one) for the block, then restores it."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def apply(policy: str = "auto") -> str:
    """Sets the global Keras dtype policy and returns the name it set."""
    name = resolve(policy)
    keras.mixed_precision.set_global_policy(name)
    logging.info("precision policy: %s (asked for %s)", name, policy)
    return name
