"""A Python toolchain for the workspace's virtual environment (`.venv/bin/python`, made by the README's
test command), so `bazel test` runs with the interpreter and packages `python -m pytest` uses.

The runtime is a two-line wrapper that execs that interpreter, plus the list of installed packages
(name==version) as an input of every test: installing other versions re-runs the tests instead of
reporting cached results. $ACOMPRESS_BAZEL_PYTHON, when set, names another interpreter (an absolute path).
"""

_BUILD = """\
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

py_runtime(
    name = "py3_runtime",
    interpreter = "python.sh",
    files = ["packages.txt"],
    python_version = "PY3",
    stub_shebang = "{shebang}",
)

py_runtime_pair(
    name = "runtime_pair",
    py3_runtime = ":py3_runtime",
)

toolchain(
    name = "toolchain",
    toolchain = ":runtime_pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)
"""

_LIST_PACKAGES = """
import importlib.metadata, sys
print(sys.version)
print("\\n".join(sorted({f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()})))
"""

def _python_venv_impl(ctx):
    interpreter = ctx.os.environ.get("ACOMPRESS_BAZEL_PYTHON", "")
    if not interpreter:
        interpreter = str(ctx.path(Label("@//:WORKSPACE")).dirname) + "/" + ctx.attr.venv + "/bin/python"
    if not ctx.path(interpreter).exists:
        fail("no Python interpreter at %s: make the virtual environment first (the README's test command: " % interpreter +
             "python3.11 -m venv .venv && .venv/bin/pip install -r requirements-test.txt -e .)")

    listed = ctx.execute([interpreter, "-c", _LIST_PACKAGES])
    if listed.return_code != 0:
        fail("%s cannot list its packages:\n%s" % (interpreter, listed.stderr))

    # The launcher stub Bazel writes for each py_binary/py_test runs with the same interpreter, unless the
    # path cannot be a shebang line.
    shebang = "#!" + interpreter
    if " " in interpreter or len(shebang) > 120:
        shebang = "#!/usr/bin/env python3"
    ctx.file("WORKSPACE", 'workspace(name = "%s")\n' % ctx.name)
    ctx.file("python.sh", '#!/bin/sh\nexec "%s" "$@"\n' % interpreter, executable = True)
    ctx.file("packages.txt", "%s\n%s" % (interpreter, listed.stdout))
    ctx.file("BUILD", _BUILD.format(shebang = shebang))

python_venv = repository_rule(
    implementation = _python_venv_impl,
    attrs = {"venv": attr.string(default = ".venv")},
    environ = ["ACOMPRESS_BAZEL_PYTHON"],
    local = True,
)
