"""What every binary shares: quiet TensorFlow start-up and one-line errors for user mistakes.

Import this module before TensorFlow so its C++ start-up chatter stays off.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import logging  # noqa: E402

# Errors a user can cause (bad flags, files, data, specs): one line, exit status 2, no traceback
# unless --verbosity=1 (debug) asks for it.
USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def _user_error_types():
    from acompress import distribution
    from acompress import rundir
    from acompress import search_space
    return USER_ERRORS + (rundir.OutputExistsError, rundir.OutputDirError, search_space.OutOfSearchSpaceError,
                          distribution.WorkerMismatchError)


def run(main) -> None:
    """app.run(main), turning user errors into `error: ...` on stderr and exit status 2."""

    def guarded(argv):
        import tensorflow as tf
        tf.get_logger().setLevel("ERROR")
        try:
            return main(argv)
        except _user_error_types() as error:
            if logging.get_verbosity() >= logging.DEBUG:
                raise
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    app.run(guarded)
