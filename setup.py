"""pip install . -> the `acompress` library plus one console script per binary.

The top-level folders `flags/` and `binaries/` install as `acompress.flags` and
`acompress.binaries`, so nothing generic lands in site-packages.

TensorFlow itself is not a hard requirement, as in keras-tuner and TFDS: users choose
their build (``pip install acompress[cpu]`` for tensorflow-cpu, ``acompress[gpu]`` for
tensorflow[and-cuda], or any TensorFlow 2.21 they already have), and a later
``pip install .`` never swaps it. requirements.txt pins tensorflow-cpu for CI.
"""

import os
import re

import setuptools

HERE = os.path.dirname(os.path.abspath(__file__))


def _version() -> str:
    with open(os.path.join(HERE, "acompress", "__init__.py"), encoding="utf-8") as handle:
        return re.search(r'^__version__ = "([^"]+)"', handle.read(), re.M).group(1)


def _binaries():
    names = sorted(name[:-3] for name in os.listdir(os.path.join(HERE, "binaries"))
                   if name.endswith(".py") and not name.startswith("_"))
    return [f"acompress-{name.replace('_', '-')}=acompress.binaries.{name}:run" for name in names]


setuptools.setup(
    name="acompress",
    version=_version(),
    description="Compress CNNs by searching their architecture in a learned embedding (arXiv 1902.03326).",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=["acompress", "acompress.flags", "acompress.binaries"],
    package_dir={"acompress": "acompress", "acompress.flags": "flags", "acompress.binaries": "binaries"},
    package_data={"acompress.flags": ["*.flags"]},
    install_requires=[
        "keras~=3.15",
        "keras-tuner~=1.4.8",
        "tensorflow-datasets~=4.9.10",
        "absl-py>=2.1",
        "numpy>=1.26",
        "scikit-learn>=1.5",
        "matplotlib>=3.8",
        "tensorboard~=2.21.0",
        "importlib_resources>=6.0",
    ],
    extras_require={"cpu": ["tensorflow-cpu~=2.21.0"], "gpu": ["tensorflow[and-cuda]~=2.21.0"],
                    "test": ["pytest>=8", "pytest-xdist>=3.5"]},
    entry_points={"console_scripts": _binaries()},
)
