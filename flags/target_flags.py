"""What the user wants from a compression, shared by every method (latent search and baselines):
the target ratio, the largest accuracy drop, and how finalists are trained and how many."""

from absl import flags

from acompress import finalists
from acompress.flags import training_flags

DEFAULT_NUM_FINALISTS = 5
DEFAULT_MAX_ACCURACY_DROP = 0.01


def define_flags() -> None:
    if "target_ratio" in flags.FLAGS:
        return
    flags.DEFINE_float("target_ratio", None, "Compress at least this much (teacher parameters / chosen "
                       "parameters). Unset: no floor; the chosen network is the smallest that keeps "
                       "--max_accuracy_drop.", lower_bound=1.0)
    flags.DEFINE_float("max_accuracy_drop", DEFAULT_MAX_ACCURACY_DROP, "Largest accuracy the chosen network may "
                       "lose against the teacher, as a fraction (0.01 = one point), judged on the validation "
                       "split; the test split is only reported. If no finalist keeps it, the most accurate "
                       "one is chosen and the report says the target was missed.", lower_bound=0.0,
                       upper_bound=0.99)
    flags.DEFINE_integer("num_finalists", DEFAULT_NUM_FINALISTS, "Networks trained for the full budget before "
                         "one is chosen.", lower_bound=1)
    training_flags.define_flags(prefix="finalist_", epochs=finalists.FinalistConfig().train.epochs)
    flags.DEFINE_enum("finalist_init", finalists.inherited().init, ["scratch", "inherit"], "Where "
                      "finalists start (every method's: compression and baselines alike): scratch (random) or "
                      "inherit (the teacher's weights, BN recalibrated, then --finalist_epochs of fine-tuning; "
                      "see acompress.inheritance).")
