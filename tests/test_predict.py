"""`robust-ssl predict`: image files in, one line per file with class and probability out."""

import os

import numpy as np
import pytest
from conftest import run_cli, tiny_config

from robust_ssl import predict, rundir
from robust_ssl.errors import UserError


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from robust_ssl.train import train_and_evaluate

    workdir = tmp_path_factory.mktemp("predict_run")
    train_and_evaluate(
        tiny_config(tasks="", **{"train.epochs": 1, "train.eval_every_epoch": False}), str(workdir)
    )
    return workdir


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """Three PNGs of other sizes than the model's (one in a sub-folder, one grey) and a broken file."""
    from PIL import Image

    root = tmp_path_factory.mktemp("pictures")
    (root / "more").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "b.png")
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(root / "more" / "grey.png")
    (root / "broken.png").write_bytes(b"not a png")
    return root


def expected_rows(run, paths, top_k):
    """The model's own probabilities of the images decoded as training decodes a folder."""
    model = rundir.load_model(str(run))
    images = predict.read_images([str(p) for p in paths], model.image_shape[:2])
    logits = np.asarray(model(images.astype(np.float32) / 255.0, training=False), np.float64)
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    rows = []
    for p in probabilities:
        best = np.argsort(-p, kind="stable")[:top_k]
        rows.append([(model.class_names[i], p[i]) for i in best])
    return rows


def parse(stdout):
    rows = []
    for line in stdout.strip().splitlines():
        path, *rest = line.split("\t")
        rows.append((path, [(rest[i], float(rest[i + 1])) for i in range(0, len(rest), 2)]))
    return rows


def test_predict_prints_class_and_probability_per_image_file(run, pictures, tmp_path):
    proc = run_cli(
        "predict", f"--workdir={run}", "--top_k=2", "a.png", "b.png", "more", cwd=pictures, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = parse(proc.stdout)
    assert [path for path, _ in rows] == ["a.png", "b.png", "more/grey.png"]
    paths = [pictures / "a.png", pictures / "b.png", pictures / "more" / "grey.png"]
    for (_, top), expected in zip(rows, expected_rows(run, paths, 2)):
        assert [name for name, _ in top] == [name for name, _ in expected]
        np.testing.assert_allclose([p for _, p in top], [p for _, p in expected], atol=1e-4)
        assert top[0][1] >= top[1][1]
    # The same through an export of the run.
    from robust_ssl.export import export_saved_model

    exported = export_saved_model(str(run), str(tmp_path / "export"))
    proc = run_cli("predict", f"--saved_model={tmp_path / 'export'}", "a.png", cwd=pictures, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ((path, top),) = parse(proc.stdout)
    assert path == "a.png" and top[0][0] == rows[0][1][0][0]
    assert top[0][1] == pytest.approx(rows[0][1][0][1], abs=1e-3)
    assert exported.endswith("1")


def test_predict_mistakes_are_one_line(run, pictures):
    quiet = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # a user's shell
    proc = run_cli(
        "predict", f"--workdir={run}", "a.png", "broken.png", "nope.png", cwd=pictures, env=quiet, timeout=300
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == ["error: image file nope.png not found"]
    with pytest.raises(UserError, match=r"^1 file\(s\) are not readable images: .*broken.png$"):
        predict.predict_files([str(pictures / "a.png"), str(pictures / "broken.png")], workdir=str(run))
    with pytest.raises(UserError, match="^no images given"):
        predict.image_paths([])
    with pytest.raises(UserError, match="^give one of --workdir"):
        predict.load_classifier()
    with pytest.raises(UserError, match="top_k must be >= 1"):
        predict.predict_files([str(pictures / "a.png")], workdir=str(run), top_k=0)
