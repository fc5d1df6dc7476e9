"""The search space: which layer values an architecture may use.

An `archspec.ArchSpec` may hold any well-formed values; a `SearchSpace` is the
finite set of values the token encoding, the sampler and the embedding know.
A well-formed spec with a value outside it (a width of 37, too many layers)
raises `OutOfSearchSpaceError`, which is not a `ValueError`: the spec is fine,
it just cannot be expressed here.
"""

import dataclasses
import hashlib
import json
from typing import Optional, Tuple

from acompress import archspec
from acompress import configs


def _default_widths() -> Tuple[int, ...]:
    widths = {1, 2, 3}
    for step, top in ((4, 64), (8, 128), (16, 256), (32, 512), (64, 1024)):
        widths.update(range(step, top + 1, step))
    widths.update((1536, 2048, 3072, 4096))
    return tuple(sorted(widths))


DEFAULT_WIDTHS = _default_widths()

# A valid layer per field, to check each vocabulary value by replacing that field.
_PROBES = {
    "kernel": archspec.maxpool(1, 1, "same"), "stride": archspec.maxpool(1, 1, "same"),
    "padding": archspec.maxpool(1, 1, "same"), "filters": archspec.dense(1), "use_bias": archspec.dense(1),
    "activation": archspec.act(), "rate": archspec.dropout(0.5), "shortcut": archspec.basic(1, kernel=1),
    "expansion": archspec.inverted(1, 1),
}

# The SearchSpace attribute that holds each layer field's vocabulary.
_ATTRIBUTES = {"kernel": "kernels", "stride": "strides", "padding": "paddings", "activation": "activations",
               "rate": "rates", "shortcut": "shortcuts", "expansion": "expansions"}


def _attribute(field: str) -> str:
    return _ATTRIBUTES.get(field, field)


# Fields whose vocabulary only matters (and is only stored, keeping older spaces' hashes) when one
# of the space's kinds uses it.
_OPTIONAL_FIELDS = ("expansion",)


class OutOfSearchSpaceError(Exception):
    """A well-formed spec that the search space cannot express.

    Attributes:
      layer_index: the offending layer, or None for the spec as a whole.
      field: the offending field, or None.
    """

    def __init__(self, message: str, layer_index: Optional[int] = None, field: Optional[str] = None):
        self.layer_index = layer_index
        self.field = field
        super().__init__(archspec.locate(message, layer_index, field))


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """Finite vocabularies for every layer field, and the longest spec allowed."""

    max_layers: int = 64
    kinds: Tuple[str, ...] = archspec.CLASSIC_KINDS
    kernels: Tuple[int, ...] = (1, 2, 3, 5, 7)
    strides: Tuple[int, ...] = (1, 2)
    filters: Tuple[int, ...] = DEFAULT_WIDTHS
    paddings: Tuple = archspec.PADDINGS
    activations: Tuple[str, ...] = archspec.CLASSIC_ACTIVATIONS
    rates: Tuple[float, ...] = (0.1, 0.2, 0.25, 0.3, 0.4, 0.5)
    use_bias: Tuple[bool, ...] = (False, True)
    shortcuts: Tuple[str, ...] = archspec.SHORTCUTS
    expansions: Tuple[int, ...] = (1, 2, 3, 4, 6)

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, list):
                object.__setattr__(self, field.name, tuple(value))
        if self.max_layers < 1:
            raise ValueError(f"max_layers must be >= 1, got {self.max_layers}")
        unknown = set(self.kinds) - set(archspec.KINDS)
        if unknown:
            raise ValueError(f"unknown layer kinds {sorted(unknown)}")
        for field in _OPTIONAL_FIELDS:  # an unused vocabulary is not stored, so it must not tell spaces apart
            if not self.uses(field):
                object.__setattr__(self, _attribute(field), getattr(SearchSpace, _attribute(field)))
        if not set(self.kinds) & set(archspec.TRANSITIONS):
            raise ValueError(f"kinds must include one of {archspec.TRANSITIONS}: no spec could become flat")
        for field in ("kind",) + archspec.FIELDS:
            values = self.values(field)
            if len(set(values)) != len(values) or len({(type(v), v) for v in values}) != len(values):
                raise ValueError(f"the {field} vocabulary repeats a value: {values}")
            if field != "kind":
                self._check_values(field, values)
        for kind in self.kinds:
            empty = [field for field in archspec.KIND_FIELDS[kind] if not self.values(field)]
            if empty:
                raise ValueError(f"kind {kind!r} is in the search space but the {empty[0]} vocabulary is empty")

    @staticmethod
    def _check_values(field: str, values: Tuple) -> None:
        """Every vocabulary value must be one archspec accepts for `field`."""
        for value in values:
            try:
                archspec.validate_layer(_PROBES[field].replace(**{field: value}))
            except archspec.SpecError as error:
                raise ValueError(f"search space {field} value {value!r} is invalid: {error}") from None

    def values(self, field: str) -> Tuple:
        """The allowed values of a layer field (`kind` or one of archspec.FIELDS)."""
        if field == "kind":
            return self.kinds
        return getattr(self, _attribute(field))

    def uses(self, field: str) -> bool:
        """Whether a kind of this space has the layer field `field`."""
        return any(field in archspec.KIND_FIELDS[kind] for kind in self.kinds)

    def extended_for(self, spec: archspec.ArchSpec) -> "SearchSpace":
        """This space widened just enough to hold `spec`: its kinds, values and length.

        Values are added after the space's own ones (widths stay sorted), so a spec
        already inside gets this very space back (the same hash).
        """
        changes = {}
        if len(spec) > self.max_layers:
            changes["max_layers"] = len(spec)
        kinds = tuple(dict.fromkeys(self.kinds + tuple(layer.kind for layer in spec)))
        if kinds != self.kinds:
            changes["kinds"] = kinds
        for field in archspec.FIELDS:
            current = self.values(field)
            used = [getattr(layer, field) for layer in spec if field in archspec.KIND_FIELDS[layer.kind]]
            extra = [value for value in dict.fromkeys(used) if (type(value), value) not in
                     {(type(v), v) for v in current}]
            if extra:
                values = current + tuple(extra)
                changes[_attribute(field)] = tuple(sorted(values)) if field in ("filters", "kernel", "stride", "rate",
                                                                        "expansion") else values
        return dataclasses.replace(self, **changes) if changes else self

    def check(self, spec: archspec.ArchSpec) -> None:
        """Raises OutOfSearchSpaceError if `spec` uses a value outside this space."""
        if len(spec) > self.max_layers:
            raise OutOfSearchSpaceError(f"{len(spec)} layers, more than max_layers={self.max_layers}")
        for index, layer in enumerate(spec):
            if layer.kind not in self.kinds:
                raise OutOfSearchSpaceError(f"kind {layer.kind!r} is not in this search space "
                                            f"({', '.join(self.kinds)})", index, "kind")
            for field in archspec.KIND_FIELDS[layer.kind]:
                value = getattr(layer, field)
                allowed = self.values(field)
                if value not in allowed:
                    raise OutOfSearchSpaceError(f"{value!r} is not an allowed {field} "
                                                f"(allowed: {_describe(allowed)})", index, field)

    def contains(self, spec: archspec.ArchSpec) -> bool:
        try:
            self.check(spec)
        except OutOfSearchSpaceError:
            return False
        return True

    def snap_width(self, width: float) -> int:
        """The allowed width nearest to `width` (ties go to the smaller one)."""
        return min(self.filters, key=lambda w: (abs(w - width), w))

    def to_dict(self) -> dict:
        out = {field.name: list(v) if isinstance(v := getattr(self, field.name), tuple) else v
               for field in dataclasses.fields(self)}
        for field in _OPTIONAL_FIELDS:
            if not self.uses(field):
                del out[_attribute(field)]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "SearchSpace":
        fields = configs.strict_fields(cls, data, "search space")
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in fields.items()})

    @property
    def hash(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _describe(values: Tuple) -> str:
    if len(values) <= 12:
        return ", ".join(map(repr, values))
    return f"{len(values)} values from {values[0]!r} to {values[-1]!r}"
