"""Flags for the architecture embedding: its shape and its training."""

from absl import flags

from acompress import embedding
from acompress import embedding_training


def define_flags() -> None:
    if "embedding_epochs" in flags.FLAGS:
        return
    model = embedding.EmbeddingConfig()
    train = embedding_training.EmbeddingTrainConfig()
    flags.DEFINE_string("embedding_dir", None, "Where the trained embedding is written / read; default "
                        "<output_dir>/embedding.")
    flags.DEFINE_integer("embedding_dim", model.embed_dim, "Size of the token and position vectors.", lower_bound=1)
    flags.DEFINE_integer("embedding_channels", model.channels, "Conv1D width of encoder, decoder and size head.",
                         lower_bound=1)
    flags.DEFINE_integer("embedding_conv_layers", model.conv_layers, "Conv1D layers in encoder and decoder.",
                         lower_bound=1)
    flags.DEFINE_integer("embedding_kernel_size", model.kernel_size, "Conv1D kernel (positions).", lower_bound=1)
    flags.DEFINE_integer("latent_channels", model.latent_channels, "Latent channels per layer position: the code "
                         "is [max_layers, latent_channels].", lower_bound=1)
    flags.DEFINE_integer("embedding_head_units", model.head_units, "Width of the accuracy head's MLP.",
                         lower_bound=1)
    flags.DEFINE_float("embedding_dropout", model.dropout, "Dropout in the accuracy head.", lower_bound=0.0,
                       upper_bound=0.99)
    flags.DEFINE_float("latent_noise", model.latent_noise, "Std of the Gaussian noise on the code while training "
                       "(the code lies in (-1, 1)).", lower_bound=0.0)
    flags.DEFINE_integer("embedding_epochs", train.epochs, "Most epochs of embedding training.", lower_bound=1)
    flags.DEFINE_integer("embedding_batch_size", train.batch_size, "Records per embedding training step.",
                         lower_bound=1)
    flags.DEFINE_float("embedding_learning_rate", train.learning_rate, "AdamW peak learning rate (cosine decay).",
                       lower_bound=0.0)
    flags.DEFINE_float("embedding_weight_decay", train.weight_decay, "AdamW weight decay.", lower_bound=0.0)
    flags.DEFINE_float("reconstruction_weight", train.reconstruction_weight, "Weight of the token "
                       "reconstruction loss.", lower_bound=0.0)
    flags.DEFINE_float("accuracy_weight", train.accuracy_weight, "Weight of the (normalised) accuracy "
                       "regression loss.", lower_bound=0.0)
    flags.DEFINE_float("params_weight", train.params_weight, "Weight of the (normalised) log-parameter "
                       "regression loss.", lower_bound=0.0)
    flags.DEFINE_float("heldout_fraction", train.heldout_fraction, "Share of architectures held out (by hash) "
                       "for early stopping and the metrics.", lower_bound=0.01, upper_bound=0.99)
    flags.DEFINE_integer("embedding_patience", train.patience, "Epochs without a better held-out loss before "
                         "embedding training stops (the best weights are kept).", lower_bound=1)
    flags.DEFINE_integer("unlabeled_architectures", train.unlabeled_architectures, "Extra children drawn from the "
                         "corpus' sampler, never trained: they teach the encoder, decoder and size head (no "
                         "accuracy label needed).", lower_bound=0)
    flags.DEFINE_integer("embedding_min_steps_per_epoch", train.min_steps_per_epoch, "Least steps between two "
                         "held-out evaluations.", lower_bound=1)


def model_config_from_flags(flag_values) -> embedding.EmbeddingConfig:
    return embedding.EmbeddingConfig(
        embed_dim=flag_values.embedding_dim, channels=flag_values.embedding_channels,
        conv_layers=flag_values.embedding_conv_layers, kernel_size=flag_values.embedding_kernel_size,
        latent_channels=flag_values.latent_channels, head_units=flag_values.embedding_head_units,
        dropout=flag_values.embedding_dropout, latent_noise=flag_values.latent_noise)


def train_config_from_flags(flag_values) -> embedding_training.EmbeddingTrainConfig:
    return embedding_training.EmbeddingTrainConfig(
        epochs=flag_values.embedding_epochs, batch_size=flag_values.embedding_batch_size,
        learning_rate=flag_values.embedding_learning_rate, weight_decay=flag_values.embedding_weight_decay,
        reconstruction_weight=flag_values.reconstruction_weight, accuracy_weight=flag_values.accuracy_weight,
        params_weight=flag_values.params_weight, heldout_fraction=flag_values.heldout_fraction,
        patience=flag_values.embedding_patience, min_steps_per_epoch=flag_values.embedding_min_steps_per_epoch,
        unlabeled_architectures=flag_values.unlabeled_architectures)
