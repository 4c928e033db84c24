"""Tests of the robustness evaluation (robust_ssl.robustness: evaluation, reports; `robust-ssl evaluate`)."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
from conftest import run_cli, tiny_config

from robust_ssl import rundir
from robust_ssl.data import cifar10c, synthetic
from robust_ssl.data import corruptions as C
from robust_ssl.errors import UserError
from robust_ssl.robustness import evaluation, reports


class ConstantModel:
    """Always the same logits; records every image batch it is shown."""

    def __init__(self, logits):
        self.logits = np.asarray(logits, np.float64)
        self.seen = []

    def __call__(self, images):
        self.seen.append(np.asarray(images))
        return np.tile(self.logits, (len(images), 1))


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


@pytest.fixture(scope="module")
def clean():
    x, y = synthetic.generate(20, seed=11)
    return x, y


@pytest.fixture(scope="module")
def npy_dir(clean, tmp_path_factory):
    """A small CIFAR-10-C-style directory: 2 corruptions, 20 images per block."""
    directory = tmp_path_factory.mktemp("mini_c")
    C.write_corrupted_set(*clean, str(directory), ("gaussian_noise", "fog"), seed=1, progress=False)
    return str(directory)


# ---------------------------------------------------------------- metrics
def test_ece_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=300)
    labels = rng.integers(0, 4, 300)
    conf, pred = probs.max(1), probs.argmax(1)
    expected = 0.0
    for lo, hi in zip(np.linspace(0, 1, 16)[:-1], np.linspace(0, 1, 16)[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            expected += m.mean() * abs((pred[m] == labels[m]).mean() - conf[m].mean())
    assert evaluation.expected_calibration_error(probs, labels) == pytest.approx(expected, abs=1e-12)
    # Always 90% sure, right half of the time: ECE 0.4.
    probs = np.tile([0.9, 0.1], (10, 1))
    assert evaluation.expected_calibration_error(probs, np.array([0, 1] * 5)) == pytest.approx(0.4)


def test_cell_metrics():
    probs = np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    m = evaluation.cell_metrics(probs, np.array([0, 1, 1, 0]))
    assert m["accuracy"] == 0.75 and m["error"] == 0.25 and m["num_images"] == 4
    assert m["nll"] == pytest.approx(-np.mean(np.log([0.7, 0.8, 0.4, 0.5])))


def test_predictor_detects_probabilities_and_logits():
    x = np.zeros((3, 32, 32, 3), np.uint8)
    logits = evaluation.make_predictor(ConstantModel([2.0, 0.0]), batch_size=2)(x)
    np.testing.assert_allclose(logits, np.tile(softmax(np.array([2.0, 0.0])), (3, 1)))
    probs = evaluation.make_predictor(ConstantModel([0.25, 0.75]), batch_size=2)(x)
    np.testing.assert_allclose(probs, np.tile([0.25, 0.75], (3, 1)))


# ---------------------------------------------------------------- leak guard
def test_leak_guard_drops_the_meta_head_of_real_cifar10c():
    record = {"source": "cifar10c", "per_block": 7}
    for source in ("tfds", "/some/dir"):
        e = evaluation.leak_guard(record, source)
        assert (e.per_block, e.clean_skip) == (7, 0)
    e = evaluation.leak_guard(record, "tfds", data_config={"source": "tfds", "name": "cifar10"})
    assert (e.per_block, e.clean_skip) == (7, 7)
    with pytest.raises(UserError, match="refusing to score the first 7 images") as info:
        evaluation.leak_guard(record, "tfds", include_meta_images=True)
    assert "\n" not in str(info.value)


def test_leak_guard_for_generated_corruptions():
    record = {"source": "cifar10c", "per_block": 100}
    cifar10 = {"source": "tfds", "name": "cifar10"}
    e = evaluation.leak_guard(record, "generate", data_config=cifar10)
    assert (e.per_block, e.clean_skip) == (0, 100)
    with pytest.raises(UserError, match="refusing"):
        evaluation.leak_guard(record, "generate", include_meta_images=True, data_config=cifar10)
    e = evaluation.leak_guard(
        record, "generate", include_meta_images=True, data_config={"source": "synthetic"}
    )
    assert (e.per_block, e.clean_skip) == (0, 0)


def test_leak_guard_other_records():
    for record in (
        {"source": None},
        {"source": "train_holdout", "holdout": 64},
        {"source": "corrupted_holdout"},
    ):
        e = evaluation.leak_guard(record, "tfds", include_meta_images=True)
        assert (e.per_block, e.clean_skip) == (0, 0)
    note = evaluation.leak_guard({"source": "corrupted_holdout", "corruptions": ["fog"]}, "tfds").note
    assert note.endswith("the meta loss saw fog")
    # Unknown provenance: the paper's head is left out unless asked otherwise.
    assert evaluation.leak_guard(None, "tfds").per_block == cifar10c.PAPER_PER_BLOCK
    assert evaluation.leak_guard(None, "tfds", include_meta_images=True).per_block == 0
    with pytest.raises(UserError, match="unknown"):
        evaluation.leak_guard({"source": "mystery"}, "tfds")


def test_real_cifar10c_evaluation_never_shows_the_meta_images(clean, npy_dir):
    model = ConstantModel([3.0] + [0.0] * 9)
    result = evaluation.evaluate_robustness(
        model,
        npy_dir,
        corruptions=("gaussian_noise", "fog"),
        severities=(2, 5),
        meta_validation={"source": "cifar10c", "per_block": 6},
        progress=False,
    )
    seen = np.concatenate(model.seen)
    assert len(seen) == 4 * 14
    seen_bytes = {np.round(i * 255).astype(np.uint8).tobytes() for i in seen}
    for name in ("gaussian_noise", "fog"):
        for s in (2, 5):
            block, labels = cifar10c.load_npy_block(npy_dir, name, s)
            assert not {b.tobytes() for b in block[:6]} & seen_bytes
            assert {b.tobytes() for b in block[6:]} <= seen_bytes
            cell = next(c for c in result["cells"] if (c["corruption"], c["severity"]) == (name, s))
            assert cell["num_images"] == 14
            assert cell["accuracy"] == pytest.approx((labels[6:] == 0).mean())
    assert result["clean"] is None and result["settings"]["excluded_per_block"] == 6
    with pytest.raises(UserError, match="refusing"):
        evaluation.evaluate_robustness(
            model, npy_dir, meta_validation={"source": "cifar10c", "per_block": 6}, include_meta_images=True
        )


def test_tfds_source_uses_tfds_names_and_drops_the_meta_head():
    import tensorflow_datasets as tfds

    # Mock data: 12 images per tfds config; unknown config names would fail.
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        result = evaluation.evaluate_robustness(
            ConstantModel([1.0] + [0.0] * 9),
            "tfds",
            corruptions=("glass_blur", "elastic_transform"),
            severities=(2,),
            meta_validation={"source": "cifar10c", "per_block": 4},
            progress=False,
        )
    assert [(c["corruption"], c["num_images"]) for c in result["cells"]] == [
        ("glass_blur", 8),
        ("elastic_transform", 8),
    ]


def test_generated_evaluation_scores_corrupted_clean_images(clean):
    x, y = clean
    logits = np.array([0.0, 2.0] + [0.0] * 8)
    model = ConstantModel(logits)
    result = evaluation.evaluate_robustness(
        model,
        "generate",
        clean=clean,
        corruptions=("contrast", "snow"),
        severities=(1, 4),
        seed=3,
        progress=False,
    )
    assert len(result["cells"]) == 4 and result["clean"]["num_images"] == 20
    # The model sees the clean images, then each cell's corruption of them.
    np.testing.assert_array_equal(np.round(model.seen[0] * 255).astype(np.uint8), x)
    np.testing.assert_array_equal(np.round(model.seen[4] * 255).astype(np.uint8), C.corrupt(x, "snow", 4, 3))
    accuracy, confidence = (y == 1).mean(), softmax(logits).max()
    for cell in result["cells"]:
        assert cell["accuracy"] == pytest.approx(accuracy)
        assert cell["ece"] == pytest.approx(abs(accuracy - confidence))
    half = evaluation.evaluate_robustness(
        ConstantModel(logits), "generate", clean=clean, corruptions=("fog",), severities=(1,), max_images=5
    )
    assert half["cells"][0]["num_images"] == 5 and half["clean"]["num_images"] == 5


def test_max_images_takes_an_evenly_spaced_subset():
    assert evaluation._subset(10, None).tolist() == list(range(10))
    assert evaluation._subset(10, 5).tolist() == [0, 2, 4, 6, 8]
    assert evaluation._subset(1000, 3).tolist() == [0, 333, 666]


# ---------------------------------------------------------------- summaries
def _fake_result(acc_by_cell, clean_acc):
    cells = [
        {
            "corruption": c,
            "severity": s,
            "accuracy": a,
            "error": 1 - a,
            "ece": 0.1,
            "nll": 1.0,
            "num_images": 10,
        }
        for (c, s), a in acc_by_cell.items()
    ]
    result = {"cells": cells, "clean": {"accuracy": clean_acc, "error": 1 - clean_acc, "ece": 0.05}}
    result["summary"] = evaluation.summarize(result)
    return result


def test_summary_means_and_corruption_errors():
    acc = {(c, s): 0.9 - 0.1 * s for c in cifar10c.BENCHMARK_CORRUPTIONS for s in cifar10c.SEVERITIES}
    acc.update({(c, s): 0.5 for c in cifar10c.EXTRA_CORRUPTIONS for s in cifar10c.SEVERITIES})
    summary = _fake_result(acc, 0.95)["summary"]
    assert summary["mean_accuracy_benchmark"] == pytest.approx(0.6)
    assert summary["mean_accuracy_all"] == pytest.approx((15 * 0.6 + 4 * 0.5) / 19)
    assert summary["ce"]["fog"] == pytest.approx(0.4) and summary["ce"]["saturate"] == pytest.approx(0.5)
    assert summary["mce"] == pytest.approx(0.4)
    assert summary["benchmark_complete"] and summary["all_complete"]
    partial = _fake_result({("fog", 1): 0.8}, 0.9)["summary"]
    assert not partial["benchmark_complete"] and partial["mce"] == pytest.approx(0.2)


def test_comparison_with_a_baseline():
    ours = _fake_result({("fog", 1): 0.8, ("fog", 2): 0.6, ("saturate", 1): 0.9}, 0.9)
    base = _fake_result({("fog", 1): 0.6, ("fog", 2): 0.4, ("snow", 1): 0.5}, 0.8)
    comparison = evaluation.compare(ours, base)
    assert comparison["common_cells"] == 2
    assert comparison["normalised_ce"] == {"fog": pytest.approx((0.2 + 0.4) / (0.4 + 0.6))}
    assert comparison["relative_ce"]["fog"] == pytest.approx((0.1 + 0.3) / (0.2 + 0.4))
    assert comparison["mce"] == pytest.approx(0.6) and comparison["relative_mce"] == pytest.approx(4 / 6)


def test_results_round_trip_through_csv_and_json(tmp_path):
    result = _fake_result({("fog", 1): 0.75, ("glass_blur", 3): 0.5}, 0.875)
    for path in (
        reports.write_csv(result, str(tmp_path / "r.csv")),
        reports.write_json(result, str(tmp_path / "r.json")),
    ):
        back = evaluation.load_results(path)
        assert [(c["corruption"], c["severity"], c["accuracy"]) for c in back["cells"]] == [
            ("fog", 1, 0.75),
            ("glass_blur", 3, 0.5),
        ]
        assert back["clean"]["accuracy"] == 0.875
    with open(tmp_path / "r.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["corruption"] == "clean" and rows[0]["severity"] == "0"
    with pytest.raises(UserError):
        evaluation.load_results(str(tmp_path / "missing.json"))


def test_reports(tmp_path):
    from PIL import Image

    acc = {(c, s): 0.5 + 0.02 * s for c in ("fog", "snow", "saturate") for s in (1, 3)}
    result = _fake_result(acc, 0.9)
    base = _fake_result({k: v - 0.1 for k, v in acc.items()}, 0.85)
    comparison = evaluation.compare(result, base)
    paths = reports.write_reports(result, str(tmp_path), comparison, base, title="demo")
    assert set(paths) == {"csv", "json", "markdown", "heatmap", "comparison"}
    text = open(paths["markdown"]).read()
    assert "| snow | 52.0 | 56.0 | 54.0 | 46.0 |" in text
    assert "relative mCE" in text and "## demo" in text
    assert "- images scored: 10 images per cell" in text.splitlines()
    for key in ("heatmap", "comparison"):
        with Image.open(paths[key]) as image:
            assert image.size[0] > 150 and image.size[1] > 150
    assert json.load(open(paths["json"]))["comparison"]["common_cells"] == 6


def test_saved_model_signature_with_uint8_input(tmp_path):
    import tensorflow as tf

    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.uint8, name="images")])
        def serve(self, images):
            mean = tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2, 3])
            return {
                "logits": tf.stack([mean, 255.0 - mean], axis=1),
                "classes": tf.zeros_like(mean, tf.int64),
            }

    module = Module()
    tf.saved_model.save(module, str(tmp_path / "3"), signatures={"serving_default": module.serve})
    predict = evaluation.make_predictor(evaluation.load_saved_model(str(tmp_path)), batch_size=4)
    x = np.zeros((5, 32, 32, 3), np.uint8)
    x[:2] = 200
    probs = predict(x)
    assert probs.shape == (5, 2) and (probs.argmax(1) == [0, 0, 1, 1, 1]).all()
    with pytest.raises(UserError):
        evaluation.load_saved_model(str(tmp_path / "nothing"))


# ---------------------------------------------------------------- a real run, end to end
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from robust_ssl.train import train_and_evaluate

    workdir = tmp_path_factory.mktemp("run")
    config = tiny_config(tasks="", **{"train.epochs": 1, "train.eval_every_epoch": False})
    train_and_evaluate(config, str(workdir))
    return str(workdir)


def test_run_dir_of_a_checkpoint(tiny_run):
    checkpoint = os.path.join(tiny_run, "checkpoints", "epoch_001.keras")
    assert rundir.run_dir_of(checkpoint=checkpoint) == os.path.abspath(tiny_run)
    assert rundir.run_dir_of(workdir="w", checkpoint=checkpoint) == "w"


def test_full_generated_grid_of_a_trained_model(tiny_run, tmp_path):
    result, paths = evaluation.evaluate_run(
        "generate",
        workdir=tiny_run,
        output_dir=str(tmp_path),
        max_images=16,
        progress=False,
        log=lambda _: None,
    )
    assert len(result["cells"]) == 95 and all(c["num_images"] == 16 for c in result["cells"])
    summary = result["summary"]
    assert summary["all_complete"] and summary["benchmark_complete"]
    accuracies = [c["accuracy"] for c in result["cells"]]
    assert summary["mean_accuracy_all"] == pytest.approx(np.mean(accuracies))
    assert result["settings"]["leak_guard"].startswith("no meta-validation")
    with open(paths["csv"]) as f:
        assert len(list(csv.DictReader(f))) == 96


def _run_tool(*args):
    return run_cli("evaluate", *args, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)


def test_tool_end_to_end_with_a_baseline(tiny_run, tmp_path):
    baseline_dir = tmp_path / "baseline"
    evaluation.evaluate_run(
        "generate",
        workdir=tiny_run,
        output_dir=str(baseline_dir),
        corruptions=("gaussian_noise", "fog"),
        severities=(1, 5),
        max_images=12,
        seed=1,
        progress=False,
        log=lambda _: None,
    )
    out = tmp_path / "out"
    checkpoint = os.path.join(tiny_run, "checkpoints", "epoch_001.keras")
    result = _run_tool(
        f"--checkpoint={checkpoint}",
        "--cifar10c=generate",
        "--corruptions=gaussian_noise,fog,saturate",
        "--severities=1,5",
        "--max_images=12",
        f"--baseline={baseline_dir}",
        f"--output_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(out)) == [
        "comparison.png",
        "heatmap.png",
        "robustness.csv",
        "robustness.json",
        "robustness.md",
    ]
    assert "| saturate |" in result.stdout and "relative mCE vs the baseline" in result.stdout
    data = json.load(open(out / "robustness.json"))
    assert len(data["cells"]) == 6 and data["comparison"]["common_cells"] == 4
    assert "1/7" in result.stdout or "7/7" in result.stdout  # progress bar over clean + 6 cells


def test_tool_refuses_to_score_meta_validation_images(tiny_run, npy_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "model.keras"):
        shutil.copy(os.path.join(tiny_run, name), run / name)
    with open(run / "meta_validation.json", "w") as f:
        json.dump({"source": "cifar10c", "cifar10c_source": "npy", "per_block": 5}, f)
    args = [
        f"--workdir={run}",
        f"--cifar10c={npy_dir}",
        "--corruptions=fog",
        "--severities=2",
        "--noprogress",
    ]
    refused = _run_tool(*args, "--include_meta_images")
    assert refused.returncode == 2
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("error: refusing to score the first 5 images of every CIFAR-10-C block")
    scored = _run_tool(*args)
    assert scored.returncode == 0, scored.stderr[-3000:]
    data = json.load(open(run / "robustness" / "robustness.json"))
    assert data["cells"][0]["num_images"] == 15 and data["settings"]["excluded_per_block"] == 5


# ---------------------------------------------------------------- files that do not fit the model
def _npy_set(
    directory, corruptions=("gaussian_noise", "fog", "snow"), n=50, shape=(28, 28, 3), dtype=np.uint8
):
    """A CIFAR-10-C-style directory of `n` images per file (5 blocks of n / 5)."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    np.save(os.path.join(directory, "labels.npy"), rng.integers(0, 10, n).astype(np.int64))
    for name in corruptions:
        np.save(os.path.join(directory, f"{name}.npy"), rng.integers(0, 256, (n, *shape)).astype(dtype))
    return str(directory)


class ShapedModel(ConstantModel):
    image_shape, num_classes = (32, 32, 3), 10


def test_every_npy_file_is_checked_against_the_model_before_scoring(tmp_path):
    three = ("gaussian_noise", "fog", "snow")

    def refused(directory, corruptions=three):
        model = ShapedModel([0.0] * 10)
        with pytest.raises(UserError) as info:
            evaluation.evaluate_robustness(model, directory, corruptions=corruptions, progress=False)
        assert model.seen == []  # nothing was scored
        return str(info.value)

    small = _npy_set(tmp_path / "small")
    assert refused(small) == (
        f"{small}/gaussian_noise.npy holds images of 28x28x3 (uint8 [50, 28, 28, 3]), "
        f"but the model takes 32x32x3 images"
    )
    floats = _npy_set(tmp_path / "floats", shape=(32, 32, 3), dtype=np.float32)
    assert (
        refused(floats)
        == f"{floats}/gaussian_noise.npy holds float32 pixels; CIFAR-10-C files hold uint8 pixels 0..255"
    )
    # The last file is wrong: found before the first cell is scored.
    short = _npy_set(tmp_path / "short", shape=(32, 32, 3))
    np.save(os.path.join(short, "snow.npy"), np.zeros((45, 32, 32, 3), np.uint8))
    assert refused(short) == (
        f"{short}/snow.npy holds 45 images but {short}/labels.npy 50 labels; a CIFAR-10-C directory "
        f"needs one label per image (5 severity blocks in each file)"
    )
    labels = _npy_set(tmp_path / "labels", shape=(32, 32, 3))
    np.save(os.path.join(labels, "labels.npy"), np.full(50, 12, np.int64))
    assert refused(labels) == f"{labels}/labels.npy holds labels 12..12, but the model has 10 classes (0..9)"
    assert refused(small, ("gaussian_noise", "frost")).startswith(
        f"{small}/gaussian_noise.npy holds images of 28x28"
    )
    fits = _npy_set(tmp_path / "fits", shape=(32, 32, 3))
    assert refused(fits, ("gaussian_noise", "frost")) == (
        f"CIFAR-10-C file {fits}/frost.npy not found (expected the official .npy layout)"
    )
    result = evaluation.evaluate_robustness(
        ShapedModel([0.0] * 10), fits, corruptions=three, include_meta_images=True, progress=False
    )
    assert [c["num_images"] for c in result["cells"]][:5] == [10] * 5


def test_tool_refuses_wrong_files_in_one_line_and_keeps_the_report(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    report = run / "robustness"
    report.mkdir(exist_ok=True)
    (report / "robustness.json").write_text('{"cells": [], "clean": null}')
    before = (report / "robustness.json").read_text()
    small = _npy_set(tmp_path / "small")
    proc = _run_tool(f"--workdir={run}", f"--cifar10c={small}", "--corruptions=gaussian_noise,fog,snow")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {small}/gaussian_noise.npy holds images of 28x28x3 (uint8 [50, 28, 28, 3]), "
        f"but the model takes 32x32x3 images"
    )
    assert (report / "robustness.json").read_text() == before
    # The same files through a SavedModel of the run (formerly a ~340-line traceback).
    from robust_ssl.export import export_saved_model

    exported = export_saved_model(str(run), str(tmp_path / "export"))
    proc = _run_tool(
        f"--saved_model={exported}",
        f"--cifar10c={small}",
        "--corruptions=fog",
        f"--output_dir={tmp_path / 'o'}",
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {small}/fog.npy holds images of 28x28x3 (uint8 [50, 28, 28, 3]), but the model takes 32x32x3 images"
    )
    assert not (tmp_path / "o").exists()


def _fake_report(directory, corruptions, severities, num_images=100):
    cells = [
        {
            "corruption": c,
            "severity": s,
            "accuracy": 0.5,
            "error": 0.5,
            "ece": 0.1,
            "nll": 1.0,
            "num_images": num_images,
        }
        for c in corruptions
        for s in severities
    ]
    result = {"cells": cells, "clean": None, "settings": {}}
    result["summary"] = evaluation.summarize(result)
    os.makedirs(directory, exist_ok=True)
    reports.write_json(result, os.path.join(directory, "robustness.json"))


def test_a_complete_report_is_not_replaced_by_a_partial_one_unless_asked(tiny_run, tmp_path):
    out = tmp_path / "out"
    _fake_report(out, cifar10c.ALL_CORRUPTIONS, cifar10c.SEVERITIES)
    before = (out / "robustness.json").read_text()
    kwargs = dict(workdir=tiny_run, output_dir=str(out), progress=False, log=lambda _: None)
    with pytest.raises(UserError) as info:
        evaluation.evaluate_run("generate", corruptions=("fog",), severities=(1, 5), max_images=8, **kwargs)
    assert str(info.value) == (
        f"{out} holds a complete report (95 cells); this evaluation scores 2 cells and would replace it "
        f"(93 of its 95 cells would go; its cells have up to 100 images, --max_images=8 scores fewer): "
        f"pass --output_dir=<another folder> to keep both, or --overwrite to replace it"
    )
    assert (out / "robustness.json").read_text() == before
    result, _ = evaluation.evaluate_run(
        "generate", corruptions=("fog",), severities=(1, 5), max_images=8, overwrite=True, **kwargs
    )
    assert len(result["cells"]) == 2
    # A report with the same (or fewer) cells is simply replaced.
    evaluation.evaluate_run(
        "generate", corruptions=("fog", "snow"), severities=(1, 5), max_images=8, **kwargs
    )
    assert len(json.load(open(out / "robustness.json"))["cells"]) == 4
