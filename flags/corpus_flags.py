"""Flags for the child corpus: how many children, how they are sampled and trained, sharding."""

from absl import flags

from acompress import child_training
from acompress import corpus_generation
from acompress import sampler


# The binaries' default label recipe (README, "Labels"; benchmarks/label_benchmark.py): children inherit
# the teacher's weights, batch norm is recalibrated on 20 batches, then 2 epochs of Adam 1e-3 (cosine).
# The library's ProxyConfig() stays the paper's scratch recipe, which needs no teacher.
INHERITED = child_training.ProxyConfig(init="inherit", epochs=2, learning_rate=1e-3, recalibrate_batches=20)
SCRATCH = child_training.ProxyConfig()  # 3 epochs, Adam 3e-3 cosine
# A supernet made from the teacher (acompress.supernet): 5 epochs of sandwich training, Adam 1e-3 cosine, shared
# by every child; each child is then labelled after recalibrating its batch norm on 20 batches.
SUPERNET = child_training.ProxyConfig(init="supernet", epochs=5, learning_rate=1e-3, recalibrate_batches=20)


def recipe_defaults(flag_values) -> child_training.ProxyConfig:
    """The defaults of the recipe --proxy_init names (what --proxy_epochs / --proxy_learning_rate fall back to)."""
    return {child_training.INHERIT: INHERITED, child_training.SUPERNET: SUPERNET}.get(flag_values.proxy_init, SCRATCH)


def proxy_epochs(flag_values) -> int:
    """--proxy_epochs, or the recipe's default."""
    if flag_values.proxy_epochs is not None:
        return flag_values.proxy_epochs
    return recipe_defaults(flag_values).epochs


# The sampler's distribution of children (sampler.SamplerConfig), flag name == field name.
SAMPLER_FLAGS = {
    "p_remove": "Probability that each removable unit (conv, block, pool, dense) of the teacher is removed "
                "from a child.",
    "p_kernel": "Probability that a conv/block kernel of 5 or more shrinks (7 -> 5 or 3, 5 -> 3).",
    "p_pointwise": "Probability that a 3x3 conv/block kernel becomes 1x1.",
    "p_expansion": "Probability that an inverted residual block takes a smaller expansion ratio.",
    "p_group_widths": "Probability that a child draws one width jitter per channel-consistent group of layers "
                      "instead of one per layer.",
    "width_jitter": "Spread, in octaves (half-width), of a child's per-layer width multipliers around its "
                    "global width level: 0 scales every layer alike; 2 lets one layer keep 4x the width of "
                    "another's share, as filter pruning's per-layer allocations do.",
}


def define_flags() -> None:
    if "num_children" in flags.FLAGS:
        return
    proxy = child_training.ProxyConfig()
    defaults = corpus_generation.CorpusConfig()
    flags.DEFINE_string("corpus_dir", None, "Corpus directory (any tf.io.gfile path); default "
                        "<output_dir>/corpus. Shards of one corpus written by several processes share it.")
    flags.DEFINE_integer("num_children", defaults.num_children, "Children in the whole corpus.", lower_bound=1)
    flags.DEFINE_float("replicate_fraction", defaults.replicate_fraction, "Share of children trained twice "
                       "with another seed (noise ceiling of the accuracy predictor).",
                       lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_integer("groups_per_worker", 8, "Train each packed group of children in a worker process that is "
                         "replaced after this many groups, so memory stays bounded (TensorFlow keeps ~180 MB per "
                         "traced group, tensorflow#62854). 0: train in this process. Same results either way.",
                         lower_bound=0)
    flags.DEFINE_integer("num_shards", 1, "Processes the corpus is split over.", lower_bound=1)
    flags.DEFINE_integer("shard_index", 0, "This process's shard, in [0, num_shards).", lower_bound=0)
    flags.DEFINE_float("max_ratio", sampler.SamplerConfig().max_ratio, "Largest compression ratio the sampler "
                       "aims for (children are spread log-uniformly from 1x to it).", lower_bound=1.0)
    drawn = sampler.SamplerConfig()
    for name, help_text in SAMPLER_FLAGS.items():
        flags.DEFINE_float(name, getattr(drawn, name), help_text, lower_bound=0.0)
    flags.DEFINE_integer("proxy_epochs", None, "Epochs each child is trained (from scratch: >= 1; "
                         f"inherited: >= 0, where 0 labels the inherited child after BN recalibration only; "
                         f"supernet: the epochs of the one supernet training every child shares, >= 1). "
                         f"Default: the recipe's ({INHERITED.epochs} inherited, {SCRATCH.epochs} from scratch, "
                         f"{SUPERNET.epochs} supernet).", lower_bound=0)
    flags.DEFINE_enum("proxy_init", INHERITED.init, list(child_training.INITS), "Where a child's weights start: "
                      "inherit (the teacher's most important filters, kernel centres; see acompress.inheritance), "
                      "scratch (random: the paper's recipe), or supernet (the teacher trained once so that its "
                      "sub-networks work, each child then labelled by masking it, no training of its own; needs "
                      "--p_remove=0; see acompress.supernet). The corpus metadata pins it.")
    flags.DEFINE_integer("supernet_children", SUPERNET.supernet_children, "--proxy_init=supernet: random children "
                         "trained beside the whole network and the smallest child at each supernet step.",
                         lower_bound=0)
    flags.DEFINE_enum("proxy_importance", proxy.importance, ["l1", "bn_scale"], "Inherited children: which "
                      "teacher filters a narrowed layer keeps (l1: largest L1 norm; bn_scale: largest |BN gamma|).")
    flags.DEFINE_integer("recalibrate_batches", INHERITED.recalibrate_batches, "Inherited and supernet children: "
                         "training batches their batch-norm statistics are recomputed on before fine-tuning or "
                         "labelling (0: keep the teacher's; a supernet needs >= 1).", lower_bound=0)
    flags.DEFINE_float("proxy_learning_rate", None, "Children's peak learning rate (Adam). Default: the "
                       f"recipe's ({INHERITED.learning_rate:g} inherited, {SCRATCH.learning_rate:g} from scratch).",
                       lower_bound=0.0)
    flags.DEFINE_enum("proxy_schedule", proxy.schedule, ["cosine", "constant"], "Children's LR schedule.")
    flags.DEFINE_float("proxy_fraction", 1.0, "Share of the (--train_fraction) training split children train on "
                       "(a stratified subset).", lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_integer("pack", proxy.pack, "Children trained together in one traced step.", lower_bound=1)
    flags.DEFINE_enum("graph_optimizer", "auto", ["auto", "on", "off"], "TensorFlow's graph optimizer on each "
                      "packed step. auto: on with a GPU, off on a CPU (where it costs more than it saves).")
    flags.DEFINE_bool("distill", proxy.distill, "Train children against the teacher's soft targets too.")
    flags.DEFINE_float("distill_alpha", proxy.distill_alpha, "Weight of the hard-label loss when distilling.",
                       lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_float("distill_temperature", proxy.distill_temperature, "Soft-target temperature (> 0).",
                       lower_bound=1e-3)


def corpus_config_from_flags(flag_values) -> corpus_generation.CorpusConfig:
    if flag_values.shard_index >= flag_values.num_shards:
        raise ValueError(f"--shard_index={flag_values.shard_index} must be below --num_shards="
                         f"{flag_values.num_shards}")
    proxy = child_training.ProxyConfig(
        epochs=proxy_epochs(flag_values),
        learning_rate=(recipe_defaults(flag_values).learning_rate if flag_values.proxy_learning_rate is None
                       else flag_values.proxy_learning_rate),
        schedule=flag_values.proxy_schedule, pack=flag_values.pack, distill=flag_values.distill,
        distill_alpha=flag_values.distill_alpha, distill_temperature=flag_values.distill_temperature,
        bn_momentum=flag_values.bn_momentum, init=flag_values.proxy_init,
        importance=flag_values.proxy_importance,
        recalibrate_batches=flag_values.recalibrate_batches if flag_values.proxy_init != "scratch" else 0,
        supernet_children=flag_values.supernet_children,
        graph_optimizer={"auto": None, "on": True, "off": False}[flag_values.graph_optimizer])
    return corpus_generation.CorpusConfig(
        num_children=flag_values.num_children, replicate_fraction=flag_values.replicate_fraction,
        num_shards=flag_values.num_shards, shard_index=flag_values.shard_index,
        sampler=sampler.SamplerConfig(max_ratio=flag_values.max_ratio,
                                      **{name: flag_values[name].value for name in SAMPLER_FLAGS}), proxy=proxy,
        groups_per_worker=flag_values.groups_per_worker)
