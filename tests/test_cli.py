"""The `robust-ssl` console script, config names and files, and running outside the repository.

Usage text and config resolution are tested in this process; every command
runs in a subprocess (`python -m robust_ssl.cli`, or the installed
`robust-ssl` script) whose working directory is a temporary directory, so
nothing depends on the repository being the current directory.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, run_cli, write_config_file

import robust_ssl
from robust_ssl import cli, configs
from robust_ssl.commands import COMMANDS

PACKAGE = pathlib.Path(robust_ssl.__file__).parent
TINY_TRAIN = [
    "--config.tasks=rotation",
    "--config.train.epochs=1",
    "--config.train.steps_per_epoch=2",
    "--config.train.batch_size=16",
    "--config.train.eval_batch_size=32",
    "--config.data.num_train=64",
    "--config.data.num_test=32",
    "--config.train.verbose=2",
]


def error_lines(proc, prefix="error:"):
    """The stderr lines starting with `prefix`; asserts there is no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return [line for line in proc.stderr.splitlines() if line.startswith(prefix)]


# ---------------------------------------------------------------- dispatch (in process)
def test_usage_lists_every_subcommand(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    expected = [
        "train",
        "evaluate",
        "export",
        "tune",
        "compare",
        "study",
        "benchmark",
        "show-tasks",
        "plot-lambdas",
        "make-cifar10c",
        "predict",
        "show-config",
    ]
    assert list(COMMANDS) == expected
    listed = [line.split()[0] for line in out.split("commands:\n")[1].splitlines() if line.startswith("  ")]
    assert listed == expected
    assert cli.main([]) == 2  # no command: the same usage, on stderr
    assert capsys.readouterr().err.strip() == cli.usage()


def test_every_command_has_a_module_with_main():
    for name, (module, _) in COMMANDS.items():
        source = (PACKAGE / "commands" / f"{module}.py").read_text()
        assert re.search(r"^def main\(argv\):", source, re.M), name
        wrapper = REPO / "tools" / f"{module}.py"
        assert f'cli.main(["{name}", *sys.argv[1:]])' in wrapper.read_text(), wrapper


def test_an_unknown_subcommand_is_one_line_and_status_2(capsys):
    assert cli.main(["trian", "--config=smoke"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("robust-ssl: unknown command 'trian'; commands: train, evaluate, export,")


# ---------------------------------------------------------------- config names and files
def test_configs_are_listed_and_resolved_by_name_and_by_file(tmp_path, monkeypatch):
    names = configs.names()
    assert {"default", "smoke", "smoke_automl", "smoke_tune", "automl4", "automl7", "rotation"} <= set(names)
    assert "__init__" not in names
    smoke = configs.path("smoke")
    assert smoke == str(PACKAGE / "configs" / "smoke.py")
    assert configs.resolve("smoke") == smoke
    assert configs.resolve("smoke:arg") == smoke + ":arg"
    assert configs.resolve(smoke) == smoke
    # A file is relative to the current directory (a "/" or a ".py" makes a path).
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    own = write_config_file(tmp_path / "sub" / "mine.py")
    assert configs.resolve("sub/mine.py") == own
    write_config_file(tmp_path / "smoke.py")
    assert configs.resolve("smoke.py") == str(tmp_path / "smoke.py")  # a file, not the packaged name
    assert configs.resolve("smoke") == smoke
    # The old repository layout: configs/<name>.py, where no such file exists.
    assert configs.resolve("configs/smoke.py") == smoke
    assert configs.name_of(smoke) == "smoke" and configs.name_of(own) is None
    assert configs.load("smoke").train.epochs == 3
    assert configs.load("sub/mine.py").model.depth == 10


def test_unknown_configs_fail_with_the_known_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(configs.UnknownConfigError) as info:
        configs.resolve("smok")
    assert str(info.value) == (
        f"unknown config 'smok'; known configs: {', '.join(configs.names())} (or the path of a .py file)"
    )
    with pytest.raises(configs.UnknownConfigError, match="config file nowhere/x.py not found"):
        configs.resolve("nowhere/x.py")
    with pytest.raises(configs.UnknownConfigError, match="config file configs/nope.py not found"):
        configs.resolve("configs/nope.py")
    with pytest.raises(configs.UnknownConfigError, match="config file elsewhere/configs/smoke.py not found"):
        configs.resolve("elsewhere/configs/smoke.py")  # only the old relative configs/<name>.py is mapped


def test_resolve_argv_rewrites_only_the_config_flag():
    smoke = configs.path("smoke")
    argv = [
        "--config=smoke",
        "--config.train.epochs=1",
        "--workdir=w",
        "-config",
        "rotation",
        "--",
        "--config=x",
    ]
    assert configs.resolve_argv(argv) == [
        f"--config={smoke}",
        "--config.train.epochs=1",
        "--workdir=w",
        "-config",
        configs.path("rotation"),
        "--",
        "--config=x",
    ]
    assert configs.resolve_argv(["--config", "smoke:a", "-config=smoke"]) == [
        "--config",
        smoke + ":a",
        f"-config={smoke}",
    ]
    assert configs.resolve_argv(["--configs=smoke", "--config.tasks=x"]) == [
        "--configs=smoke",
        "--config.tasks=x",
    ]


# ---------------------------------------------------------------- commands outside the repository
def test_an_unknown_config_name_exits_2_with_one_line(tmp_path):
    proc = run_cli("train", "--config=smok", "--workdir=run", cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    assert error_lines(proc) == [
        f"error: unknown config 'smok'; known configs: {', '.join(configs.names())} (or the path of a .py file)"
    ]
    assert not (tmp_path / "run").exists()


def test_a_config_file_relative_to_the_current_directory_and_the_old_tools(tmp_path):
    # The file is read (its override fails validation) from the working directory.
    (tmp_path / "cfg").mkdir()
    write_config_file(tmp_path / "cfg" / "tiny.py")
    proc = run_cli(
        "train",
        "--config=cfg/tiny.py",
        "--workdir=run",
        "--config.tasks=rotation,nope",
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 2
    from robust_ssl.tasks import TASKS

    unknown = f"error: unknown task 'nope'; choose from {', '.join(TASKS)}"
    assert error_lines(proc) == [unknown]
    # tools/train.py still takes the old `--config=configs/<name>.py` from the repository root.
    old = subprocess.run(
        [sys.executable, "tools/train.py", "--config=configs/smoke.py", f"--workdir={tmp_path / 'old'}"]
        + ["--config.tasks=rotation,nope"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert old.returncode == 2
    assert error_lines(old) == [unknown]


def test_command_help_lists_its_flags_and_the_config_names(tmp_path):
    proc = run_cli("train", "--help", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("usage: robust-ssl train [flags]")
    assert "--workdir" in proc.stdout and "--config" in proc.stdout
    assert ", ".join(configs.names()) in " ".join(proc.stdout.split())
    assert "robust-ssl show-config [--config=NAME]" in proc.stdout  # where the keys are listed


def test_show_config_lists_every_key_with_its_value_and_meaning(tmp_path):
    from robust_ssl import config_utils

    proc = run_cli("show-config", "--config=smoke", "--config.train.epochs=7", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("# config smoke: every key, its value and what it means")
    keys = [line.split("=", 1)[0] for line in lines if line and not line.startswith("#")]
    assert keys == sorted(config_utils.flatten(config_utils.to_dict(configs.load("smoke"))))
    assert (
        "train.learning_rate=0.05  # cosine annealing per step to min_learning_rate [default: 0.1]" in lines
    )
    assert "train.epochs=7  # [default: 100]" in lines
    above = lines[
        lines.index("train.epochs=7  # [default: 100]") - 3 : lines.index("train.epochs=7  # [default: 100]")
    ]
    assert above[0].startswith("# May be raised on a finished (or interrupted) run to continue it")
    assert 'data.source=\'synthetic\'  # "tfds" | "folder" | "synthetic" [default: \'tfds\']' in lines


@pytest.fixture(scope="module")
def outside_run(tmp_path_factory):
    """`robust-ssl train --config=smoke` for 2 steps, run in a directory outside the repo, relative workdir."""
    cwd = tmp_path_factory.mktemp("outside")
    proc = run_cli("train", "--config=smoke", "--workdir=runs/tiny", *TINY_TRAIN, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd, proc


def test_training_runs_from_any_directory(outside_run):
    cwd, proc = outside_run
    workdir = cwd / "runs" / "tiny"
    assert f"outputs in {workdir}" in proc.stdout
    results = json.loads((workdir / "results.json").read_text())
    assert results["steps"] == 2
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["tasks"] == "rotation" and saved["data"]["source"] == "synthetic"


def test_import_robust_ssl_model_is_enough_to_load_a_saved_model(outside_run):
    cwd, _ = outside_run
    decorator = re.compile(r"^\s*@keras\.saving\.register_keras_serializable\b", re.M)
    registering = sorted(
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for path in PACKAGE.rglob("*.py")
        if decorator.search(path.read_text())
    )
    assert "robust_ssl.model" in registering
    code = (
        "import sys\n"
        "import keras\n"
        "import robust_ssl.model\n"
        f"missing = [m for m in {registering!r} if m not in sys.modules]\n"
        "model = keras.saving.load_model('runs/tiny/model.keras')\n"
        "print(type(model).__name__, missing)\n"
    )
    # A fresh process: only `import robust_ssl.model` (every registered class is imported with it;
    # `import robust_ssl` imports no Keras), then plain keras.saving.load_model.
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "RobustSSLModel []"


def test_show_tasks_from_any_directory(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = run_cli(
        "show-tasks", "--output=t.png", "--num_images=2", "--tasks=rotation,jigsaw", cwd=tmp_path, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "t.png").stat().st_size > 1000


def test_the_installed_console_script(tmp_path):
    script = shutil.which("robust-ssl", path=os.path.dirname(sys.executable)) or shutil.which("robust-ssl")
    if script is None:
        pytest.skip("the robust-ssl script is not installed (pip install -e .)")
    proc = subprocess.run([script, "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == cli.usage()
