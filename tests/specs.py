"""Specs shared by the tests: the digits teacher and one spec per feature."""

from acompress import archspec as a

DIGITS_SHAPE = (8, 8, 1)
CIFAR_SHAPE = (32, 32, 3)


def digits_teacher() -> a.ArchSpec:
    return a.ArchSpec([a.conv_bn_act(64), a.conv_bn_act(64), a.maxpool(), a.conv_bn_act(128),
                       a.conv_bn_act(128), a.maxpool(), a.conv_bn_act(256), a.gap()])


def vgg_like() -> a.ArchSpec:
    return a.ArchSpec([a.conv(32, 5, padding="valid"), a.act("elu"), a.avgpool(2),
                       a.conv(64, use_bias=False), a.bn(), a.act("relu6"), a.maxpool(3, 2, "same"),
                       a.flatten(), a.dense(128), a.act("tanh"), a.dropout(0.3), a.dense(64, False),
                       a.bn(), a.act("gelu")])


def residual() -> a.ArchSpec:
    return a.ArchSpec([a.conv_bn_act(16), a.basic(16), a.basic(32, stride=2), a.bottleneck(8),
                       a.bottleneck(16, stride=2), a.basic(64, shortcut="projection"), a.gmp()])


def mobilenet_like() -> a.ArchSpec:
    """MobileNetV2 in small: a stem, inverted blocks with and without residuals, a 1x1 head conv."""
    return a.ArchSpec([a.conv(16, 3, 2, use_bias=False), a.bn(), a.act("relu6"),
                       a.inverted(8, expansion=1), a.inverted(12, stride=2), a.inverted(12), a.inverted(16, stride=2),
                       a.inverted(16), a.inverted(16), a.conv(64, 1, use_bias=False), a.bn(), a.act("relu6"),
                       a.gap()])


def resnet_v1_like() -> a.ArchSpec:
    """Keras' ResNet50 in small: the padded stem and v1 bottlenecks."""
    return a.ArchSpec([a.conv(16, 7, 2, padding=3), a.bn(), a.act(), a.maxpool(3, 2, padding=1),
                       a.bottleneck_v1(8, shortcut="projection"), a.bottleneck_v1(8), a.bottleneck_v1(16, stride=2),
                       a.bottleneck_v1(16), a.gap()])


def separable_like() -> a.ArchSpec:
    return a.ArchSpec([a.conv_bn_act(16), a.sepconv(32, 3, 2), a.bn(), a.act("swish"), a.dwconv(3), a.bn(),
                       a.act("hard_swish"), a.sepconv(32, 5), a.bn(), a.act(), a.gap()])


def all_specs():
    return {"digits_teacher": digits_teacher(), "vgg_like": vgg_like(), "residual": residual(),
            "mobilenet_like": mobilenet_like(), "resnet_v1_like": resnet_v1_like(),
            "separable_like": separable_like()}
