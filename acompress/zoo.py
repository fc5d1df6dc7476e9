"""Reference teacher architectures, by name, for any input shape.

``get(name, input_shape)`` returns an `archspec.ArchSpec`; the classifier head is
implicit (see `archspec`), so one spec serves every class count.

Members:

* ``digits_cnn``: the digits reference teacher. Conv3x3 64-64, 2x2 max-pool,
  128-128, max-pool, 256, global average pool; every convolution (with bias, the
  Keras default) is followed by batch norm and ReLU. With the 10-class head it has
  exactly 559,306 parameters on 8x8x1 inputs (the parameter count does not depend on
  the input size).
* ``cifar_cnn``: the CPU-sized CIFAR-10 reference teacher (``flags/cifar10_cpu.flags``).
  Conv3x3 32-32, max-pool, 64-64, max-pool, 128-128, max-pool, 256-256, global
  average pool, each convolution followed by batch norm and ReLU: 1,178,666
  parameters and 52 M multiply-adds at 32x32x3 with the 10-class head, small enough
  to train to ~85 % on 2 CPU cores in well under an hour.
* ``vgg11``, ``vgg13``, ``vgg16``, ``vgg19``: VGG configurations A, B, D and E in the
  form commonly trained on CIFAR (e.g. kuangliu/pytorch-cifar): each 3x3 convolution
  (with bias) followed by batch norm and ReLU, a 2x2 max-pool after each of the five
  stages, then global average pooling straight into the classifier; there are no
  4096-unit hidden dense layers (on 32x32 inputs the map is 1x1 after five pools, so
  the global pool is the plain flatten of the original).
* ``resnet18``, ``resnet34``: CIFAR-style ResNets. A 3x3 stride-1 convolution to 64
  channels (no bias: batch norm follows) + batch norm + ReLU, then basic blocks
  [2, 2, 2, 2] / [3, 4, 6, 3] at widths 64, 128, 256, 512 with stage strides 1, 2,
  2, 2, then global average pooling. The first block of a stage has a projection
  shortcut when its stride is not 1 or its width differs from its input's; the other
  blocks have identity shortcuts.

The small-input rule: a downsampling step (a 2x2 max-pool, or the stride 2 of a
ResNet stage) is applied only while the feature map is at least 2x2 in front of it.
Otherwise a pool is dropped, and a stage keeps stride 1 (its first block still gets a
projection shortcut when its width changes). On 32x32 inputs nothing changes; on 8x8
inputs the VGGs keep their first three pools and drop the last two, and ResNet-18/34
keep all strides (8 -> 4 -> 2 -> 1). With ``valid`` 2x2 pooling a 1-pixel map would
become empty, which is why the threshold is 2 and not 1; a stride-2 ``same``
convolution would run on a 1x1 map, but it would no longer downsample anything, so
it is made stride 1 by the same rule. The sizes follow the builder: a pool floors
(``valid``), a strided convolution rounds up (``same``); the smaller of height and
width decides.
"""

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from acompress import archspec

# VGG configurations from Simonyan & Zisserman (2015): widths per stage; a pool ends each stage.
_VGG_STAGES = {
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),              # A
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),       # B
    "vgg16": ((64, 64), (128, 128), (256,) * 3, (512,) * 3, (512,) * 3),       # D
    "vgg19": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),       # E
}
_RESNET_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
_RESNET_WIDTHS = (64, 128, 256, 512)
_RESNET_STRIDES = (1, 2, 2, 2)
# The smallest spec; asking it for output shapes validates an input shape.
_SHAPE_CHECK = archspec.ArchSpec([archspec.gap()])


class _Size:
    """Tracks the spatial size of the feature map to apply the small-input rule."""

    def __init__(self, input_shape: Sequence[int]):
        self.height, self.width = int(input_shape[0]), int(input_shape[1])

    def can_downsample(self) -> bool:
        return min(self.height, self.width) >= 2

    def pool(self) -> None:  # 2x2, stride 2, 'valid'
        self.height, self.width = self.height // 2, self.width // 2

    def stride(self) -> None:  # stride 2, 'same'
        self.height, self.width = math.ceil(self.height / 2), math.ceil(self.width / 2)


def _plain_cnn(stages: Sequence[Sequence[int]], input_shape: Sequence[int],
               pool_last_stage: bool = True) -> List[archspec.Layer]:
    """conv-BN-ReLU stages separated by 2x2 max-pools (small-input rule applied), then gap."""
    size = _Size(input_shape)
    layers = []
    for number, widths in enumerate(stages, start=1):
        for width in widths:
            layers.extend(archspec.conv_bn_act(width))
        if (number < len(stages) or pool_last_stage) and size.can_downsample():
            layers.append(archspec.maxpool(2))
            size.pool()
    layers.append(archspec.gap())
    return layers


def _digits_cnn(input_shape: Sequence[int]) -> archspec.ArchSpec:
    return archspec.ArchSpec(_plain_cnn(((64, 64), (128, 128), (256,)), input_shape, pool_last_stage=False))


def _cifar_cnn(input_shape: Sequence[int]) -> archspec.ArchSpec:
    stages = ((32, 32), (64, 64), (128, 128), (256, 256))
    return archspec.ArchSpec(_plain_cnn(stages, input_shape, pool_last_stage=False))


def _vgg(name: str) -> Callable[[Sequence[int]], archspec.ArchSpec]:
    def make(input_shape: Sequence[int]) -> archspec.ArchSpec:
        return archspec.ArchSpec(_plain_cnn(_VGG_STAGES[name], input_shape))
    return make


def _resnet(name: str) -> Callable[[Sequence[int]], archspec.ArchSpec]:
    def make(input_shape: Sequence[int]) -> archspec.ArchSpec:
        size = _Size(input_shape)
        layers = list(archspec.conv_bn_act(64, use_bias=False))
        channels = 64
        for blocks, width, stage_stride in zip(_RESNET_BLOCKS[name], _RESNET_WIDTHS, _RESNET_STRIDES):
            stride = 1
            if stage_stride == 2 and size.can_downsample():
                stride = 2
                size.stride()
            for number in range(blocks):
                block_stride = stride if number == 0 else 1
                shortcut = "projection" if block_stride != 1 or channels != width else "identity"
                layers.append(archspec.basic(width, stride=block_stride, shortcut=shortcut))
                channels = width
        layers.append(archspec.gap())
        return archspec.ArchSpec(layers)
    return make


_MEMBERS: Dict[str, Callable[[Sequence[int]], archspec.ArchSpec]] = {
    "digits_cnn": _digits_cnn,
    "cifar_cnn": _cifar_cnn,
    **{name: _vgg(name) for name in _VGG_STAGES},
    **{name: _resnet(name) for name in _RESNET_BLOCKS},
}


def names() -> Tuple[str, ...]:
    """The known teacher names, sorted."""
    return tuple(sorted(_MEMBERS))


def get(name: str, input_shape: Sequence[int], num_classes: Optional[int] = None) -> archspec.ArchSpec:
    """The named teacher's spec for `input_shape` (height, width, channels).

    Args:
      name: one of `names()`.
      input_shape: the input of one example; small inputs drop downsampling steps
        (see the module docstring).
      num_classes: optional; when given, it is checked (an integer >= 2) together
        with the input shape by computing the exact parameter count.

    Raises:
      ValueError: unknown name (the message lists the known ones).
      archspec.ShapeError: `input_shape` is not (height, width, channels) of
        positive integers.
      archspec.SpecError: `num_classes` is given and is not an integer >= 2.
    """
    if name not in _MEMBERS:
        raise ValueError(f"unknown teacher {name!r}; known teachers: {', '.join(names())}")
    input_shape = tuple(int(d) if hasattr(d, "__index__") and not isinstance(d, bool) else d
                        for d in input_shape)
    _SHAPE_CHECK.output_shapes(input_shape)  # archspec's input-shape errors before any arithmetic
    spec = _MEMBERS[name](input_shape)
    if num_classes is None:
        spec.output_shapes(input_shape)
    else:
        spec.count_params(input_shape, num_classes)
    return spec
