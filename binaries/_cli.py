"""What every binary shares: quiet TensorFlow start-up, a --help that explains the binary, and
one-line errors for user mistakes.

Import this module before TensorFlow so its C++ start-up chatter stays off.
"""

import os
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

_PACKAGE_DIRS = tuple(os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep + name + os.sep
                      for name in ("acompress", "flags", "binaries"))
RESUME_HINT = ("the run can be resumed: run the same command again; the stages it finished (teacher, corpus "
               "children, embedding, finalists) are reused")

# Errors a user can cause (bad flags, files, data, specs): one line, exit status 2, no traceback
# unless --verbosity=1 (debug) asks for it.
USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def _user_error_types():
    from acompress import distribution
    from acompress import rundir
    from acompress import search_space
    return USER_ERRORS + (rundir.OutputExistsError, rundir.OutputDirError, search_space.OutOfSearchSpaceError,
                          distribution.WorkerMismatchError)


def _raised_by_the_package(error: BaseException) -> bool:
    """Whether the innermost frame of `error`'s traceback is the package's own code (not Keras', TF's...)."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and os.path.abspath(frames[-1].filename).startswith(_PACKAGE_DIRS)


def _explain(main) -> None:
    """--help prints the binary's docstring and the package's flags it defines (absl's key flags)."""
    module = sys.modules[main.__module__]
    main_module = sys.modules["__main__"]
    if module is not main_module and module.__doc__ and not getattr(main_module, "__doc__", None):
        main_module.__doc__ = module.__doc__  # a console script's wrapper has no docstring of its own
    for name in list(flags.FLAGS):
        defining = flags.FLAGS.find_module_defining_flag(name) or ""
        if defining.startswith(("acompress.", "flags.", "binaries.")) or defining in (module.__name__, sys.argv[0]):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])


def run(main) -> None:
    """app.run(main), turning the user's mistakes into `error: ...` on stderr and exit status 2.

    A user error is one of `_user_error_types` raised by the package's own code (a bad flag,
    file, data set or spec). Anything else (a bug, an error inside Keras or TensorFlow hours
    into a run) keeps its traceback, followed by a line saying how to resume.
    """
    _explain(main)

    def guarded(argv):
        import tensorflow as tf
        tf.get_logger().setLevel("ERROR")
        try:
            return main(argv)
        except _user_error_types() as error:
            if logging.get_verbosity() >= logging.DEBUG or not _raised_by_the_package(error):
                print(RESUME_HINT, file=sys.stderr)
                raise
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        except Exception:
            print(RESUME_HINT, file=sys.stderr)
            raise

    app.run(guarded)
