"""TensorFlow's CPU thread pools.

By default TensorFlow spreads each op over every core (intra-op) and runs few ops at
once. Packed child training has the opposite shape: many small, independent ops
(one tower per child). Measured on 2 cores with 16 digits children, 4-epoch proxy:
intra-op 1 / inter-op 2 trained 42 children/min against 36 with the defaults (and
made packing 1.23x faster than one child at a time, against 1.10x). It must be set
before TensorFlow runs its first op.
"""

from absl import logging
import tensorflow as tf


def configure(intra_op: int = 0, inter_op: int = 0) -> None:
    """Sets the thread pools; 0 keeps TensorFlow's default for that pool.

    Raises:
      ValueError: a negative count, or TensorFlow already started its pools with other sizes.
    """
    if intra_op < 0 or inter_op < 0:
        raise ValueError(f"thread counts must be >= 0, got intra_op={intra_op}, inter_op={inter_op}")
    try:
        if intra_op:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        if inter_op:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError as error:
        raise ValueError(f"cannot set TensorFlow's thread pools after it has started: {error}") from None
    logging.info("CPU threads: intra-op %s, inter-op %s", intra_op or "default", inter_op or "default")
