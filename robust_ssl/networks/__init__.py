"""Networks: the backbones (feature extractors) and the task heads.

A backbone maps images in [0, 1] of shape (H, W, C) to a feature vector. It is
named by a spec that is saved with the model, so that every tool rebuilds it:

- `{"name": "wrn", "depth": 40, "width": 2, "dropout": 0.0}`: the WideResNet of
  the paper (`wide_resnet.py`);
- `{"name": "ResNet50V2"}`: any `keras.applications` model, built untrained
  (`weights=None, include_top=False, pooling="avg"`) at the data's image size
  (`applications.py`);
- `{"name": "my_package.my_module:my_backbone"}`: a function of the user's,
  `my_backbone(image_shape) -> keras.Model` returning [N, F] features. It must
  be importable wherever the model is loaded.

`stateless(layer)` runs a network without moving its batch-norm statistics
(the model's extra forwards, the heads in a lookahead, test-time adaptation);
`all_layers` walks nested models' layers.
"""

from robust_ssl.networks.applications import build_application, is_application
from robust_ssl.networks.heads import decoder_plan, deconv_decoder, linear_head
from robust_ssl.networks.user import build_user_backbone, is_user_function
from robust_ssl.networks.wide_resnet import build_wide_resnet, check_depth

WRN = "wrn"


def backbone_spec(name=WRN, depth=40, width=2, dropout=0.0):
    """The saved form of a backbone choice (see the module docstring).

    Args:
      name: "wrn", a `keras.applications` model name, or "module:function".
      depth, width, dropout: WideResNet settings (used by "wrn" only).

    Returns:
      A JSON-safe dict.
    """
    if name == WRN:
        return {"name": WRN, "depth": depth, "width": width, "dropout": float(dropout)}
    return {"name": str(name)}


def describe(spec):
    """A short human name of a backbone spec, e.g. "WRN-40-2" or "ResNet50V2"."""
    if spec["name"] == WRN:
        return f"WRN-{spec['depth']}-{spec['width']}"
    return spec["name"]


def check_backbone(spec):
    """Raises ValueError with one line unless the spec names a buildable backbone.

    Cheap: it does not build anything (a user function is imported, not called).
    """
    name = spec.get("name")
    if name == WRN:
        check_depth(spec.get("depth"))
        if not isinstance(spec.get("width"), int) or spec["width"] < 1:
            raise ValueError(f"WideResNet width must be an integer >= 1; got {spec.get('width')!r}")
        return
    if is_user_function(name):
        build_user_backbone(name, None, check_only=True)
        return
    if not is_application(name):
        raise ValueError(
            f"unknown backbone {name!r}: use 'wrn', a keras.applications model name "
            f"(e.g. ResNet50V2, MobileNetV3Small, EfficientNetV2B0) or 'module.path:function'"
        )


def build_backbone(spec, image_shape, name="trunk"):
    """Builds the backbone a spec names for images of `image_shape`.

    Args:
      spec: a dict from `backbone_spec`.
      image_shape: (H, W, C) of the inputs (values in [0, 1]).
      name: Keras model name.

    Returns:
      A `keras.Model` mapping [N, H, W, C] images to [N, F] features.

    Raises:
      ValueError: an unknown backbone or one that cannot take this image size.
    """
    check_backbone(spec)
    if spec["name"] == WRN:
        return build_wide_resnet(spec["depth"], spec["width"], spec["dropout"], tuple(image_shape), name=name)
    if is_user_function(spec["name"]):
        return build_user_backbone(spec["name"], tuple(image_shape), name=name)
    return build_application(spec["name"], tuple(image_shape), name=name)


def stateless(layer):
    """Wraps a layer as a callable that discards its state updates (BN statistics).

    Args:
      layer: a built Keras layer or model.

    Returns:
      `call(inputs, training=False)`: the layer's outputs, computed with
      `stateless_call` on its current variables; its moving statistics stay
      as they are.
    """

    def call(inputs, training=False):
        outputs, _ = layer.stateless_call(
            [v.value for v in layer.trainable_variables],
            [v.value for v in layer.non_trainable_variables],
            inputs,
            training=training,
        )
        return outputs

    return call


def all_layers(models):
    """Every layer of `models`, nested models' layers included.

    Args:
      models: Keras models (or layers with `layers`).

    Yields:
      Each layer, a nested model before its own layers.
    """
    for model in models:
        for layer in model.layers:
            yield layer
            if hasattr(layer, "layers"):
                yield from all_layers([layer])


__all__ = [
    "all_layers",
    "backbone_spec",
    "build_backbone",
    "check_backbone",
    "decoder_plan",
    "deconv_decoder",
    "describe",
    "linear_head",
    "stateless",
]
