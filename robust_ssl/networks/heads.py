"""Task heads of Appendix A.1 of the paper.

Every head maps the trunk's feature vector to a task's prediction. The
reconstruction-type decoders follow the authors' code: a Linear(F, 128) + ReLU,
a reshape to 1x1x128, then a stack of 4x4 transposed convolutions (stride 1 and
padding 0 first, then stride 2 and padding 1, which Keras writes as `"same"`);
they are sized from the output, so other image sizes get deeper or shallower
decoders (`decoder_plan`).
"""

import keras
from keras import layers

_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


def linear_head(feature_dim, num_outputs, name):
    """FC(feature_dim, num_outputs) head producing logits.

    Args:
      feature_dim: size of the trunk's feature vector.
      num_outputs: number of classes of the task.
      name: model name.

    Returns:
      A built `keras.Sequential`.
    """
    return keras.Sequential(
        [keras.Input(shape=(feature_dim,)), layers.Dense(num_outputs, name="fc")], name=name
    )


def decoder_plan(height, width):
    """The start size and number of doublings of a decoder to (height, width).

    The decoder grows a 1x1 map to (h0, w0) with one stride-1 transposed
    convolution, then doubles it k times: (height, width) = (h0, w0) * 2**k,
    with the largest k that keeps h0, w0 >= 4 (32 -> 4x4 and 3 doublings, the
    paper's decoder; 64 -> 4 doublings; 224 -> 7x7 and 5 doublings).

    Args:
      height, width: output size in pixels.

    Returns:
      ((h0, w0), k) with k >= 1.

    Raises:
      ValueError: a size the decoder cannot reach (odd, or below 8 pixels).
    """
    k = 0
    while all(size % 2 ** (k + 1) == 0 and size // 2 ** (k + 1) >= 4 for size in (height, width)):
        k += 1
    if k < 1:
        raise ValueError(f"a decoder head needs even image sides of at least 8 pixels; got {height}x{width}")
    return (height // 2**k, width // 2**k), k


def deconv_decoder(feature_dim, output_shape, activation, name, widest=256):
    """Transposed-convolution decoder from a feature vector to an image.

    A Linear(F, 128) + ReLU, a reshape to 1x1x128, a stride-1 transposed
    convolution to (h0, w0), then stride-2 transposed convolutions (4x4,
    "same") that double the size up to `output_shape` (see `decoder_plan`).
    The hidden layers have `widest`, widest/2, … channels (at least 16); at
    32x32 with widest=256 this is exactly the paper's (256, 128, 64) decoder,
    and an 8x8 output with widest=64 is its inpainting head.

    Args:
      feature_dim: size of the trunk's feature vector.
      output_shape: (H, W, C) of the output (C = 3 for RGB, 64 for colour logits).
      activation: final activation (`"sigmoid"` for images, None for logits).
      name: model name.
      widest: channels of the first hidden layer.

    Returns:
      A built `keras.Sequential` mapping [N, feature_dim] to [N, H, W, C].
    """
    height, width, out_channels = output_shape
    (h0, w0), doublings = decoder_plan(height, width)
    stack = [
        keras.Input(shape=(feature_dim,)),
        layers.Dense(128, activation="relu", name="fc"),
        layers.Reshape((1, 1, 128)),
    ]
    for i in range(doublings):
        stack += [
            layers.Conv2DTranspose(
                max(widest // 2**i, 16),
                (h0, w0) if i == 0 else 4,
                strides=1 if i == 0 else 2,
                padding="valid" if i == 0 else "same",
                use_bias=False,
                name=f"deconv{i + 1}",
            ),
            layers.BatchNormalization(momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=f"bn{i + 1}"),
            layers.ReLU(),
        ]
    stack.append(
        layers.Conv2DTranspose(out_channels, 4, strides=2, padding="same", name=f"deconv{doublings + 1}")
    )
    if activation:
        stack.append(layers.Activation(activation))
    return keras.Sequential(stack, name=name)
