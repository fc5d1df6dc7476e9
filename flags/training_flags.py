"""Flags for training one network (the teacher, or finalists)."""

from absl import flags

from acompress import training


def define_flags(prefix: str = "", epochs: int = 40) -> None:
    """Defines `<prefix>epochs`, `<prefix>learning_rate`, ... (prefix e.g. "teacher_")."""
    if f"{prefix}epochs" in flags.FLAGS:
        return
    what = prefix.rstrip("_") or "the network"
    flags.DEFINE_integer(f"{prefix}epochs", epochs, f"Training epochs for {what}.", lower_bound=1)
    flags.DEFINE_float(f"{prefix}learning_rate", 1e-3, f"Peak learning rate for {what}.", lower_bound=0.0)
    flags.DEFINE_enum(f"{prefix}optimizer", "adam", training.OPTIMIZERS, f"Optimizer for {what}.")
    flags.DEFINE_enum(f"{prefix}schedule", "constant", training.SCHEDULES,
                      f"Learning-rate schedule for {what}.")
    flags.DEFINE_float(f"{prefix}weight_decay", 0.0, f"Decoupled weight decay for {what}.", lower_bound=0.0)


def train_config_from_flags(flag_values, prefix: str = "") -> training.TrainConfig:
    get = lambda name: flag_values[f"{prefix}{name}"].value  # noqa: E731
    return training.TrainConfig(epochs=get("epochs"), learning_rate=get("learning_rate"),
                                optimizer=get("optimizer"), schedule=get("schedule"),
                                weight_decay=get("weight_decay"))
