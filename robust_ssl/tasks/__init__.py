"""Auxiliary objectives and the name -> task registry.

Adding a task is one new module in this package: a `Task` subclass decorated
with `@register_task` (see `base.py`). Every module here is imported when the
package is, so the registry (`TASKS`) holds every task, ordered by each
class's `order` (the paper's Table 1 first), then by name.
"""

import importlib
import pkgutil

from robust_ssl.errors import ConfigError
from robust_ssl.tasks.base import REGISTRY, Forward, Task, register_task

# Modules of this package that hold shared code, not tasks.
_NOT_TASKS = ("base", "image_ops")


def _discover():
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _NOT_TASKS and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_discover()
TASKS = REGISTRY  # the live registry: a task registered later appears here too


def parse_task_names(spec):
    """Parses "rotation,color" (or a list) into a tuple of known task names.

    Raises:
      ConfigError: on an unknown or repeated name.
    """
    if isinstance(spec, str):
        names = [n.strip() for n in spec.split(",") if n.strip()]
    else:
        names = list(spec or ())
    for name in names:
        if name not in TASKS:
            raise ConfigError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"task listed twice in {names}")
    return tuple(names)


def make_tasks(names, options=None):
    """Instantiates tasks by name.

    Args:
      names: task names (see `TASKS`).
      options: optional mapping name -> dict of that task's options.

    Returns:
      A list of `Task` objects in the given order.
    """
    options = options or {}
    return [TASKS[name](**dict(options.get(name, {}))) for name in parse_task_names(names)]


def self_supervised_task_names():
    """Names of the tasks that own a prediction head (`uses_classifier` False).

    These are the paper's kind of auxiliary task; objectives on the main
    classifier (AugMix consistency) are left out.
    """
    return [name for name, cls in TASKS.items() if not cls.uses_classifier]


def probe_task_names():
    """Names of the tasks with transformation probes (`Task.probe_classes` > 0)."""
    return [name for name, cls in TASKS.items() if cls.probe_classes]


__all__ = [
    "TASKS",
    "Forward",
    "Task",
    "make_tasks",
    "parse_task_names",
    "probe_task_names",
    "register_task",
    "self_supervised_task_names",
]
