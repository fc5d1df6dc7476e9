"""Shared absl flag definitions, grouped by concern, plus ready-made flagfiles.

Each module has `define_flags()` (safe to call twice) and a `*_from_flags(flag_values)`
function turning the parsed flags into the library's plain config object. Only
binaries call them; the library never reads FLAGS.

Flagfiles (`*.flags` in this folder) hold ready-made experiments:
`--flagfile=flags/digits.flags`.
"""

import os

FLAGFILE_DIR = os.path.dirname(os.path.abspath(__file__))


def flagfile(name: str) -> str:
    """Path of a bundled flagfile, e.g. flagfile("digits") (works installed too)."""
    return os.path.join(FLAGFILE_DIR, f"{name}.flags")
