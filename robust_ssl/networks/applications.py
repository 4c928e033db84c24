"""`keras.applications` models as backbones, built untrained at any image size.

Inputs arrive in [0, 1]. The wrapper rescales them to what the model expects
when trained from scratch: [-1, 1] for most (the WideResNet's range too), with
the model's own preprocessing switched off where it has a switch
(`include_preprocessing=False`: ConvNeXt, EfficientNetV2, MobileNetV3); the
EfficientNet B0–B7 models always rescale and normalise inside, so they get
[0, 255].
"""

import inspect

import keras
from keras import layers

# Models that normalise [0, 255] inputs inside and have no switch for it.
_TAKES_0_255 = ("EfficientNetB",)


def application_names():
    """Names of the `keras.applications` model constructors (e.g. "ResNet50V2")."""
    return sorted(
        n for n in dir(keras.applications) if n[:1].isupper() and callable(getattr(keras.applications, n))
    )


def is_application(name):
    """Whether `name` is a `keras.applications` model constructor."""
    return isinstance(name, str) and name in application_names()


def build_application(application, image_shape, name="trunk"):
    """Builds `keras.applications.<application>` as a feature extractor.

    Args:
      application: constructor name, e.g. "ResNet50V2", "MobileNetV3Small".
      image_shape: (H, W, C) of the inputs, values in [0, 1].
      name: Keras model name of the wrapper.

    Returns:
      A `keras.Model` mapping [N, H, W, C] images to [N, F] pooled features.

    Raises:
      ValueError: the model cannot take this image size (one line).
    """
    constructor = getattr(keras.applications, application)
    kwargs = {"weights": None, "include_top": False, "pooling": "avg", "input_shape": tuple(image_shape)}
    if "include_preprocessing" in inspect.signature(constructor).parameters:
        kwargs["include_preprocessing"] = False
    try:
        network = constructor(**kwargs)
    except ValueError as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"backbone {application} cannot take {image_shape[0]}x{image_shape[1]} images: {first_line}"
        ) from None
    inputs = keras.Input(shape=tuple(image_shape), name="image")
    if application.startswith(_TAKES_0_255):
        scaled = layers.Rescaling(255.0, name="to_0_255")(inputs)
    else:
        scaled = layers.Rescaling(2.0, offset=-1.0, name="to_pm1")(inputs)
    return keras.Model(inputs, network(scaled), name=name)
