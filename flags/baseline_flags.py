"""Flags for the Keras Tuner baselines, uniform width scaling and L1 filter pruning (`acompress.baselines`,
`acompress.tuner`, `acompress.uniform`, `acompress.pruning`).

Distillation and the trials' training data reuse the corpus flags (`corpus_flags`):
``--distill``, ``--distill_alpha`` and ``--distill_temperature`` distil the trials and
the finalists as they distil the corpus children, and ``--proxy_fraction`` trims the
trials' training split as it trims the children's. Batch norm momentum is the
teacher flags' ``--bn_momentum``.
"""

from absl import flags

from acompress import baselines
from acompress import child_training
from acompress import corpus_generation
from acompress import finalists
from acompress import pruning
from acompress import tuner as tuner_lib
from acompress.flags import corpus_flags
from acompress.flags import target_flags
from acompress.flags import teacher_flags
from acompress.flags import training_flags


def define_flags() -> None:
    if "method" in flags.FLAGS:
        return
    teacher_flags.define_flags()
    corpus_flags.define_flags()
    target_flags.define_flags()  # --target_ratio, --max_accuracy_drop, --num_finalists, --finalist_*
    defaults = tuner_lib.TunerConfig()
    flags.DEFINE_enum("method", tuner_lib.RANDOM, baselines.METHODS,
                      "random / hyperband / bayesian: a Keras Tuner search over the teacher's child space (the "
                      "corpus sampler's), then finalists; uniform: every width times one alpha, the largest that "
                      "meets --target_ratio; l1_prune: L1-norm filter pruning of the trained teacher to --target_ratio, "
                      "per-layer rates from a sensitivity analysis (acompress.pruning), then the finalist fine-tune.")
    flags.DEFINE_enum("objective", defaults.objective, tuner_lib.OBJECTIVES,
                      "What a trial maximises (A: validation accuracy, r: compression ratio). log_tradeoff: "
                      "A + tradeoff * log2(r); target: A if r >= --target_ratio, else below every child that "
                      "meets it; n2n: N2N's C(2-C) * A / A_teacher (cannot separate children past ~14x).")
    flags.DEFINE_float("tradeoff", defaults.tradeoff, "log_tradeoff: accuracy worth one halving of the "
                       "parameters.", lower_bound=0.0)
    flags.DEFINE_float("budget_seconds", None, "Wall-time budget of the search (seconds, over resumed "
                       "sessions): no trial starts after it.", lower_bound=0.0)
    flags.DEFINE_integer("budget_child_epochs", None, "Child-epoch budget of the search (epochs trained, summed "
                         "over trials). With no --budget_* flag: the corpus's own cost under the same flags, "
                         "num_children x (1 + replicate_fraction) x proxy_epochs (supernet labels: proxy_epochs x "
                         "(2 + supernet_children)).", lower_bound=1)
    flags.DEFINE_integer("budget_trials", None, "Trial budget of the search.", lower_bound=1)
    training_flags.define_flags(prefix="trial_", epochs=defaults.trial.train.epochs)
    flags.DEFINE_bool("per_unit_widths", defaults.per_unit_widths, "One width hyperparameter per layer instead "
                      "of one per channel-consistent group.")
    flags.DEFINE_bool("tune_kernels", defaults.tune_kernels, "Offer smaller kernels (as the sampler does).")
    flags.DEFINE_integer("hyperband_factor", defaults.hyperband_factor, "Hyperband's reduction factor "
                         "(its max_epochs is --trial_epochs).", lower_bound=2)
    flags.DEFINE_integer("bayesian_initial_points", None, "Random trials before Bayesian optimisation's "
                         "Gaussian process (default: 3 x the number of hyperparameters).", lower_bound=1)
    pruning_defaults = pruning.PruningConfig()
    flags.DEFINE_list("pruning_grid", [f"{value:g}" for value in pruning_defaults.grid], "l1_prune: keep "
                      "fractions each layer is tried at in the sensitivity analysis, each in (0, 1).")
    flags.DEFINE_integer("pruning_eval_examples", None, "l1_prune: validation examples each pruned network "
                         "is scored on in the sensitivity analysis (empty: the whole validation split).",
                         lower_bound=1)
    flags.DEFINE_string("teacher_dir", None, "Reuse the trained teacher of another run (e.g. "
                        "runs/digits/teacher), so every method is compared against the same teacher; it must "
                        "have been made with the same data, teacher and --seed flags. It is copied into "
                        "<output_dir>/teacher, never modified. Default: train (or resume) the teacher there.")


def corpus_child_epochs(flag_values) -> int:
    """What the corpus costs in child-epochs under these flags (the default search budget)."""
    replicated = corpus_generation.replicated_indices(flag_values.num_children, flag_values.replicate_fraction,
                                                      flag_values.seed)
    return child_training.corpus_child_epochs(flag_values.proxy_init, corpus_flags.proxy_epochs(flag_values),
                                              flag_values.supernet_children,
                                              flag_values.num_children + len(replicated))


def budget_from_flags(flag_values) -> tuner_lib.Budget:
    seconds, epochs, trials = (flag_values.budget_seconds, flag_values.budget_child_epochs,
                               flag_values.budget_trials)
    if seconds is not None and not seconds > 0:
        raise ValueError(f"--budget_seconds must be > 0, got {seconds}")
    if seconds is None and epochs is None and trials is None:
        epochs = corpus_child_epochs(flag_values)
    return tuner_lib.Budget(wall_seconds=seconds, child_epochs=epochs, max_trials=trials)


def baseline_config_from_flags(flag_values) -> baselines.BaselineConfig:
    def recipe(prefix):
        # Trials start from scratch (as a Keras Tuner user's do); finalists follow --finalist_init, the
        # same procedure as architecture compression's.
        return finalists.FinalistConfig(
            train=training_flags.train_config_from_flags(flag_values, prefix=prefix), distill=flag_values.distill,
            distill_alpha=flag_values.distill_alpha, distill_temperature=flag_values.distill_temperature,
            bn_momentum=flag_values.bn_momentum,
            init=flag_values.finalist_init if prefix == "finalist_" else "scratch")

    target_ratio = flag_values.target_ratio
    if target_ratio is None:
        target_ratio = tuner_lib.TunerConfig().target_ratio
    tuner = tuner_lib.TunerConfig(
        objective=flag_values.objective, tradeoff=flag_values.tradeoff, target_ratio=target_ratio,
        trial=recipe("trial_"), per_unit_widths=flag_values.per_unit_widths, tune_kernels=flag_values.tune_kernels,
        hyperband_factor=flag_values.hyperband_factor, bayesian_initial_points=flag_values.bayesian_initial_points)
    budget = budget_from_flags(flag_values) if flag_values.method in tuner_lib.TUNER_METHODS else tuner_lib.Budget()
    return baselines.BaselineConfig(method=flag_values.method, tuner=tuner, budget=budget,
                                    finalist=recipe("finalist_"), num_finalists=flag_values.num_finalists,
                                    max_accuracy_drop=flag_values.max_accuracy_drop,
                                    pruning=pruning.PruningConfig(
                                        grid=tuple(float(value) for value in flag_values.pruning_grid),
                                        recalibrate_batches=flag_values.recalibrate_batches,
                                        importance=flag_values.proxy_importance,
                                        eval_examples=flag_values.pruning_eval_examples))
