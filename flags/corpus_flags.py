"""Flags for the child corpus: how many children, how they are sampled and trained, sharding."""

from absl import flags

from acompress import child_training
from acompress import corpus_generation
from acompress import sampler


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
    flags.DEFINE_integer("num_shards", 1, "Processes the corpus is split over.", lower_bound=1)
    flags.DEFINE_integer("shard_index", 0, "This process's shard, in [0, num_shards).", lower_bound=0)
    flags.DEFINE_float("max_ratio", sampler.SamplerConfig().max_ratio, "Largest compression ratio the sampler "
                       "aims for (children are spread log-uniformly from 1x to it).", lower_bound=1.0)
    flags.DEFINE_integer("proxy_epochs", proxy.epochs, "Epochs each child is trained.", lower_bound=1)
    flags.DEFINE_float("proxy_learning_rate", proxy.learning_rate, "Children's peak learning rate (Adam).",
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
        epochs=flag_values.proxy_epochs, learning_rate=flag_values.proxy_learning_rate,
        schedule=flag_values.proxy_schedule, pack=flag_values.pack, distill=flag_values.distill,
        distill_alpha=flag_values.distill_alpha, distill_temperature=flag_values.distill_temperature,
        bn_momentum=flag_values.bn_momentum,
        graph_optimizer={"auto": None, "on": True, "off": False}[flag_values.graph_optimizer])
    return corpus_generation.CorpusConfig(
        num_children=flag_values.num_children, replicate_fraction=flag_values.replicate_fraction,
        num_shards=flag_values.num_shards, shard_index=flag_values.shard_index,
        sampler=sampler.SamplerConfig(max_ratio=flag_values.max_ratio), proxy=proxy)
