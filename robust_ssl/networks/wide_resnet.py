"""Wide residual network trunk (Zagoruyko & Komodakis, 2016).

The layout follows the WRN used by Hendrycks et al. and by the reference code of
the paper: a 3x3 stem with 16 channels, three groups of pre-activation basic
blocks with 16k, 32k and 64k channels, then BN-ReLU and global average pooling.
WRN-40-2 therefore maps a 32x32x3 image to a 128-d feature vector; being fully
convolutional with global pooling, it takes any image size.
"""

import keras
from keras import layers

# PyTorch's BatchNorm2d defaults (momentum 0.1 there == 0.9 here, eps 1e-5).
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


def _conv(filters, kernel_size, strides, name):
    # He-normal fan-out initialisation, as the reference WRN.
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal"),
        name=name,
    )


def _bn(name):
    return layers.BatchNormalization(momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=name)


def _basic_block(x, filters, strides, dropout, name):
    """Pre-activation basic block; a 1x1 projection where the shape changes."""
    in_filters = x.shape[-1]
    pre = layers.ReLU(name=f"{name}_relu1")(_bn(f"{name}_bn1")(x))
    if in_filters == filters and strides == 1:
        shortcut = x
    else:
        # As in the reference, the projection sees the pre-activated input.
        shortcut = _conv(filters, 1, strides, f"{name}_proj")(pre)
    out = _conv(filters, 3, strides, f"{name}_conv1")(pre)
    out = layers.ReLU(name=f"{name}_relu2")(_bn(f"{name}_bn2")(out))
    if dropout > 0:
        out = layers.Dropout(dropout, name=f"{name}_dropout")(out)
    out = _conv(filters, 3, 1, f"{name}_conv2")(out)
    return layers.Add(name=f"{name}_add")([shortcut, out])


def check_depth(depth):
    """Raises ValueError unless depth = 6n + 4 with n >= 1."""
    if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6 != 0:
        raise ValueError(f"WideResNet depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, …); got {depth!r}")


def build_wide_resnet(depth=40, width=2, dropout=0.0, input_shape=(32, 32, 3), name=None):
    """Builds the WRN trunk as a functional Keras model.

    Inputs are images in [0, 1]; the model rescales them to [-1, 1] itself (the
    reference code's `x * 2 - 1`), so every caller feeds the same range.

    Args:
      depth: total depth, 6n + 4 (40 for the paper's WRN-40-2).
      width: widening factor k.
      dropout: dropout rate inside each block (0 in the paper).
      input_shape: image shape (H, W, C).
      name: model name; defaults to `wrn_<depth>_<width>`.

    Returns:
      A `keras.Model` mapping [N, H, W, C] images to [N, 64 * width] features.
    """
    check_depth(depth)
    if width < 1:
        raise ValueError(f"WideResNet width must be >= 1; got {width!r}")
    blocks_per_group = (depth - 4) // 6
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(2.0, offset=-1.0, name="to_pm1")(inputs)
    x = _conv(16, 3, 1, "stem_conv")(x)
    for group, (filters, strides) in enumerate(zip((16 * width, 32 * width, 64 * width), (1, 2, 2))):
        for block in range(blocks_per_group):
            x = _basic_block(
                x,
                filters,
                strides if block == 0 else 1,
                dropout,
                name=f"group{group + 1}_block{block + 1}",
            )
    x = layers.ReLU(name="final_relu")(_bn("final_bn")(x))
    features = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, features, name=name or f"wrn_{depth}_{width}")
