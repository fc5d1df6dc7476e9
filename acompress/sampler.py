"""Children of a teacher: smaller architectures sampled the way N2N and ESNAC do.

A child is the teacher with some *units* removed, some widths shrunk and some
kernels shrunk. Everything here is pure Python over `archspec.ArchSpec`; no
TensorFlow.

Units
-----
`units(spec)` cuts a spec into units, each a contiguous run of layers: a primary
layer followed by the ``bn`` / ``act`` / ``dropout`` layers after it.

==============  ================================  =========  ========  ==========
unit kind       primary layer                     removable  scalable  kernel
==============  ================================  =========  ========  ==========
``conv``        conv / sepconv (+ bn, act, ...)   yes        yes       yes
``block``       basic / bottleneck(_v1) /         yes        yes       yes
                inverted
``depthwise``   dwconv (+ bn, act, ...)           yes        no        yes
``pool``        maxpool / avgpool                 yes        no        no
``dense``       dense (+ act, dropout, ...)       yes        yes       no
``transition``  gap / gmp / flatten               never      no        no
``other``       bn / act / dropout at the start   never      no        no
==============  ================================  =========  ========  ==========

`apply_choices(teacher, width_multipliers=..., removed_units=..., kernel_choices=...,
expansion_choices=...)` turns per-unit choices into a spec, deterministically; the
sampler draws choices and calls it, and so can a Keras Tuner hypermodel (one
hyperparameter per entry of `width_groups`, one boolean per removable unit, one
kernel choice per kernel unit, one expansion ratio per inverted residual block).

Rules `apply_choices` follows:

* A width is ``space.snap_width(teacher_width * multiplier)``; a multiplier is in
  (0, 1] and a width never grows: if the nearest allowed width is above the
  teacher's, the largest allowed width not above it is used. A multiplier of
  exactly 1 keeps the teacher's width as it is.
* Bottleneck blocks scale ``filters`` (the mid width; the output is 4x that);
  inverted residual blocks scale ``filters`` (their output width) and may take a
  smaller ``expansion`` (``expansion_choices``; never larger than the teacher's).
  Their residual follows from the shapes (stride 1, output width == input width),
  so an inverted block that had one in the teacher is treated like an identity
  block below: it keeps its input's width, or loses the residual if it cannot.
* **Identity shortcuts follow their input.** An identity block's output channels
  must equal its input channels, so it takes the width of whatever comes in (its
  own multiplier is ignored): the blocks of a stage joined by identity
  shortcuts, and the layer before them that sets the stage's channels, always
  share one width. When that is impossible -- the incoming width is larger than
  the block's teacher width (it would grow), a bottleneck's input is not 4x an
  allowed width, or the unit that set the channels was removed and the block now
  sees the input image -- the block switches to a ``projection`` shortcut and
  scales its own width. We chose this over refusing the removal: removing the
  first block of a stage (the strided projection one) is a natural child, and
  its identity successors then simply continue the previous stage's width.
* Removing a unit drops all its layers. The transition (gap / gmp / flatten) and
  leading ``other`` layers are never removable, and a child keeps at least one
  conv or block unit when the teacher has one.
* Kernels only shrink (``kernel_choices`` maps a conv or block unit to a kernel
  not above the teacher's).

Sampling
--------
`sample_children` draws, per child: a target compression ratio, log-uniform in
[1, ``max_ratio``]; each removable unit removed with probability ``p_remove``;
kernels 7 -> 5/3 and 5 -> 3 with probability ``p_kernel``, 3 -> 1 (rarer) with
``p_pointwise``; per-unit (or, with probability ``p_group_widths``, per
channel-consistent group) width jitters spread ``width_jitter`` octaves; then a
global width level found by bisection so that the exact parameter count of the
child lands as near the target as the multiplier grid allows. Multipliers are
snapped to ``width_grid``. Children are deduplicated by hash, never equal the
teacher, are strictly smaller in exact parameters, have valid shapes for the
input, and lie inside the search space. The sequence is a pure function of the
seed (and `count` only truncates it: the first n children of a run with count
> n are the children of the run with count n).
"""

import bisect
import dataclasses
import functools
import logging
import math
from typing import Collection, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from acompress import archspec
from acompress import configs
from acompress import search_space

_LOG = logging.getLogger(__name__)

CONV, BLOCK, DEPTHWISE, POOL, DENSE, TRANSITION, OTHER = ("conv", "block", "depthwise", "pool", "dense",
                                                         "transition", "other")
REMOVABLE_KINDS = (CONV, BLOCK, DEPTHWISE, POOL, DENSE)
SCALABLE_KINDS = (CONV, BLOCK, DENSE)
KERNEL_KINDS = (CONV, BLOCK, DEPTHWISE)
FEATURE_KINDS = (CONV, BLOCK)  # a child keeps at least one of these

_UNIT_KIND = {"conv": CONV, "sepconv": CONV, "basic": BLOCK, "bottleneck": BLOCK, "bottleneck_v1": BLOCK,
              "inverted": BLOCK, "dwconv": DEPTHWISE, "maxpool": POOL, "avgpool": POOL,
              "dense": DENSE, "gap": TRANSITION, "gmp": TRANSITION, "flatten": TRANSITION}


def _default_grid() -> Tuple[float, ...]:
    return (1 / 32,) + tuple(k / 16 for k in range(1, 17))


class SamplerExhaustedError(RuntimeError):
    """The sampler could not find `count` distinct valid children within its attempt budget."""


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """The distribution of children. Stored with a corpus, so every field is plain data.

    Attributes:
      max_ratio: upper end of the target compression ratio (teacher params / child
        params); targets are log-uniform in [1, max_ratio].
      p_remove: probability that each removable unit (conv, block, pool, dense) is removed.
      p_kernel: probability that a conv/block kernel of 5 or more shrinks (7 -> 5 or 3, 5 -> 3).
      p_pointwise: probability that a 3x3 (or 2x2) conv/block kernel becomes 1x1.
      p_expansion: probability that an inverted residual block takes a smaller expansion
        ratio (one of the space's above 1, drawn uniformly). Stored only when not the default, so
        the configs of corpora made before inverted blocks existed are unchanged.
      p_group_widths: probability that a child draws one width jitter per
        channel-consistent group (`width_groups`) instead of one per unit.
      width_jitter: half-width, in octaves, of the uniform per-unit (or per-group)
        spread of width multipliers around the child's global width level.
      width_grid: allowed width multipliers, increasing, in (0, 1], ending with 1.
      bisection_steps: steps of the search for the global width level.
      max_attempts_per_child: attempt budget is this times `count` (plus 100).
    """

    max_ratio: float = 256.0
    p_remove: float = 0.1
    p_kernel: float = 0.2
    p_pointwise: float = 0.05
    p_expansion: float = 0.3
    p_group_widths: float = 0.5
    width_jitter: float = 1.0
    width_grid: Tuple[float, ...] = dataclasses.field(default_factory=_default_grid)
    bisection_steps: int = 8
    max_attempts_per_child: int = 50

    def __post_init__(self):
        object.__setattr__(self, "width_grid", tuple(float(v) for v in self.width_grid))
        if not self.max_ratio > 1.0:
            raise ValueError(f"max_ratio must be > 1, got {self.max_ratio!r}")
        for name in ("p_remove", "p_kernel", "p_pointwise", "p_expansion", "p_group_widths"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        if self.width_jitter < 0:
            raise ValueError(f"width_jitter must be >= 0, got {self.width_jitter!r}")
        grid = self.width_grid
        if not grid or any(not 0.0 < v <= 1.0 for v in grid) or list(grid) != sorted(set(grid)) \
                or grid[-1] != 1.0:
            raise ValueError(f"width_grid must be strictly increasing values in (0, 1] ending with 1.0, "
                             f"got {grid!r}")
        if self.bisection_steps < 1 or self.max_attempts_per_child < 1:
            raise ValueError("bisection_steps and max_attempts_per_child must be >= 1")

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["width_grid"] = list(self.width_grid)
        if self.p_expansion == SamplerConfig.p_expansion:
            del out["p_expansion"]
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> "SamplerConfig":
        return cls(**configs.strict_fields(cls, data, "sampler config"))


# -- units ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Unit:
    """A contiguous run of layers ``spec.layers[start:stop]`` led by one primary layer."""

    index: int
    kind: str
    start: int
    stop: int
    primary: archspec.Layer

    @property
    def removable(self) -> bool:
        return self.kind in REMOVABLE_KINDS

    @property
    def scalable(self) -> bool:
        return self.kind in SCALABLE_KINDS

    @property
    def has_kernel(self) -> bool:
        return self.kind in KERNEL_KINDS

    @property
    def width(self) -> Optional[int]:
        """The teacher's width knob: conv/dense units, block `filters` (mid width)."""
        return self.primary.filters if self.scalable else None


def units(spec: archspec.ArchSpec) -> Tuple[Unit, ...]:
    """Cuts `spec` into units: a primary layer plus the bn/act/dropout layers that follow it."""
    return _units(spec)


@functools.lru_cache(maxsize=256)
def _units(spec: archspec.ArchSpec) -> Tuple[Unit, ...]:
    out: List[Unit] = []
    start = 0
    layers = spec.layers
    while start < len(layers):
        primary = layers[start]
        kind = _UNIT_KIND.get(primary.kind, OTHER)
        stop = start + 1
        while stop < len(layers) and layers[stop].kind in archspec.ANYWHERE:
            stop += 1
        out.append(Unit(len(out), kind, start, stop, primary))
        start = stop
    return tuple(out)


def width_groups(spec: archspec.ArchSpec) -> Tuple[Tuple[int, ...], ...]:
    """Channel-consistent groups of scalable units, as tuples of unit indices.

    Consecutive scalable units with the same output width form a group (pools
    between them do not split it; the transition does). Identity blocks always
    have the width of what comes before them, so a stage joined by identity
    shortcuts lands in one group with the layer that sets its channels -- those
    must share a width, and `apply_choices` enforces it. Drawing one multiplier
    per group gives the "per-stage" children of N2N/ESNAC.
    """
    groups: List[List[int]] = []
    previous_width = None
    residual = set(residual_units(spec))
    for unit in units(spec):
        if unit.kind == TRANSITION:
            previous_width = None
            continue
        if not unit.scalable:
            continue
        width = unit.primary.out_filters
        identity = unit.index in residual
        if groups and previous_width is not None and (width == previous_width or identity):
            groups[-1].append(unit.index)
        else:
            groups.append([unit.index])
        previous_width = width
    return tuple(tuple(group) for group in groups)


def residual_units(spec: archspec.ArchSpec, in_channels: Optional[int] = None) -> Tuple[int, ...]:
    """Indices of the block units that add their input to their output (identity blocks, and
    inverted blocks whose shapes give them a residual): their width is their input's.

    `in_channels`: the input image's channels, if known (an inverted block on the image itself
    has a residual when its width equals them)."""
    out, channels = [], in_channels
    for unit in units(spec):
        if unit.kind == BLOCK and unit.primary.has_residual(channels):
            out.append(unit.index)
        if unit.primary.out_filters is not None:
            channels = unit.primary.out_filters
    return tuple(out)


def removable_units(spec: archspec.ArchSpec, input_shape: Optional[Sequence[int]] = None,
                    space: Optional[search_space.SearchSpace] = None) -> Tuple[int, ...]:
    """Indices of units whose removal alone gives a valid spec (for `input_shape` if given)."""
    out = []
    for unit in units(spec):
        if not unit.removable:
            continue
        try:
            apply_choices(spec, removed_units=(unit.index,), space=space, input_shape=input_shape)
        except (ValueError, search_space.OutOfSearchSpaceError):
            continue
        out.append(unit.index)
    return tuple(out)


# -- deterministic operations -----------------------------------------------------
def scaled_width(width: int, multiplier: float, space: search_space.SearchSpace) -> int:
    """``space.snap_width(width * multiplier)``, never above `width`; multiplier 1 keeps `width`."""
    if not 0.0 < multiplier <= 1.0:
        raise ValueError(f"a width multiplier must be in (0, 1] (a width never grows), got {multiplier!r}")
    if multiplier == 1.0:
        return width
    return _scaled_width(width, multiplier, space)


@functools.lru_cache(maxsize=65536)
def _scaled_width(width: int, multiplier: float, space: search_space.SearchSpace) -> int:
    snapped = space.snap_width(width * multiplier)
    if snapped > width:
        below = [value for value in space.filters if value <= width]
        snapped = max(below) if below else width
    return snapped


def apply_choices(teacher: archspec.ArchSpec, *,
                  width_multipliers: Union[None, float, Sequence[float], Mapping[int, float]] = None,
                  removed_units: Iterable[int] = (),
                  kernel_choices: Optional[Mapping[int, int]] = None,
                  space: Optional[search_space.SearchSpace] = None,
                  input_shape: Optional[Sequence[int]] = None,
                  expansion_choices: Optional[Mapping[int, int]] = None) -> archspec.ArchSpec:
    """The child of `teacher` that these choices describe (deterministic).

    Args:
      teacher: the spec to shrink.
      width_multipliers: one number for every scalable unit, a sequence with one
        entry per unit of `units(teacher)` (entries of unscalable units are
        ignored), or a mapping unit index -> multiplier (missing: 1). In (0, 1].
        Identity blocks ignore theirs and follow their input (module docstring).
      removed_units: indices of removable units to drop.
      kernel_choices: unit index -> kernel, for conv/block/depthwise units, not above the teacher's.
      space: widths snap to `space.filters` (default `SearchSpace()`).
      input_shape: if given, the child's shapes are checked for it (raises `archspec.ShapeError`).
      expansion_choices: unit index -> expansion ratio, for inverted blocks, not above the teacher's.

    Raises:
      ValueError: a choice that is malformed or not allowed (growing width or
        kernel, removing the transition or the last conv/block unit, unknown unit).
      archspec.SpecError / ShapeError: the child is not a valid spec (for `input_shape`).
    """
    space = space or _DEFAULT_SPACE
    unit_list = units(teacher)
    multipliers = _multipliers_by_unit(width_multipliers, unit_list)
    removed = _check_removed(removed_units, unit_list)
    kernels = _check_kernels(kernel_choices or {}, unit_list)
    expansions = _check_expansions(expansion_choices or {}, unit_list)

    layers: List[archspec.Layer] = []
    channels = None          # channels entering the next unit in the child; None: the input image
    teacher_channels = None  # the same in the teacher
    for unit in unit_list:
        primary = unit.primary
        teacher_out = primary.out_filters
        if unit.index not in removed:
            multiplier = multipliers.get(unit.index, 1.0)
            layer = primary
            if unit.kind in (CONV, DENSE):
                layer = primary.replace(filters=scaled_width(primary.filters, multiplier, space))
            elif unit.kind == BLOCK:
                layer = _resize_block(primary, multiplier, channels, teacher_channels, space)
            if unit.index in kernels:
                layer = layer.replace(kernel=kernels[unit.index])
            if unit.index in expansions:
                layer = layer.replace(expansion=expansions[unit.index])
            layers.append(layer)
            layers.extend(teacher.layers[unit.start + 1:unit.stop])
            if layer.out_filters is not None:
                channels = layer.out_filters
        if teacher_out is not None:
            teacher_channels = teacher_out
    child = archspec.ArchSpec(layers)
    if input_shape is not None:
        child.output_shapes(input_shape)
    return child


def remove_unit(spec: archspec.ArchSpec, index: int, *, space: Optional[search_space.SearchSpace] = None,
                input_shape: Optional[Sequence[int]] = None) -> archspec.ArchSpec:
    """`spec` without unit `index` (identity blocks after it adapt; see the module docstring)."""
    return apply_choices(spec, removed_units=(index,), space=space, input_shape=input_shape)


def scale_widths(spec: archspec.ArchSpec, multipliers: Union[float, Sequence[float], Mapping[int, float]],
                 *, space: Optional[search_space.SearchSpace] = None) -> archspec.ArchSpec:
    """`spec` with widths scaled: one multiplier for all, per unit, or a mapping unit -> multiplier."""
    return apply_choices(spec, width_multipliers=multipliers, space=space)


def shrink_kernels(spec: archspec.ArchSpec, kernels: Mapping[int, int]) -> archspec.ArchSpec:
    """`spec` with the kernels of the given conv/block units replaced by smaller ones."""
    return apply_choices(spec, kernel_choices=kernels)


def _resize_block(layer: archspec.Layer, multiplier: float, channels: Optional[int],
                  teacher_channels: Optional[int], space: search_space.SearchSpace) -> archspec.Layer:
    if layer.has_residual(teacher_channels):
        if channels is None:
            if teacher_channels is None:
                return layer  # an identity block on the image: its width is the image's channels
        else:
            expansion = archspec.BOTTLENECK_EXPANSION if layer.kind in ("bottleneck", "bottleneck_v1") else 1
            width = channels // expansion
            if channels % expansion == 0 and width <= layer.filters and (
                    width == layer.filters or width in space.filters):
                return layer.replace(filters=width)
        # It cannot keep its input's width: a block with a shortcut field takes a projection, an
        # inverted block simply has no residual at its own width.
        changes = {"shortcut": "projection"} if layer.kind in archspec.BLOCKS else {}
        return layer.replace(filters=scaled_width(layer.filters, multiplier, space), **changes)
    return layer.replace(filters=scaled_width(layer.filters, multiplier, space))


def _multipliers_by_unit(width_multipliers, unit_list: Sequence[Unit]) -> Dict[int, float]:
    if width_multipliers is None:
        return {}
    if isinstance(width_multipliers, (int, float)) and not isinstance(width_multipliers, bool):
        out = {unit.index: float(width_multipliers) for unit in unit_list if unit.scalable}
    elif isinstance(width_multipliers, Mapping):
        out = {int(key): float(value) for key, value in width_multipliers.items()}
        bad = [key for key in out if not 0 <= key < len(unit_list) or not unit_list[key].scalable]
        if bad:
            raise ValueError(f"width multipliers given for units {sorted(bad)} which are not scalable units "
                             f"(scalable: {[u.index for u in unit_list if u.scalable]})")
    else:
        values = list(width_multipliers)
        if len(values) != len(unit_list):
            raise ValueError(f"expected one width multiplier per unit ({len(unit_list)}), got {len(values)}")
        out = {unit.index: float(value) for unit, value in zip(unit_list, values) if unit.scalable}
    for index, value in out.items():
        if not 0.0 < value <= 1.0:
            raise ValueError(f"unit {index}: a width multiplier must be in (0, 1] (a width never grows), "
                             f"got {value!r}")
    return out


def _check_removed(removed_units: Iterable[int], unit_list: Sequence[Unit]) -> frozenset:
    removed = frozenset(int(index) for index in removed_units)
    for index in sorted(removed):
        if not 0 <= index < len(unit_list):
            raise ValueError(f"unit {index} does not exist (the spec has {len(unit_list)} units)")
        if not unit_list[index].removable:
            raise ValueError(f"unit {index} ({unit_list[index].primary.kind}) cannot be removed")
    features = [unit.index for unit in unit_list if unit.kind in FEATURE_KINDS]
    if features and all(index in removed for index in features):
        raise ValueError("removing these units leaves no conv or block unit; keep at least one")
    return removed


def _check_kernels(kernel_choices: Mapping[int, int], unit_list: Sequence[Unit]) -> Dict[int, int]:
    return _check_shrinking(kernel_choices, unit_list, "kernel", lambda unit: unit.has_kernel,
                            "a conv, block or depthwise unit")


def _check_expansions(expansion_choices: Mapping[int, int], unit_list: Sequence[Unit]) -> Dict[int, int]:
    return _check_shrinking(expansion_choices, unit_list, "expansion", lambda unit: unit.primary.kind == "inverted",
                            "an inverted residual block")


def _check_shrinking(choices: Mapping[int, int], unit_list: Sequence[Unit], field: str, takes, what: str
                     ) -> Dict[int, int]:
    """unit -> value of `field`, checked: the unit takes the choice, and the value is in [1, the teacher's]."""
    out = {}
    for index, value in choices.items():
        index = int(index)
        if not 0 <= index < len(unit_list) or not takes(unit_list[index]):
            raise ValueError(f"unit {index} is not {what}; only those take {field} choices")
        teacher_value = getattr(unit_list[index].primary, field)
        if not isinstance(value, (int, np.integer)) or not 1 <= value <= teacher_value:
            raise ValueError(f"unit {index}: {field} must be an integer in [1, {teacher_value}] "
                             f"({field}s only shrink), got {value!r}")
        out[index] = int(value)
    return out


_DEFAULT_SPACE = search_space.SearchSpace()


# -- sampling ---------------------------------------------------------------------
def sample_children(teacher: archspec.ArchSpec, *, input_shape: Sequence[int], num_classes: int, count: int,
                    seed: int, space: Optional[search_space.SearchSpace] = None,
                    config: Optional[SamplerConfig] = None, exclude_hashes: Collection[str] = (),
                    allow_fewer: bool = False) -> List[archspec.ArchSpec]:
    """`count` distinct children of `teacher`, deterministic for `seed`.

    Every child is a valid spec with valid shapes for `input_shape`, inside
    `space`, strictly fewer parameters than the teacher, not the teacher and not
    in `exclude_hashes`.

    Raises:
      SamplerExhaustedError: fewer than `count` children were found within
        ``config.max_attempts_per_child * count + 100`` attempts (with
        `allow_fewer`, a warning is logged and the children found are returned).
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    space = space or _DEFAULT_SPACE.extended_for(teacher)
    config = config or SamplerConfig()
    teacher_params = teacher.count_params(input_shape, num_classes)
    plan = _Plan(teacher, space, config)
    rng = np.random.default_rng(seed)
    seen = set(exclude_hashes)
    seen.add(teacher.hash)
    children: List[archspec.ArchSpec] = []
    budget = config.max_attempts_per_child * count + 100
    attempts = 0
    while len(children) < count and attempts < budget:
        attempts += 1
        child = plan.draw(rng, teacher_params, input_shape, num_classes)
        if child is None or child.hash in seen:
            continue
        seen.add(child.hash)
        children.append(child)
    if len(children) < count:
        message = (f"found only {len(children)} of {count} distinct children of the teacher in {attempts} "
                   f"attempts (seed {seed}); the teacher may be too small to have that many children, or "
                   f"the sampler config too narrow")
        if not space.contains(teacher):
            try:
                space.check(teacher)
            except search_space.OutOfSearchSpaceError as error:
                message += f"; note the teacher itself is outside the search space ({error})"
        if not allow_fewer:
            raise SamplerExhaustedError(message)
        _LOG.warning(message)
    return children


class _Plan:
    """What the sampler precomputes about a teacher: units, options, groups."""

    def __init__(self, teacher: archspec.ArchSpec, space: search_space.SearchSpace, config: SamplerConfig):
        self.teacher = teacher
        self.space = space
        self.config = config
        self.units = units(teacher)
        self.removable = [u.index for u in self.units if u.removable]
        self.features = [u.index for u in self.units if u.kind in FEATURE_KINDS]
        self.scalable = [u.index for u in self.units if u.scalable]
        group_of = {}
        for number, group in enumerate(width_groups(teacher)):
            for index in group:
                group_of[index] = number
        self.group_of = [group_of[index] for index in self.scalable]
        self.num_groups = len(set(self.group_of))
        odd = sorted(k for k in space.kernels if k % 2 == 1)
        self.kernel_options = {}  # unit -> (options >= 3, pointwise option?)
        for unit in self.units:
            if unit.has_kernel and unit.primary.kernel > 1:
                kernel = unit.primary.kernel
                larger = tuple(k for k in odd if 3 <= k < kernel)
                self.kernel_options[unit.index] = (larger, 1 in space.kernels)
        # Smaller ratios, but not 1 below a larger one: that drops the expand convolution, and the
        # depthwise filters the child keeps would then have no teacher partner to inherit from.
        self.expansion_options = {unit.index: tuple(e for e in space.expansions if 1 < e < unit.primary.expansion)
                                  for unit in self.units if unit.primary.kind == "inverted"}
        self.expansion_options = {index: options for index, options in self.expansion_options.items() if options}
        self.log_grid = [math.log2(v) for v in config.width_grid]

    def _snap_log(self, value: float) -> int:
        """Index of the grid multiplier nearest (in log2) to 2**value."""
        grid = self.log_grid
        if value >= grid[-1]:
            return len(grid) - 1
        position = bisect.bisect_left(grid, value)
        if position == 0:
            return 0
        return position if grid[position] - value < value - grid[position - 1] else position - 1

    def draw(self, rng: np.random.Generator, teacher_params: int, input_shape, num_classes):
        config = self.config
        target = teacher_params / math.exp(rng.uniform(0.0, math.log(config.max_ratio)))
        removed = {index for index in self.removable if rng.random() < config.p_remove}
        if self.features and all(index in removed for index in self.features):
            removed.discard(self.features[int(rng.integers(len(self.features)))])
        kernels = {}
        for index, (larger, pointwise) in self.kernel_options.items():
            if index in removed:
                continue
            if larger:
                if rng.random() < config.p_kernel:
                    kernels[index] = int(larger[int(rng.integers(len(larger)))])
            elif pointwise and rng.random() < config.p_pointwise:
                kernels[index] = 1
        expansions = {}  # drawn only for teachers with inverted blocks: other teachers keep their children
        for index, options in self.expansion_options.items():
            if index not in removed and rng.random() < config.p_expansion:
                expansions[index] = int(options[int(rng.integers(len(options)))])
        if rng.random() < config.p_group_widths:
            group_jitter = rng.uniform(-config.width_jitter, config.width_jitter, self.num_groups)
            jitter = [float(group_jitter[g]) for g in self.group_of]
        else:
            jitter = [float(x) for x in rng.uniform(-config.width_jitter, config.width_jitter, len(self.scalable))]
        return self._fit(jitter, frozenset(removed), kernels, expansions, target, teacher_params, input_shape,
                         num_classes)

    def _fit(self, jitter, removed, kernels, expansions, target, teacher_params, input_shape, num_classes):
        """Bisects the global log2 width level so that the child's params approach `target`."""
        grid = self.config.width_grid
        cache = {}

        def evaluate(level):
            key = tuple(self._snap_log(level + e) for e in jitter)
            if key not in cache:
                multipliers = {index: grid[k] for index, k in zip(self.scalable, key)}
                try:
                    child = apply_choices(self.teacher, width_multipliers=multipliers, removed_units=removed,
                                          kernel_choices=kernels, space=self.space, expansion_choices=expansions)
                    params = child.count_params(input_shape, num_classes)
                except (archspec.SpecError, ValueError):
                    child, params = None, math.inf
                cache[key] = (params, child)
            return cache[key][0]

        low = self.log_grid[0] - self.config.width_jitter
        high = self.config.width_jitter
        evaluate(low)
        evaluate(high)
        for _ in range(self.config.bisection_steps):
            middle = 0.5 * (low + high)
            if evaluate(middle) > target:
                high = middle
            else:
                low = middle
        best = None
        for params, child in cache.values():
            if child is None or not params < teacher_params:
                continue
            distance = abs(math.log(params / target))
            if best is None or distance < best[0]:
                best = (distance, child)
        if best is None or not self.space.contains(best[1]):
            return None
        return best[1]


# -- reporting --------------------------------------------------------------------
def compression_ratio(teacher: archspec.ArchSpec, child: archspec.ArchSpec, input_shape: Sequence[int],
                      num_classes: int) -> float:
    """Teacher parameters / child parameters (exact counts, head included)."""
    return teacher.count_params(input_shape, num_classes) / child.count_params(input_shape, num_classes)


QUANTILES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)


def ratio_summary(teacher: archspec.ArchSpec, children: Sequence[archspec.ArchSpec], input_shape: Sequence[int],
                  num_classes: int) -> dict:
    """The distribution of compression ratios of `children` (JSON-ready).

    Returns a dict with ``count``, ``teacher_params``, ``min``, ``max``, ``mean_log2``,
    ``quantiles`` ({"q05": ..., "q50": ..., "q95": ...}), ``fraction_at_least``
    ({"2": ..., "10": ..., "100": ...}) and ``histogram``: a list of
    ``{"low": 2**k, "high": 2**(k+1), "count": n}`` log2 bins from 1 to past the
    maximum (ratios below 1 cannot happen for children; they would land in bin 0).
    """
    teacher_params = teacher.count_params(input_shape, num_classes)
    ratios = np.array([teacher_params / child.count_params(input_shape, num_classes) for child in children],
                      dtype=np.float64)
    summary = {"count": int(ratios.size), "teacher_params": int(teacher_params)}
    if ratios.size == 0:
        summary.update(min=None, max=None, mean_log2=None, quantiles={}, fraction_at_least={}, histogram=[])
        return summary
    summary["min"] = float(ratios.min())
    summary["max"] = float(ratios.max())
    summary["mean_log2"] = float(np.log2(ratios).mean())
    summary["quantiles"] = {f"q{round(q * 100):02d}": float(np.quantile(ratios, q)) for q in QUANTILES}
    summary["fraction_at_least"] = {str(t): float(np.mean(ratios >= t)) for t in (2, 10, 100)}
    bins = np.maximum(np.floor(np.log2(np.maximum(ratios, 1.0))).astype(int), 0)
    counts = np.bincount(bins, minlength=int(bins.max()) + 1)
    summary["histogram"] = [{"low": 2 ** k, "high": 2 ** (k + 1), "count": int(n)} for k, n in enumerate(counts)]
    return summary
