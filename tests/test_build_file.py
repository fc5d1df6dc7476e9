"""BUILD mirrors the code: regenerate it with scripts/make_build.py when this fails."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_build_file_is_current():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_build.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_build_has_a_target_per_module():
    text = open(os.path.join(ROOT, "BUILD"), encoding="utf-8").read()
    for name in os.listdir(os.path.join(ROOT, "acompress")):
        if name.endswith(".py") and name != "__init__.py":
            assert f'name = "{name[:-3]}"' in text
    for name in os.listdir(os.path.join(ROOT, "tests")):
        if name.startswith("test_") and name.endswith(".py"):
            assert f'py_test(\n    name = "{name[:-3]}"' in text
