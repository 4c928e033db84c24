"""Self-supervision tasks and the name -> task registry.

Adding a task = one module with a `Task` subclass plus one line in `TASKS`.
"""

from robust_ssl.errors import ConfigError
from robust_ssl.tasks.base import Task
from robust_ssl.tasks.color import ColorTask
from robust_ssl.tasks.inpaint import InpaintTask
from robust_ssl.tasks.permutation import JigsawTask, RGBGuessTask
from robust_ssl.tasks.reconstruction import DeblurTask, ReconstructionTask
from robust_ssl.tasks.rotation import RotationTask

# In the order of the paper's Table 1.
TASKS = {
    task.name: task
    for task in (
        RotationTask,
        ColorTask,
        ReconstructionTask,
        DeblurTask,
        InpaintTask,
        RGBGuessTask,
        JigsawTask,
    )
}


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


__all__ = ["TASKS", "Task", "make_tasks", "parse_task_names"]
