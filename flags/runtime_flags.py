"""Flags every binary shares: seed, output directory, precision."""

from absl import flags

from acompress import precision
from acompress import rundir


def define_flags() -> None:
    if "seed" in flags.FLAGS:
        return
    flags.DEFINE_integer("seed", 0, "The one seed: data split, sampling, initialisation and "
                         "shuffling all derive from it.", lower_bound=0)
    flags.DEFINE_string("output_dir", None, "Directory for this run's outputs (any tf.io.gfile path). "
                        "It receives config.json, the resolved configuration.")
    flags.DEFINE_bool("overwrite", False, "Replace an output directory that already holds results "
                      "(without it, such a directory is an error, or is resumed where supported).")
    flags.DEFINE_enum("precision", "auto", precision.POLICIES,
                      "Keras dtype policy. auto: mixed_float16 on a GPU, float32 on CPU (where mixed "
                      "precision was measured ~6x slower).")
    flags.DEFINE_integer("intra_op_threads", 0, "Threads TensorFlow uses inside one op (0: its default, all "
                         "cores). 1 suits packed child training on a CPU (see acompress.cpu_threads).",
                         lower_bound=0)
    flags.DEFINE_integer("inter_op_threads", 0, "Ops TensorFlow runs at once (0: its default).", lower_bound=0)


def runtime_from_flags(flag_values) -> dict:
    """The runtime part of a run's stored config (not --overwrite: rerunning a killed
    --overwrite run without it must resume, not be refused)."""
    return {"seed": flag_values.seed, "output_dir": rundir.normalize(flag_values.output_dir),
            "precision": flag_values.precision,
            "intra_op_threads": flag_values.intra_op_threads, "inter_op_threads": flag_values.inter_op_threads}
