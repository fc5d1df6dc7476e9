"""Flags naming the teacher and how it is trained."""

from absl import flags

from acompress.flags import training_flags


def define_flags() -> None:
    if "teacher" in flags.FLAGS:
        return
    flags.DEFINE_string("teacher", "digits_cnn", "The teacher: a zoo name (digits_cnn, cifar_cnn, vgg11..vgg19, "
                        "resnet18, resnet34), a trained .keras model file, or an architecture spec .json file.")
    flags.DEFINE_float("bn_momentum", 0.9, "Batch norm momentum of every built network (Keras' 0.99 leaves "
                       "short trainings with unsettled statistics).", lower_bound=0.0, upper_bound=1.0)
    training_flags.define_flags(prefix="teacher_", epochs=40)
