"""The `main` of every py_test in BUILD: runs one test module with pytest, as `python -m pytest` would.

BUILD (scripts/make_build.py) passes the module's path as the argument. Bazel runs this from the runfiles
root, which holds pytest.ini, so the default run's options apply (`-m "not slow"` among them). Temporary
files go to the test's $TEST_TMPDIR, the JUnit XML where Bazel asks for it.
"""

import os
import sys
import tempfile

import pytest

NO_TESTS_COLLECTED = 5  # a module whose tests are all deselected (slow ones): passes, as in the full run


def main(argv):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # -n 0: one module per target, in this process (Bazel runs the targets in parallel itself).
    args = [os.path.join(root, path) for path in argv] + ["--rootdir", root, "-p", "no:cacheprovider", "-n", "0"]
    if os.environ.get("TEST_TMPDIR"):  # temporary files in the test's own directory, subprocesses' too
        os.environ["TMPDIR"] = tempfile.tempdir = os.environ["TEST_TMPDIR"]
        args.append(f"--basetemp={os.path.join(os.environ['TEST_TMPDIR'], 'pytest')}")
    if os.environ.get("XML_OUTPUT_FILE"):
        args.append(f"--junitxml={os.environ['XML_OUTPUT_FILE']}")
    code = pytest.main(args)
    return 0 if code == NO_TESTS_COLLECTED else int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
