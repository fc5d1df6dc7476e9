"""Output directories: never overwrite results silently, always keep the resolved config.

Every binary writes into one output directory (any `tf.io.gfile` path). It holds
``config.json``, the resolved configuration of the run (sorted keys), so any
result can be reproduced from it, and the marker file ``MARKER``. A non-empty
directory that is not a run of this package (no marker, no run config) is never
written into, resumed or deleted, with or without ``--overwrite``: ``--output_dir=.``
must not wipe a working directory.
"""

import json
import os
from typing import Any, Mapping

import tensorflow as tf

CONFIG_FILE = "config.json"
MARKER = ".acompress_run"
# The config files binaries write (runs made before the marker existed are recognised by them).
RUN_CONFIGS = (CONFIG_FILE, "pipeline_config.json")


class OutputExistsError(Exception):
    """The output directory already holds results and neither overwrite nor resume was asked."""


class OutputDirError(OSError):
    """The output directory cannot be made or written: a file is in the way, or no permission."""


class NotARunError(OutputExistsError):
    """The output directory holds files, and it is not a run of this package."""


def is_run(directory: str, *, stage: bool = True) -> bool:
    """Whether `directory` was written by this package: its marker, or a run config that is a JSON object.

    With `stage`, a directory directly inside such a run counts too (a run's stage folder, like the
    pipeline's compressed/ or embedding/, which a stage binary may then resume or replace).
    """
    if stage and is_run(os.path.dirname(directory.rstrip("/")), stage=False):
        return True
    if tf.io.gfile.exists(os.path.join(directory, MARKER)):
        return True
    for name in RUN_CONFIGS:
        path = os.path.join(directory, name)
        if tf.io.gfile.exists(path):
            try:
                if isinstance(read_json(path), dict):
                    return True
            except (ValueError, tf.errors.OpError):
                pass
    return False


def to_json(data: Any) -> str:
    """Deterministic JSON: sorted keys, two-space indent, trailing newline."""
    return json.dumps(data, sort_keys=True, indent=2, default=_default) + "\n"


def _default(value):
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def write_json(path: str, data: Any) -> None:
    """Writes JSON atomically (temporary file, then rename)."""
    tmp = f"{path}.tmp"
    with tf.io.gfile.GFile(tmp, "w") as handle:
        handle.write(to_json(data))
    tf.io.gfile.rename(tmp, path, overwrite=True)


def read_json(path: str) -> Any:
    with tf.io.gfile.GFile(path, "r") as handle:
        return json.load(handle)


def normalize(path: str) -> str:
    """An absolute local path (so `runs/x` and `/abs/runs/x` are one directory); URLs stay as they are."""
    return path if not path or "://" in path else os.path.abspath(path)


# Settings that do not change a run's results: a run directory resumes under other values of them.
UNPINNED = ("corpus.groups_per_worker", "data.cache_dir", "proxy_data.cache_dir", "search_data.cache_dir")
# Settings added after run directories were first written, with the value that a directory written before
# they existed used, so those directories still resume when given the same settings.
INTRODUCED = {"corpus.proxy.init": "scratch", "corpus.proxy.importance": "l1",
              "corpus.proxy.recalibrate_batches": 0, "compress.finalist.init": "scratch",
              "compress.finalist.recalibrate_batches": 20, "baseline.finalist.init": "scratch",
              "baseline.finalist.recalibrate_batches": 20, "baseline.tuner.trial.init": "scratch",
              "baseline.tuner.trial.recalibrate_batches": 20}


def _comparable(config: Mapping[str, Any], stored: bool) -> dict:
    """`config` (a JSON copy) without the UNPINNED settings and, for a stored one, with INTRODUCED filled in."""
    out = json.loads(to_json(dict(config)))
    for path in UNPINNED + (tuple(INTRODUCED) if stored else ()):
        *parents, leaf = path.split(".")
        node = out
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        if path in UNPINNED:
            node.pop(leaf, None)
        else:
            node.setdefault(leaf, INTRODUCED[path])
    return out


def prepare(output_dir: str, config: Mapping[str, Any], *, overwrite: bool = False,
            resume: bool = False, config_file: str = CONFIG_FILE) -> str:
    """Creates `output_dir` and writes config.json.

    Args:
      output_dir: the directory (created with parents if missing).
      config: the resolved configuration (JSON-serialisable).
      overwrite: replace whatever the directory holds.
      resume: keep what the directory holds; the stored config must equal `config`, apart from the
        `UNPINNED` settings (a directory written before an `INTRODUCED` setting existed counts as
        having its old value).
      config_file: the config's file name (binaries sharing a run directory use their own).

    Raises:
      NotARunError: the directory holds files and is not a run of this package (`is_run`).
      OutputExistsError: the directory holds results and neither flag allows it, or a
        resumed directory was made with another configuration (the message names
        the differing keys).
      OutputDirError: the path is a file, lies below a file, or cannot be written.
    """
    if not output_dir:
        raise ValueError("an output directory is required (--output_dir)")
    if tf.io.gfile.exists(output_dir) and not tf.io.gfile.isdir(output_dir):
        raise OutputDirError(f"the output directory {output_dir} is a file")
    config_path = os.path.join(output_dir, config_file)
    existing = tf.io.gfile.exists(output_dir) and tf.io.gfile.listdir(output_dir)
    if existing and not is_run(output_dir):
        raise NotARunError(f"{output_dir} holds files that are not a run of acompress "
                           f"({', '.join(sorted(existing)[:5])}); it is left alone, even with --overwrite: "
                           "choose a new or empty --output_dir")
    if existing and overwrite:
        tf.io.gfile.rmtree(output_dir)
    elif existing and resume and tf.io.gfile.exists(config_path):
        stored = _comparable(read_json(config_path), stored=True)
        wanted = _comparable(config, stored=False)
        differing = sorted(key for key in set(stored) | set(wanted) if stored.get(key) != wanted.get(key))
        if differing:
            raise OutputExistsError(
                f"{output_dir} was made with a different configuration (differs in: {', '.join(differing)}); "
                "use another --output_dir, or --overwrite to replace it")
    elif existing and not resume:
        raise OutputExistsError(f"{output_dir} already holds results ({', '.join(sorted(existing)[:5])}); "
                                "use another --output_dir, or --overwrite to replace it")
    try:
        tf.io.gfile.makedirs(output_dir)
        write_json(config_path, dict(config))
        with tf.io.gfile.GFile(os.path.join(output_dir, MARKER), "w") as handle:
            handle.write("written by acompress; lets --overwrite and resuming recognise this directory\n")
    except tf.errors.OpError as error:  # e.g. a file in the path, no permission
        raise OutputDirError(f"cannot write the output directory {output_dir}: {error.message}") from None
    return output_dir
