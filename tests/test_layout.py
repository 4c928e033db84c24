"""The package's layout: every module imports on its own, imports form no cycle, no
TensorFlow or Keras internals outside the FLOP counter, no task named outside the tasks,
no module over `MAX_LINES` lines but those allowed by name.

All but the first test read the sources with `ast` (no import); the first imports
every module, each after the others are forgotten, in one fresh process.
"""

import ast
import json
import os
import pathlib
import subprocess
import sys

from conftest import REPO

import robust_ssl

PACKAGE = pathlib.Path(robust_ssl.__file__).parent
# The one module allowed TensorFlow internals (see its docstring).
FLOP_COUNTER = PACKAGE / "bench" / "flops.py"
# Where task names belong: the tasks themselves and the experiment configs.
TASK_NAMES_ALLOWED = (PACKAGE / "tasks", PACKAGE / "configs")
# A module is cut at its seams before it grows past this many lines.
MAX_LINES = 500
# The modules allowed to be longer. One "to cut" leaves the list when it is cut
# (the test fails while a listed module is short enough).
LONG_MODULES_ALLOWED = {
    "robust_ssl.data.corruptions",  # its tables: every corruption's parameters at five severities
}


def module_name(path):
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


SOURCES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in SOURCES.items()}

# Imports each module after every robust_ssl module (and the absl flags the
# commands define) is forgotten: an import that works only after another
# module was imported first fails here. Third-party modules (TensorFlow…) stay
# loaded, which keeps this to seconds.
IMPORT_EACH = r"""
import importlib, json, sys, traceback
from absl import flags

names = json.loads(sys.argv[1])
defined = set(flags.FLAGS)
failures = {}
for name in names:
    for loaded in [m for m in sys.modules if m == "robust_ssl" or m.startswith("robust_ssl.")]:
        del sys.modules[loaded]
    for flag in set(flags.FLAGS) - defined:
        delattr(flags.FLAGS, flag)
    try:
        importlib.import_module(name)
    except BaseException:
        failures[name] = traceback.format_exc(limit=-3)
print(json.dumps(failures))
"""


def test_every_module_imports_on_its_own():
    names = [n for n in SOURCES if not n.endswith(".__main__")]  # __main__ runs the command line
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(PACKAGE.parent)}
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH, json.dumps(names)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    failures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not failures, "\n".join(f"{name}:\n{trace}" for name, trace in failures.items())


def imported_modules(name, tree):
    """The robust_ssl modules `name` imports, at its top or inside functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from package import module` imports the module; `from module import name` the module.
            found.update(
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in SOURCES else node.module
                for alias in node.names
            )
    modules = set()
    for target in found:
        while target and target not in SOURCES:
            target = target.rpartition(".")[0]
        if target and target != name:
            modules.add(target)
    return modules


def test_imports_form_no_cycle():
    graph = {name: imported_modules(name, tree) for name, tree in TREES.items()}
    state, cycles = {}, []

    def visit(name, path):
        state[name] = "open"
        for other in sorted(graph[name]):
            if state.get(other) == "open":
                cycles.append(" -> ".join([*path[path.index(other) :], other]))
            elif other not in state:
                visit(other, [*path, other])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def private_uses(tree):
    """`x._name` (x not self or cls) and getattr(x, "_name") in a module: TF or Keras private API."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                yield node.lineno, ast.unparse(node)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr")
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and str(node.args[1].value).startswith("_")
        ):
            yield node.lineno, ast.unparse(node)


def test_only_the_flop_counter_uses_internals():
    offenders = []
    for name, path in SOURCES.items():
        if path == FLOP_COUNTER:
            continue
        text = path.read_text()
        offenders += [f"{name}: {word}" for word in ("tensorflow.python", "keras.src") if word in text]
        offenders += [f"{name}:{line}: {code}" for line, code in private_uses(TREES[name])]
    assert not offenders, "\n".join(offenders)
    assert "tensorflow.python" in FLOP_COUNTER.read_text()


def string_constants(tree):
    """(line, value) of the string constants of a module that are not docstrings."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_no_task_is_named_outside_the_tasks_and_configs():
    from robust_ssl.tasks import TASKS

    # The built-in tasks (tests register more in the same registry).
    names = {name for name, cls in TASKS.items() if cls.__module__.startswith("robust_ssl.tasks.")}
    assert len(names) >= 7
    offenders = []
    for name, path in SOURCES.items():
        if any(folder in path.parents for folder in TASK_NAMES_ALLOWED):
            continue
        for line, value in string_constants(TREES[name]):
            parts = [part.strip() for part in value.split(",")]
            if all(part in names for part in parts):  # "rotation" or "rotation,color"
                offenders.append(f"{name}:{line}: {value!r}")
    assert not offenders, "task names in code outside tasks/ and configs/:\n" + "\n".join(offenders)


def line_count(path):
    """Lines of a source file (what `wc -l` counts in a file that ends with a newline)."""
    return len(path.read_text().splitlines())


def test_no_module_is_longer_than_the_limit_unless_allowed():
    assert LONG_MODULES_ALLOWED <= set(SOURCES), "allowed modules that do not exist"
    lines = {name: line_count(path) for name, path in SOURCES.items()}
    too_long = sorted(name for name, n in lines.items() if n > MAX_LINES and name not in LONG_MODULES_ALLOWED)
    listed = ", ".join(f"{name} ({lines[name]} lines)" for name in too_long)
    assert not too_long, f"modules over {MAX_LINES} lines, to cut at their seams: {listed}"
    short = sorted(name for name in LONG_MODULES_ALLOWED if lines[name] <= MAX_LINES)
    assert not short, f"allowed to be long but {MAX_LINES} lines or less; take them off the list: {short}"


# The layers of docs/design.md, top first: a module imports from its own layer
# and those below it, never from a layer above.
ENTRY_POINTS = {"cli", "commands", "__main__"}
APPLICATIONS = {
    "robustness",
    "study",
    "study_entries",
    "study_tables",
    "export",
    "predict",
    "tuning",
    "compare",
    "figures",
    "lambda_panels",
    "lambda_logs",
    "bench",
}
# Modules at the ground floor: they import nothing of the package.
GROUND_FLOOR = ("robust_ssl.errors", "robust_ssl.replicas")
# The step's home and what it builds on read no model, training or weighting
# module: those call the step, not the other way round.
STEP_PATH = ("robust_ssl.steps", "robust_ssl.meta", "robust_ssl.replicas")
ABOVE_THE_STEP = ("robust_ssl.model", "robust_ssl.train", "robust_ssl.weighting", "robust_ssl.loop")


def layer(name):
    """2 for an entry point, 1 for an application, 0 for the core."""
    top = name.split(".")[1] if "." in name else ""
    return 2 if top in ENTRY_POINTS else 1 if top in APPLICATIONS else 0


def test_dependencies_point_down_the_layers():
    upward = [
        f"{name} ({layer(name)}) imports {other} ({layer(other)})"
        for name, tree in TREES.items()
        if name != "robust_ssl"
        for other in sorted(imported_modules(name, tree))
        if layer(other) > layer(name)
    ]
    assert not upward, "imports up the layers:\n" + "\n".join(upward)
    for name in GROUND_FLOOR:
        assert not imported_modules(name, TREES[name]), f"{name} must import nothing of the package"
    for name in STEP_PATH:
        above = [m for m in imported_modules(name, TREES[name]) if m.startswith(ABOVE_THE_STEP)]
        assert not above, f"{name} imports {above}: the step is called by those, not the other way round"
