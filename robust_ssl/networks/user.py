"""A user's own backbone: "module.path:function", called as function(image_shape)."""

import importlib

import keras


def is_user_function(name):
    """Whether `name` has the "module.path:function" form."""
    return isinstance(name, str) and name.count(":") == 1 and all(name.split(":"))


def build_user_backbone(spec_name, image_shape, name="trunk", check_only=False):
    """Imports and calls a user's backbone function.

    Args:
      spec_name: "module.path:function"; the function takes (H, W, C) and
        returns a `keras.Model` from [N, H, W, C] images in [0, 1] to [N, F].
      image_shape: (H, W, C) of the inputs.
      name: Keras model name given to the result's wrapper.
      check_only: only import and look the function up.

    Returns:
      A `keras.Model` of [N, F] features (None with check_only).

    Raises:
      ValueError: the module or function is missing, or the result is not a
        model with a feature vector output (one line).
    """
    module_name, function_name = spec_name.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"backbone {spec_name!r}: cannot import {module_name!r} ({e})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ValueError(f"backbone {spec_name!r}: {module_name} has no function {function_name!r}")
    if check_only:
        return None
    network = function(tuple(image_shape))
    if not isinstance(network, keras.Model):
        raise ValueError(f"backbone {spec_name!r} returned {type(network).__name__}, not a keras.Model")
    inputs = keras.Input(shape=tuple(image_shape), name="image")
    features = network(inputs)
    if len(features.shape) != 2:
        raise ValueError(
            f"backbone {spec_name!r} must return [N, F] features; got shape {tuple(features.shape)} "
            f"(add pooling, e.g. keras.layers.GlobalAveragePooling2D)"
        )
    return keras.Model(inputs, features, name=name)
