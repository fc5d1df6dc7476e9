"""What the stage binaries share: their flag groups and the first steps of `main`.

generate_corpus, train_embedding, compress and pipeline all accept the same flagfile
(``flags/digits.flags``), so each defines the runtime, data, teacher and corpus groups, plus
its own; and each starts the same way: refuse stray arguments, set TensorFlow's threads, make
the distribution strategy (before TensorFlow runs anything), and read the data and teacher
configs. Only binaries import this module (it reads absl flag values).
"""

import dataclasses
import os
from typing import Optional

from absl import flags

from acompress import cpu_threads
from acompress import data
from acompress import distribution
from acompress import rundir
from acompress import teacher as teacher_lib
from acompress import training
from acompress.flags import compress_flags
from acompress.flags import corpus_flags
from acompress.flags import data_flags
from acompress.flags import embedding_flags
from acompress.flags import runtime_flags
from acompress.flags import target_flags
from acompress.flags import teacher_flags
from acompress.flags import training_flags

_EXTRA_GROUPS = {"embedding": embedding_flags.define_flags, "compress": compress_flags.define_flags}


def define_flags(*extra: str) -> None:
    """The runtime, data, teacher and corpus groups, then `extra` ("embedding", "compress")."""
    runtime_flags.define_flags()
    data_flags.define_flags()
    teacher_flags.define_flags()
    corpus_flags.define_flags()
    target_flags.define_flags()  # the flagfiles name what the user wants (--target_ratio, --finalist_*)
    for name in extra:
        _EXTRA_GROUPS[name]()
    flags.mark_flag_as_required("output_dir")


@dataclasses.dataclass(frozen=True)
class Start:
    """What every stage binary knows once its flags are read.

    Attributes:
      strategy: the `tf.distribute.Strategy`, or None for the default one device.
      output_dir: the directory this process writes (a multi-worker run's non-chief workers
        write beside the chief's; see `acompress.distribution`).
      shared_output_dir: --output_dir as given (where every worker reads shared inputs).
      data_config: the data (seeded by --seed).
      proxy_data_config: the children's share of it (--proxy_fraction of the training split).
      teacher_train: the teacher's training recipe (--teacher_*).
    """

    strategy: object
    output_dir: str
    shared_output_dir: str
    data_config: data.DataConfig
    proxy_data_config: data.DataConfig
    teacher_train: training.TrainConfig

    def own_path(self, flag_value: Optional[str], name: str) -> str:
        """An output path: the flag's value (a worker's own copy of it), else `name` under output_dir."""
        if flag_value:
            return distribution.output_dir_for(rundir.normalize(flag_value), self.strategy)
        return os.path.join(self.output_dir, name)

    def shared_path(self, flag_value: Optional[str], name: str) -> str:
        """An input path every worker reads: the flag's value, else `name` under --output_dir."""
        return rundir.normalize(flag_value or os.path.join(self.shared_output_dir, name))

    def finish(self) -> None:
        """The last step of main: the workers of a multi-worker run wait for each other here, so
        none leaves (taking the cluster's coordination service with it) while another still works."""
        distribution.agree(self.strategy, "finished")

    def base_config(self, binary: str, flag_values) -> dict:
        """The config.json entries every stage binary records."""
        return {"binary": binary, "runtime": runtime_flags.runtime_from_flags(flag_values, self.strategy),
                "data": self.data_config.to_dict(), "teacher": flag_values.teacher,
                "teacher_train": self.teacher_train.to_dict(), "bn_momentum": flag_values.bn_momentum}


def start(flag_values, argv) -> Start:
    """Refuses stray arguments, configures threads and the strategy, reads the data and teacher flags."""
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    cpu_threads.configure(flag_values.intra_op_threads, flag_values.inter_op_threads)
    strategy, output_dir = runtime_flags.strategy_from_flags(flag_values)
    data_config = data_flags.config_from_flags(flag_values, flag_values.seed,
                                               auto_normalise=teacher_lib.input_normalisation(flag_values.teacher))
    proxy_data_config = dataclasses.replace(data_config,
                                            train_fraction=data_config.train_fraction * flag_values.proxy_fraction)
    return Start(strategy, output_dir, rundir.normalize(flag_values.output_dir), data_config, proxy_data_config,
                 training_flags.train_config_from_flags(flag_values, prefix="teacher_"))
