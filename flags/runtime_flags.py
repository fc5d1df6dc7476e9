"""Flags every binary shares: seed, output directory, precision, threads, distribution strategy."""

from absl import flags

from acompress import distribution
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
    flags.DEFINE_enum("strategy", "default", distribution.STRATEGIES,
                      "How every trainer (teacher, children, finalists, embedding) spreads its batches. default: one "
                      "device. mirrored: all local GPUs (tf.distribute.MirroredStrategy). multi_worker: every "
                      "process of a TF_CONFIG cluster trains the same model together "
                      "(tf.distribute.MultiWorkerMirroredStrategy); the chief writes --output_dir, other workers "
                      "<output_dir>.workers/<task>_<index>. --batch_size stays the global batch.")


def strategy_from_flags(flag_values):
    """(strategy or None, the output directory this process writes): call it first in main, after
    `cpu_threads.configure` and before TensorFlow runs anything."""
    strategy = distribution.make_strategy(flag_values.strategy)
    output_dir = rundir.normalize(flag_values.output_dir)
    return strategy, distribution.output_dir_for(output_dir, strategy) if output_dir else output_dir


def runtime_from_flags(flag_values, strategy=None) -> dict:
    """The runtime part of a run's stored config (not --overwrite: rerunning a killed
    --overwrite run without it must resume, not be refused). `strategy`: what
    `strategy_from_flags` made (recorded with its replica count and task; not recorded for the
    default strategy, so run directories made before --strategy existed still resume)."""
    runtime = {"seed": flag_values.seed, "output_dir": rundir.normalize(flag_values.output_dir),
               "precision": flag_values.precision,
               "intra_op_threads": flag_values.intra_op_threads, "inter_op_threads": flag_values.inter_op_threads}
    if flag_values.strategy != "default":
        runtime["strategy"] = distribution.describe(strategy, flag_values.strategy)
    return runtime
