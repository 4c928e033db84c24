"""Task-weighting methods: how λ is learned, and the name -> method registry.

`config.automl.method` names one; each is one module of this package:

- `lookahead` (default): the paper's Algorithm 1 (Kim, Lee & Suh 2019), the
  exact first-order hypergradient of the validation loss after one lookahead
  step (or Algorithm 1 literally with `automl.mode=naive`);
- `uncertainty`: homoscedastic uncertainty weighting (Kendall, Gal & Cipolla
  2018), λ_i = exp(−s_i) with a learned log-variance s_i;
- `gradnorm`: gradient normalisation (Chen et al. 2018) at the trunk's last
  layer with weights;
- `auto_lambda`: the lookahead's hypergradient by the finite difference of
  Auto-Lambda (Liu, Liu & Davison 2022).

Adding a method is one new module here: a `WeightingMethod` subclass decorated
with `@register_method` (see `base.py`). docs/weighting.md has the equations.
"""

import importlib
import pkgutil

from robust_ssl.errors import ConfigError
from robust_ssl.weighting.base import REGISTRY, WeightingMethod, register_method

DEFAULT_METHOD = "lookahead"
_NOT_METHODS = ("base",)


def _discover():
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _NOT_METHODS and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_discover()
METHODS = REGISTRY  # the live registry


def make_method(name=DEFAULT_METHOD, options=None):
    """The method `name` with `options`.

    Args:
      name: a key of `METHODS`.
      options: dict of the method's options (defaults for the rest).

    Returns:
      A `WeightingMethod`.

    Raises:
      ConfigError: an unknown name or option.
    """
    if name not in METHODS:
        raise ConfigError(f"automl.method must be one of {', '.join(METHODS)}; got {name!r}")
    return METHODS[name](**dict(options or {}))


def method_options(automl, name):
    """The options of method `name` in `config.automl` (none where the config has no such node)."""
    options = automl.get("method_options", None)
    if options is None or name not in options:
        return {}
    return dict(options[name])


def check_config(config, lambdas):
    """Checks `config.automl.method`, its options and the initial λ it starts from.

    Args:
      config: the experiment ConfigDict (AutoML enabled).
      lambdas: the initial λ, one per task of `config.tasks`
        (`config_utils.task_lambdas`, passed in so this package need not
        import the config helpers that import it).

    Raises:
      ConfigError: an unknown method or option, a bad option value, or a λ the
        method cannot start from.
    """
    from robust_ssl.tasks import parse_task_names

    name = config.automl.get("method", DEFAULT_METHOD)
    method = make_method(name, method_options(config.automl, name))
    method.check_lambdas(parse_task_names(config.tasks), lambdas)


__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "WeightingMethod",
    "check_config",
    "make_method",
    "method_options",
    "register_method",
]
