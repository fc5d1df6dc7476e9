"""Flags for the compression stage: the latent search, refinement rounds, finalists and targets.

The target and finalist flags (--target_ratio, --max_accuracy_drop, --num_finalists,
--finalist_*) are shared with the baselines (`target_flags`), so one flagfile drives both.
"""

from absl import flags

from acompress import compression
from acompress import finalists
from acompress import latent_search
from acompress.flags import target_flags
from acompress.flags import training_flags


def define_flags() -> None:
    if "search_steps" in flags.FLAGS:
        return
    target_flags.define_flags()
    search = latent_search.SearchConfig()
    defaults = compression.CompressConfig()
    flags.DEFINE_integer("search_steps", search.steps, "Gradient steps of the latent search per code.",
                         lower_bound=1)
    flags.DEFINE_float("search_learning_rate", search.learning_rate, "Adam step size in the latent box (-1, 1).",
                       lower_bound=0.0)
    flags.DEFINE_list("lambdas", [f"{v:g}" for v in search.lambdas], "Trade-off weights of predicted log "
                      "parameters against predicted accuracy (both normalised); every start runs with each.")
    flags.DEFINE_integer("num_starts", search.num_starts, "Codes started from: the teacher and corpus children "
                         "of its accuracy/size Pareto front.", lower_bound=1)
    flags.DEFINE_float("trust_radius", search.trust_radius, "Largest RMS distance of a code from its start.",
                       lower_bound=0.0)
    flags.DEFINE_integer("snapshot_every", search.snapshot_every, "Decode every code every this many steps.",
                         lower_bound=1)
    flags.DEFINE_enum("search_skeleton", search.skeleton, list(latent_search.SKELETONS), "Which architectures the "
                      "search may decode: free (any of the space) or teacher (only children of the teacher: its "
                      "layers, each at most as wide and with at most its kernel, so every layer inherits by "
                      "alignment, as a pruned network does) or widths (the same with the teacher's kernels: "
                      "filter pruning's search space).")
    flags.DEFINE_float("min_ratio", defaults.min_ratio, "Lowest rung of the finalist ladder when no "
                       "--target_ratio is given.", lower_bound=1.0)
    flags.DEFINE_float("rung_factor", defaults.rung_factor, "Ratio between successive rungs of the finalist "
                       "ladder.", lower_bound=1.01)
    flags.DEFINE_integer("rounds", defaults.rounds, "Search rounds; each after the first is preceded by a "
                         "refinement (proxy-train candidates, fine-tune the embedding).", lower_bound=1)
    flags.DEFINE_integer("refine_children", defaults.refine_children, "Candidates proxy-trained per refinement.",
                         lower_bound=1)
    flags.DEFINE_integer("refine_epochs", defaults.refine_epochs, "Embedding fine-tuning epochs per refinement.",
                         lower_bound=1)
    flags.DEFINE_enum("ablation", "none", list(compression.ABLATIONS), "The method without one of its parts, "
                      "to measure what it is worth: no_embedding (finalists picked from the corpus children by the "
                      "same ladder, no search), no_refinement (one search round). acompress-compress writes "
                      "<output_dir>/compressed_<ablation>/.")
    flags.DEFINE_bool("finalist_distill", False, "Train finalists with distillation from the teacher "
                      "(--distill_alpha, --distill_temperature).")


def config_from_flags(flag_values) -> compression.CompressConfig:
    search = latent_search.SearchConfig(
        steps=flag_values.search_steps, learning_rate=flag_values.search_learning_rate,
        lambdas=[float(v) for v in flag_values.lambdas], num_starts=flag_values.num_starts,
        trust_radius=flag_values.trust_radius, snapshot_every=flag_values.snapshot_every,
        skeleton=flag_values.search_skeleton)
    finalist = finalists.FinalistConfig(
        train=training_flags.train_config_from_flags(flag_values, prefix="finalist_"),
        distill=flag_values.finalist_distill, distill_alpha=flag_values.distill_alpha,
        distill_temperature=flag_values.distill_temperature, bn_momentum=flag_values.bn_momentum,
        init=flag_values.finalist_init)
    return compression.CompressConfig(
        target_ratio=flag_values.target_ratio, max_accuracy_drop=flag_values.max_accuracy_drop,
        num_finalists=flag_values.num_finalists, min_ratio=flag_values.min_ratio,
        rung_factor=flag_values.rung_factor, rounds=flag_values.rounds,
        refine_children=flag_values.refine_children, refine_epochs=flag_values.refine_epochs,
        search=search, finalist=finalist, ablation=flag_values.ablation)
