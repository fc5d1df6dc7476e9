"""Flags every binary shares: seed, output directory, precision."""

from absl import flags

from acompress import precision


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


def runtime_from_flags(flag_values) -> dict:
    return {"seed": flag_values.seed, "output_dir": flag_values.output_dir,
            "overwrite": flag_values.overwrite, "precision": flag_values.precision}
