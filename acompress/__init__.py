"""acompress: compress convolutional networks by searching their architecture.

Architecture Compression (Ashok, arXiv 1902.03326): a learned embedding maps an
architecture to a continuous code and back, and predicts its accuracy and size;
compression walks the teacher's code by gradient descent and decodes the result.

The package is ``acompress``; its absl flag definitions and entry points live in
the sub-packages ``acompress.flags`` and ``acompress.binaries``. In a source
checkout those are the top-level folders ``flags/`` and ``binaries/`` (the
layout of the design card); ``pip install`` maps them under ``acompress`` so no
bare ``flags`` or ``binaries`` package lands in site-packages. The alias below
makes the same import path work from a checkout.
"""

import importlib.util
import os
import sys

__version__ = "0.1.0"


def _alias_checkout_folders() -> None:
    package_dir = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(package_dir)
    for name in ("flags", "binaries"):
        qualified = f"{__name__}.{name}"
        folder = os.path.join(root, name)
        init = os.path.join(folder, "__init__.py")
        if (qualified in sys.modules or os.path.isdir(os.path.join(package_dir, name))
                or not os.path.isfile(init) or not os.path.isfile(os.path.join(root, "setup.py"))):
            continue
        spec = importlib.util.spec_from_file_location(qualified, init, submodule_search_locations=[folder])
        module = importlib.util.module_from_spec(spec)
        sys.modules[qualified] = module
        spec.loader.exec_module(module)
        globals()[name] = module


_alias_checkout_folders()
