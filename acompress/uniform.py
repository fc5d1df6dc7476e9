"""Uniform width scaling: the teacher with every width times one multiplier.

The simplest baseline (``uniform`` of `baselines`): no search and no budget.
`uniform_width_scaling` finds the largest alpha whose scaled teacher is at least
`target_ratio` times smaller; `baselines.run_baseline` trains it as the single
finalist.
"""

import dataclasses
import math
from typing import Optional, Sequence

from acompress import archspec
from acompress import sampler
from acompress import search_space

MIN_ALPHA = 2.0 ** -12


@dataclasses.dataclass(frozen=True)
class UniformScaling:
    """The teacher with every width times `alpha`.

    Attributes:
      alpha: the multiplier (`sampler.apply_choices` with one number for every unit).
      spec: the scaled network.
      params: its exact parameter count.
      ratio: teacher params / params.
      target_ratio: the ratio asked for.
      reached: whether ``ratio >= target_ratio`` (False: even the narrowest widths
        of the search space do not get there; `spec` is then the narrowest).
    """

    alpha: float
    spec: archspec.ArchSpec
    params: int
    ratio: float
    target_ratio: float
    reached: bool


def uniform_width_scaling(teacher: archspec.ArchSpec, input_shape: Sequence[int], num_classes: int, *,
                          target_ratio: float, space: Optional[search_space.SearchSpace] = None,
                          steps: int = 40) -> UniformScaling:
    """The largest alpha whose uniformly scaled teacher is at least `target_ratio` times smaller.

    Widths are ``space.snap_width(width * alpha)``, never above the teacher's (the
    sampler's width mapping, identity blocks following their input), so the
    parameter count is a non-increasing step function of alpha; bisection on
    log2(alpha) over [2^-12, 1] finds the step.
    """
    if not target_ratio >= 1:
        raise ValueError(f"target_ratio must be >= 1, got {target_ratio}")
    teacher_params = teacher.count_params(input_shape, num_classes)
    target = teacher_params / target_ratio

    def scaled(alpha):
        spec = sampler.apply_choices(teacher, width_multipliers=alpha, space=space, input_shape=input_shape)
        return spec, spec.count_params(input_shape, num_classes)

    def result(alpha, spec, params):
        ratio = teacher_params / params
        return UniformScaling(alpha, spec, params, ratio, target_ratio, ratio >= target_ratio * (1 - 1e-12))

    spec, params = scaled(1.0)
    if params <= target:
        return result(1.0, spec, params)
    low_spec, low_params = scaled(MIN_ALPHA)
    if low_params > target:
        return result(MIN_ALPHA, low_spec, low_params)
    low, high = math.log2(MIN_ALPHA), 0.0  # params(2^low) <= target < params(2^high)
    for _ in range(steps):
        middle = 0.5 * (low + high)
        middle_spec, middle_params = scaled(2.0 ** middle)
        if middle_params <= target:
            low, low_spec, low_params = middle, middle_spec, middle_params
        else:
            high = middle
    return result(2.0 ** low, low_spec, low_params)
