"""Task heads of Appendix A.1 of the paper.

Every head maps the trunk's feature vector to a task's prediction. The
reconstruction-type decoders follow the authors' code: a Linear(F, 128) + ReLU,
a reshape to 1x1x128, then a stack of 4x4 transposed convolutions (stride 1 and
padding 0 first, then stride 2 and padding 1, which Keras writes as `"same"`).
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


def deconv_decoder(feature_dim, channels, out_channels, activation, name):
    """Transposed-convolution decoder from a feature vector to an image.

    The spatial size starts at 1x1, becomes 4x4 after the first layer and then
    doubles with each further layer: `len(channels) + 1` layers give
    4 * 2**len(channels) pixels (32 for the paper's (256, 128, 64)).

    Args:
      feature_dim: size of the trunk's feature vector.
      channels: channels of the hidden transposed convolutions, e.g. (256, 128, 64).
      out_channels: channels of the output (3 for RGB, 64 for colour logits).
      activation: final activation (`"sigmoid"` for images, None for logits).
      name: model name.

    Returns:
      A built `keras.Sequential` mapping [N, feature_dim] to [N, S, S, out_channels].
    """
    stack = [
        keras.Input(shape=(feature_dim,)),
        layers.Dense(128, activation="relu", name="fc"),
        layers.Reshape((1, 1, 128)),
    ]
    for i, filters in enumerate(channels):
        stack += [
            layers.Conv2DTranspose(
                filters,
                4,
                strides=1 if i == 0 else 2,
                padding="valid" if i == 0 else "same",
                use_bias=False,
                name=f"deconv{i + 1}",
            ),
            layers.BatchNormalization(momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=f"bn{i + 1}"),
            layers.ReLU(),
        ]
    stack.append(
        layers.Conv2DTranspose(out_channels, 4, strides=2, padding="same", name=f"deconv{len(channels) + 1}")
    )
    if activation:
        stack.append(layers.Activation(activation))
    return keras.Sequential(stack, name=name)
