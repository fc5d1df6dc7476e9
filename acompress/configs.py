"""What the package's frozen config dataclasses share: JSON-friendly dicts, read back strictly.

A config read from a run directory must not silently drop a key it does not know (a newer
version's setting, a typo in a hand-edited file): `strict_fields` refuses it, naming it.
"""

import dataclasses
from typing import Any, Mapping


def strict_fields(cls, data: Mapping[str, Any], what: str) -> dict:
    """`data` as keyword arguments of dataclass `cls`; ValueError naming any key `cls` has no field for."""
    unknown = set(data) - {field.name for field in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} fields {sorted(unknown)}")
    return dict(data)
