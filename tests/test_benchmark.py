"""`robust-ssl benchmark`: a quick run writes the table and JSON; FLOP counting and helpers."""

import json

import pytest
from conftest import run_cli

from robust_ssl.bench import benchmark, flops
from robust_ssl.errors import UserError


def test_quick_run_writes_json_and_markdown_with_positive_numbers(tmp_path):
    out = tmp_path / "bench"
    proc = run_cli(
        "benchmark",
        "--quick",
        "--modes=fixed_rotation,automl4_fast",
        "--batch_size=8",
        "--meta_batch_size=4",
        f"--output_dir={out}",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "benchmark.json").read_text())
    assert set(results["modes"]) == {"fixed_rotation", "automl4_fast"}
    for name, mode in results["modes"].items():
        assert "error" not in mode, (name, mode.get("error"))
        assert mode["n"] == 3 and len(mode["step_times_ms"]) == 3
        for key in (
            "ms_per_step",
            "median_ms",
            "min_ms",
            "max_ms",
            "base_images_per_s",
            "trunk_images_per_s",
            "flops_per_step",
            "gflops_per_s",
            "peak_host_mib",
            "cpu_share",
        ):
            assert mode[key] > 0, (name, key, mode[key])
        assert mode["q3_ms"] >= mode["q1_ms"] and mode["max_ms"] >= mode["min_ms"]
        assert mode["uncosted_ops"] == 0
    # Trunk images per step: rotation "all" = 1 clean + 3 rotated batches; the four
    # tasks add grey and blurred batches (IR shares the clean one) and the meta batch.
    assert results["modes"]["fixed_rotation"]["trunk_images_per_step"] == 4 * 8
    assert results["modes"]["automl4_fast"]["trunk_images_per_step"] == 6 * 8 + 4
    assert (
        results["modes"]["automl4_fast"]["flops_meta_step"]
        > results["modes"]["automl4_fast"]["flops_plain_step"]
    )
    pipeline = results["pipeline"]["pipeline"]
    assert [(p["tasks"], p["meta"]) for p in pipeline] == [
        (["rotation"], False),
        (["rotation", "color", "ir", "bir"], True),
    ]
    for entry in pipeline:
        assert entry["images_per_s"] > 0 and entry["transform_ms_per_batch"] > 0
    assert results["pipeline"]["trunk_forward_flops_per_image"] > 0
    assert results["environment"]["tensorflow"]
    table = (out / "benchmark.md").read_text()
    assert "| fixed_rotation |" in table and "| automl4_fast |" in table
    assert "ms/step" in table and "images/s" in table
    assert "| fixed_rotation |" in proc.stdout


def test_flop_count_matches_the_tf_profiler_and_sees_cond_branches():
    import tensorflow as tf

    x = tf.TensorSpec([4, 8, 8, 3], tf.float32)
    kernel = tf.ones([3, 3, 3, 5])

    def conv(images):
        return tf.nn.conv2d(images, kernel, 1, "SAME")

    plain = tf.function(conv).get_concrete_function(x).graph
    profiled = tf.compat.v1.profiler.profile(
        plain, options=tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    )
    counted = flops.count_flops(plain)
    assert counted["total"] == profiled.total_float_ops == 2 * 4 * 8 * 8 * 3 * 3 * 3 * 5
    assert counted["conv_matmul"] == counted["total"]

    def branchy(images, flag):
        return tf.cond(flag, lambda: conv(conv(images)[..., :3]), lambda: images * 2.0)

    graph = tf.function(branchy).get_concrete_function(x, tf.TensorSpec([], tf.bool)).graph
    then = flops.count_flops(graph, take_then=True)
    other = flops.count_flops(graph, take_then=False)
    assert then["conv_matmul"] == 2 * counted["conv_matmul"]
    assert other["conv_matmul"] == 0 and other["other"] == 4 * 8 * 8 * 3

    def dead_conv(images):
        conv(images)  # nothing uses it: TensorFlow prunes it before running
        return images + 1.0

    dead = tf.function(dead_conv).get_concrete_function(x).graph
    pruned = flops.count_flops(dead)
    assert pruned["conv_matmul"] == 0
    assert pruned["pruned"] == counted["total"]
    assert flops.count_flops(dead, prune=False)["conv_matmul"] == counted["total"]


def test_summarize_reports_median_quartiles_and_range():
    stats = benchmark.summarize([0.004, 0.001, 0.003, 0.002, 0.005])
    assert stats["median_ms"] == pytest.approx(3.0)
    assert stats["q1_ms"] == pytest.approx(2.0) and stats["q3_ms"] == pytest.approx(4.0)
    assert stats["min_ms"] == pytest.approx(1.0) and stats["max_ms"] == pytest.approx(5.0)
    assert stats["n"] == 5


def test_modes_and_settings_are_checked():
    assert benchmark.parse_modes("fixed4, automl4_fast,fixed4") == ["fixed4", "automl4_fast"]
    assert benchmark.parse_modes("all") == list(benchmark.MODES)
    with pytest.raises(UserError, match="unknown mode"):
        benchmark.parse_modes("fixed5")
    with pytest.raises(UserError, match="6n"):
        benchmark.check_settings(benchmark.Settings(depth=12))
    with pytest.raises(UserError, match="mixed_precision"):
        benchmark.check_settings(benchmark.Settings(mixed_precision="fp8"))
    with pytest.raises(UserError, match="unknown precision 'fp8'"):
        benchmark.check_settings(benchmark.Settings(precisions=("float32", "fp8")))
    with pytest.raises(UserError, match="not both"):
        benchmark.check_settings(benchmark.Settings(precisions=("bfloat16",), mixed_precision="bf16"))


def test_learned_weighting_modes_train_the_four_tasks_with_their_method():
    from robust_ssl import config_utils
    from robust_ssl.bench import modes
    from robust_ssl.configs import default
    from robust_ssl.weighting import METHODS

    base = modes.base_config(config_utils.to_dict(default.get_config()))
    fixed = modes.mode_config(base, modes.MODES["fixed4"], modes.Settings())
    for method in ("uncertainty", "gradnorm", "auto_lambda"):
        assert method in METHODS
        config = modes.mode_config(base, modes.MODES[f"{method}4"], modes.Settings())
        assert config.automl.enabled and config.automl.method == method
        assert config.tasks == fixed.tasks and config.automl.warmup_epochs == 0
    assert modes.mode_config(base, modes.MODES["automl4_fast"], modes.Settings()).automl.method == "lookahead"


def test_precisions_are_timed_in_paired_rounds_and_printed_side_by_side(tmp_path):
    out = tmp_path / "bench"
    proc = run_cli(
        "benchmark",
        "--quick",
        "--modes=baseline",
        "--precision=float32,bfloat16",
        "--steps=2",
        "--pipeline=false",
        "--noisolate",
        f"--output_dir={out}",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    mode = json.loads((out / "benchmark.json").read_text())["modes"]["baseline"]
    assert list(mode["by_precision"]) == ["float32", "bfloat16"]
    assert mode["by_precision"]["bfloat16"]["precision"] == "mixed_bfloat16"
    assert mode["by_precision"]["bfloat16"]["n"] == 2 and mode["precision_ratio"]["bfloat16"] > 0
    assert mode["ms_per_step"] == mode["by_precision"]["float32"]["ms_per_step"]  # the main table's
    header = (
        "| mode | float32 ms/step (median) | bfloat16 ms/step (median) | bfloat16 / float32 (paired rounds) |"
    )
    assert header in proc.stdout
    assert "| baseline |" in proc.stdout.split(header)[1]


def test_time_marks_note_when_a_process_passes_a_point(tmp_path, monkeypatch):
    from robust_ssl import killpoints
    from robust_ssl.bench import first_step

    marks = tmp_path / "marks"
    killpoints.mark("train.first_step")  # unset: nothing written
    monkeypatch.setenv(killpoints.MARKS, str(marks))
    killpoints.mark("train.first_step")
    killpoints.reached("evaluate.cell")  # every kill point is a mark too
    killpoints.reached("evaluate.cell")
    noted = first_step.read_marks(str(marks))
    assert set(noted) == {"train.first_step", "evaluate.cell"}
    assert noted["train.first_step"] <= noted["evaluate.cell"]
    assert len(marks.read_text().splitlines()) == 3
    assert first_step.read_marks(str(tmp_path / "none")) == {}


def test_bad_flag_exits_with_a_one_line_error(tmp_path):
    proc = run_cli("benchmark", "--modes=nope", f"--output_dir={tmp_path}", timeout=120)
    assert proc.returncode == 2
    assert "error: unknown mode 'nope'" in proc.stderr


def test_breakdown_times_the_pieces_of_a_step():
    settings = benchmark.quick_settings(batch_size=4, steps=1, isolate=False)
    from robust_ssl import config_utils
    from robust_ssl.configs import default

    out = benchmark.run_breakdown("fixed_rotation", settings, config_utils.to_dict(default.get_config()))
    pieces = out["pieces"]
    assert list(pieces) == ["forward", "fixed_gradients", "per_task_gradients"]
    for piece in pieces.values():
        assert piece["median_ms"] > 0 and piece["flops"] > 0
    # A backward costs about two forwards; per-task backward adds the shared clean batch once more.
    assert pieces["fixed_gradients"]["flops"] > 2 * pieces["forward"]["flops"]
    assert pieces["per_task_gradients"]["flops"] > pieces["fixed_gradients"]["flops"]


@pytest.mark.parametrize("in_memory", [True, False])
def test_pipeline_benchmark_reads_an_image_folder_in_memory_or_streamed(tmp_path, in_memory):
    from test_data_path import make_folder

    make_folder(tmp_path / "images", per_class=8, test_per_class=2)
    settings = benchmark.quick_settings(
        batch_size=4,
        meta_batch_size=2,
        pipeline_folder=str(tmp_path / "images"),
        pipeline_in_memory=in_memory,
    )
    from robust_ssl import config_utils
    from robust_ssl.configs import default

    base = config_utils.to_dict(default.get_config())
    result = benchmark.run_pipeline(settings, base, [((), False), (("rotation",), True)])
    assert result["pipeline"][0]["images_per_s"] > 0 and result["pipeline"][1]["images_per_s"] > 0
    expected = "decoded into memory once" if in_memory else "streamed from disk, decoded per batch"
    assert result["data"].endswith(expected), result["data"]
    assert result["data"].startswith("24 images of ")  # 3 classes x 8 training images
