"""Test-time adaptation: each mode against an independent computation, resets, no leaks."""

import dataclasses
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from robust_ssl.errors import UserError
from robust_ssl.model import RobustSSLModel
from robust_ssl.robustness import adaptation, adaptation_image, adaptation_norm


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    model = RobustSSLModel(depth=10, width=1, tasks=("rotation", "ir"), lambdas=[0.5, 0.5])
    # Training statistics far from the test batches', so `bn` differs from `none`.
    for layer in adaptation_norm.layers(model.trunk):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(layer.moving_mean + 0.3)
            layer.moving_variance.assign(layer.moving_variance * 2.0)
    return model


def batch(n=8, seed=0):
    return np.random.default_rng(seed).random((n, 32, 32, 3)).astype(np.float32)


def weights(model):
    return [v.numpy().copy() for v in model.weights]


def test_none_is_the_model_itself(model):
    x = batch()
    np.testing.assert_allclose(
        adaptation.Adapter(model, "none").predict(x), model(x, training=False), atol=1e-6
    )


def test_bn_equals_an_independent_forward_with_the_batch_moments(model):
    x = batch()
    copy = keras.models.clone_model(model.trunk)
    copy.set_weights(model.trunk.get_weights())
    expected = model.classifier(copy(x, training=True))  # a fresh model in training mode: batch moments
    before = weights(model)
    got = adaptation.Adapter(model, "bn").predict(x)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not np.allclose(got, model(x, training=False), atol=1e-3)
    for a, b in zip(before, weights(model)):  # the model's moving averages did not move
        np.testing.assert_array_equal(a, b)


def test_bn_prior_interpolates_between_training_and_batch_statistics(model):
    x = batch()
    none = model(x, training=False).numpy()
    batch_only = adaptation.Adapter(model, "bn").predict(x)
    strong = adaptation.Adapter(model, "bn", adaptation.Settings(bn_prior=1e9)).predict(x)
    weak = adaptation.Adapter(model, "bn", adaptation.Settings(bn_prior=1e-6)).predict(x)
    middle = adaptation.Adapter(model, "bn", adaptation.Settings(bn_prior=8.0)).predict(x)
    np.testing.assert_allclose(strong, none, atol=1e-4)
    np.testing.assert_allclose(weak, batch_only, atol=1e-4)
    assert not np.allclose(middle, none, atol=1e-3) and not np.allclose(middle, batch_only, atol=1e-3)


def test_tent_updates_only_batch_norm_affine_and_lowers_the_batch_entropy(model):
    x = batch(16, seed=1)
    adapter = adaptation.Adapter(model, "tent", adaptation.Settings(tent_lr=1e-2))
    values = adapter.values()
    before = float(tf.reduce_mean(adaptation.entropy(adapter._logits(values, x, True))))
    adapter.predict(x)
    after = float(tf.reduce_mean(adaptation.entropy(adapter._logits(adapter.values(), x, True))))
    assert after < before
    affine = set(adaptation_norm.batch_norm_affine(model.trunk))
    for i, (p, v) in enumerate(zip(adapter.params, model.trunk.trainable_variables)):
        changed = not np.array_equal(p.numpy(), v.numpy())
        assert changed == (i in affine), v.path


@pytest.mark.parametrize("part", ["trunk", "bn"])
def test_ttt_batch_lowers_the_self_supervised_loss_and_touches_only_its_part(model, part):
    x = batch(8, seed=2)
    settings = adaptation.Settings(ttt_batch_steps=3, ttt_lr=1e-2, ttt_params=part)
    adapter = adaptation.Adapter(model, "ttt_batch", settings)
    seed = tf.constant([0, 0], tf.int64)
    before = float(adapter._ttt_loss(adapter.values(), x, seed))
    adapter.reset()
    adapter._step(x, seed)
    adapter._step(x, seed)
    after = float(adapter._ttt_loss(adapter.values(), x, seed))
    assert after < before
    affine = set(adaptation_norm.batch_norm_affine(model.trunk))
    for i, (p, v) in enumerate(zip(adapter.params, model.trunk.trainable_variables)):
        changed = not np.array_equal(p.numpy(), v.numpy())
        if part == "bn":
            assert changed == (i in affine), v.path
    assert any(
        not np.array_equal(p.numpy(), v.numpy())
        for p, v in zip(adapter.params, model.trunk.trainable_variables)
    )


@pytest.mark.parametrize("mode", ["tent", "ttt", "ttt_batch"])
def test_nothing_leaks_from_one_cell_to_the_next_and_the_model_is_untouched(model, mode):
    cell_a, cell_b = batch(16, seed=3), batch(16, seed=4)
    settings = adaptation.Settings(batch_size=8, tent_lr=1e-2, ttt_lr=1e-2, ttt_online=True, ttt_batch_size=8)
    before = weights(model)
    used = adaptation.Adapter(model, mode, settings)
    adaptation.predict_cell(used, cell_a)
    after_a = adaptation.predict_cell(used, cell_b)
    fresh = adaptation.predict_cell(adaptation.Adapter(model, mode, settings), cell_b)
    np.testing.assert_allclose(after_a, fresh, atol=1e-5)
    for a, b in zip(before, weights(model)):
        np.testing.assert_array_equal(a, b)


def test_online_tent_carries_over_within_a_cell_and_episodic_does_not(model):
    x = batch(8, seed=5)
    online = adaptation.Adapter(model, "tent", adaptation.Settings(tent_lr=1e-2))
    episodic = adaptation.Adapter(model, "tent", adaptation.Settings(tent_lr=1e-2, tent_episodic=True))
    first = episodic.predict(x)
    np.testing.assert_allclose(episodic.predict(x), first, atol=1e-6)  # reset every batch
    online.predict(x)
    assert not np.allclose(online.predict(x), first, atol=1e-5)  # adapted by the first batch


def test_ttt_needs_a_head_it_can_adapt_with():
    keras.utils.set_random_seed(0)
    plain = RobustSSLModel(depth=10, width=1, tasks=("ir",))
    with pytest.raises(UserError) as info:
        adaptation.Adapter(plain, "ttt")
    assert "\n" not in str(info.value) and "rotation" in str(info.value)
    with pytest.raises(UserError, match="no trained head for jigsaw"):
        adaptation.Adapter(plain, "ttt", adaptation.Settings(ttt_tasks="jigsaw"))
    # Per-image TTT classifies transformations; the batch variant takes any task.
    with pytest.raises(UserError, match="'ir' does not") as info:
        adaptation.Adapter(plain, "ttt", adaptation.Settings(ttt_tasks="ir"))
    assert "\n" not in str(info.value)
    adaptation.Adapter(plain, "ttt_batch", adaptation.Settings(ttt_tasks="ir"))


def test_parse_modes():
    assert adaptation.parse_modes("none,bn,tent") == ("none", "bn", "tent")
    assert adaptation.parse_modes("ttt,ttt_batch,ttt_bn") == ("ttt", "ttt_batch", "ttt_bn")
    with pytest.raises(UserError, match="unknown adaptation"):
        adaptation.parse_modes("none,tta")


# ---------------------------------------------------------------- per-image TTT (Sun et al.)
@pytest.fixture(scope="module")
def trained_stats_model():
    # TTT predicts with the training statistics: the `model` fixture's shifted
    # ones zero every feature after the last ReLU, and with them every logit.
    keras.utils.set_random_seed(2)
    return RobustSSLModel(depth=10, width=1, tasks=("rotation", "ir"), lambdas=[0.5, 0.5])


def test_crops_and_flips_are_shifted_and_mirrored_copies_of_the_image():
    image = np.random.default_rng(0).random((12, 12, 3)).astype(np.float32) + 0.1
    copies = adaptation_image.crops_and_flips(tf.constant(image), 16, tf.constant([1, 2], tf.int64)).numpy()
    padded = np.pad(image, [(4, 4), (4, 4), (0, 0)])
    flips = set()
    for copy in copies:
        matches = [
            (dy, dx, flip)
            for dy in range(9)
            for dx in range(9)
            for flip in (False, True)
            if np.array_equal(
                copy,
                padded[dy : dy + 12, dx : dx + 12][:, ::-1] if flip else padded[dy : dy + 12, dx : dx + 12],
            )
        ]
        assert matches, "a copy is no 4-pixel-padded crop (flipped or not) of the image"
        flips.add(matches[0][2])
    assert flips == {False, True}


def test_probe_batch_transforms_each_copy_by_its_own_label(model):
    rotation = model.tasks[0]
    x = tf.constant(batch(4, seed=8))
    labels = tf.constant([0, 3, 1, 2])
    got = adaptation_image.probe_batch(rotation, x, labels).numpy()
    for image, label, out in zip(x.numpy(), labels.numpy(), got):
        np.testing.assert_array_equal(out, np.rot90(image, label, axes=(0, 1)))


def test_ttt_adapts_trunk_and_head_per_image_and_predicts_with_the_training_statistics(trained_stats_model):
    model = trained_stats_model
    before = weights(model)
    image = batch(1, seed=9)[0]
    adapter = adaptation.Adapter(model, "ttt", adaptation.Settings(ttt_lr=1e-2, ttt_batch_size=8))
    logits, loss = adapter.adapt_image(image, (0, 1))
    assert np.isfinite(loss)
    head = dict(zip(model.task_names, model.heads_by_task))["rotation"]
    assert set(adapter.head_params) == {"rotation"}
    for adapted, trained in [
        (adapter.params, model.trunk.trainable_variables),
        (adapter.head_params["rotation"], head.trainable_variables),
    ]:
        assert all(not np.array_equal(a.numpy(), t.numpy()) for a, t in zip(adapted, trained))
    # The prediction: the adapted weights in an independent copy of the trunk, inference mode.
    copy = keras.models.clone_model(model.trunk)
    copy.set_weights(model.trunk.get_weights())
    for variable, adapted in zip(copy.trainable_variables, adapter.params):
        variable.assign(adapted)
    expected = model.classifier(copy(image[None], training=False))[0]
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    for a, b in zip(before, weights(model)):  # the model itself is untouched
        np.testing.assert_array_equal(a, b)


def test_ttt_resets_before_every_image_and_online_carries_over(trained_stats_model):
    model = trained_stats_model
    a, b = batch(2, seed=10)
    settings = adaptation.Settings(ttt_lr=1e-2, ttt_batch_size=8)
    alone = adaptation.Adapter(model, "ttt", settings).adapt_image(a, (0, 7))[0]
    episodic = adaptation.Adapter(model, "ttt", settings)
    episodic.adapt_image(b, (0, 3))
    np.testing.assert_allclose(episodic.adapt_image(a, (0, 7))[0], alone, atol=1e-6)
    online = adaptation.Adapter(model, "ttt", dataclasses.replace(settings, ttt_online=True))
    np.testing.assert_allclose(online.adapt_image(a, (0, 7))[0], alone, atol=1e-6)
    online.reset()
    online.adapt_image(b, (0, 3))
    assert not np.allclose(online.adapt_image(a, (0, 7))[0], alone, atol=1e-6)  # adapted by b first
    online.reset()  # a cell boundary resets the online mode too
    np.testing.assert_allclose(online.adapt_image(a, (0, 7))[0], alone, atol=1e-6)


def test_ttt_takes_a_cell_image_by_image_in_the_shuffled_order(trained_stats_model):
    model = trained_stats_model
    cell = batch(5, seed=11)
    settings = adaptation.Settings(batch_size=2, ttt_lr=1e-2, ttt_batch_size=4, ttt_online=True, seed=3)
    logits = adaptation.predict_cell(adaptation.Adapter(model, "ttt", settings), cell)
    order = np.random.default_rng(3).permutation(len(cell))
    by_hand = adaptation.Adapter(model, "ttt", settings)
    expected = np.empty_like(logits)
    for position, index in enumerate(order):
        expected[index] = by_hand.adapt_image(cell[index], (3, position))[0]
    np.testing.assert_allclose(logits, expected, atol=1e-5)


# ---------------------------------------------------------------- batch statistics, dropout, retracing
@pytest.fixture(scope="module")
def dropout_models():
    keras.utils.set_random_seed(1)
    noisy = RobustSSLModel(depth=10, width=1, dropout=0.5, tasks=("rotation", "ir"), lambdas=[0.5, 0.5])
    plain = RobustSSLModel(depth=10, width=1, tasks=("rotation", "ir"), lambdas=[0.5, 0.5])
    plain.set_weights(noisy.get_weights())  # dropout has no weights: the same network without it
    assert any(isinstance(layer, keras.layers.Dropout) for layer in adaptation_norm.layers(noisy.trunk))
    return noisy, plain


def test_bn_switches_only_batch_norm_not_dropout(dropout_models):
    noisy, plain = dropout_models
    x = batch(8, seed=12)
    adapter = adaptation.Adapter(noisy, "bn")
    first = adapter.predict(x)
    np.testing.assert_array_equal(adapter.predict(x), first)
    np.testing.assert_array_equal(adaptation.Adapter(noisy, "bn").predict(x), first)
    # = the network without dropout, in training mode (batch moments), its statistics untouched.
    expected = plain.classifier(adaptation.stateless(plain.trunk)(x, training=True))
    np.testing.assert_allclose(first, expected, atol=1e-5)


@pytest.mark.parametrize("mode", ["tent", "ttt", "ttt_batch", "ttt_bn"])
def test_adapting_modes_are_deterministic_with_dropout(dropout_models, mode):
    noisy, _ = dropout_models
    cell = batch(6, seed=13)
    settings = adaptation.Settings(
        batch_size=3, tent_lr=1e-2, ttt_lr=1e-2, ttt_batch_size=4, ttt_batch_steps=1
    )
    first = adaptation.predict_cell(adaptation.Adapter(noisy, mode, settings), cell)
    np.testing.assert_array_equal(
        adaptation.predict_cell(adaptation.Adapter(noisy, mode, settings), cell), first
    )


@pytest.mark.parametrize("mode", ["bn", "tent", "ttt", "ttt_batch", "ttt_bn"])
def test_episodic_modes_are_traced_once(model, mode):
    settings = adaptation.Settings(batch_size=3, tent_episodic=True, ttt_batch_size=4)
    adapter = adaptation.Adapter(model, mode, settings)
    for n in (7, 5, 3):  # several cells, batches of 3 and shorter ones, a reset per batch / image / cell
        adaptation.predict_cell(adapter, batch(n, seed=n))
    assert adapter.traces and set(adapter.traces.values()) == {1}, dict(adapter.traces)
    if mode in ("tent", "ttt_batch", "ttt_bn"):  # the reset restores the optimiser's state too
        adapter.reset()
        assert int(adapter._optimizer.iterations) == 0
        assert all(
            not np.any(v.numpy())
            for v in adapter._optimizer.variables
            if "iteration" not in v.path and "learning_rate" not in v.path
        )
        assert float(adapter._optimizer.learning_rate) == pytest.approx(
            settings.tent_lr if mode == "tent" else settings.ttt_lr
        )


def test_ttt_bn_predicts_with_the_batch_statistics(model):
    x = batch(8, seed=14)
    # Without a step, ttt_bn is bn and ttt_batch is none.
    frozen = adaptation.Settings(ttt_lr=0.0, ttt_batch_steps=1)
    np.testing.assert_allclose(
        adaptation.Adapter(model, "ttt_bn", frozen).predict(x),
        adaptation.Adapter(model, "bn").predict(x),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        adaptation.Adapter(model, "ttt_batch", frozen).predict(x), model(x, training=False), atol=1e-5
    )
    settings = adaptation.Settings(ttt_lr=1e-2, ttt_batch_steps=1)
    for mode, batch_stats in [("ttt_bn", True), ("ttt_batch", False)]:
        adapter = adaptation.Adapter(model, mode, settings)
        got = adapter.predict(x)
        assert not np.array_equal(adapter.params[0].numpy(), model.trunk.trainable_variables[0].numpy())
        np.testing.assert_allclose(got, adapter._logits(adapter.values(), x, batch_stats), atol=1e-5)


# ---------------------------------------------------------------- in the robustness evaluation
@pytest.fixture(scope="module")
def rotation_run(tmp_path_factory):
    from conftest import tiny_config

    from robust_ssl.train import train_and_evaluate

    workdir = tmp_path_factory.mktemp("rotation_run")
    train_and_evaluate(tiny_config("rotation", **{"train.epochs": 1, "data.num_test": 48}), str(workdir))
    return str(workdir)


def test_evaluation_without_adapt_is_unchanged_and_none_mode_equals_it(rotation_run, tmp_path):
    from robust_ssl.robustness import evaluation

    kwargs = dict(
        workdir=rotation_run,
        corruptions=("fog", "gaussian_noise"),
        severities=(1, 5),
        progress=False,
        log=lambda _: None,
    )
    plain, _ = evaluation.evaluate_run("generate", output_dir=str(tmp_path / "a"), **kwargs)
    assert "modes" not in plain and "adaptation" not in plain
    adapted, paths = evaluation.evaluate_run(
        "generate",
        output_dir=str(tmp_path / "b"),
        adapt=("none", "bn", "tent", "ttt"),
        adapt_settings=adaptation.Settings(batch_size=16, ttt_batch_size=4),
        **kwargs,
    )
    # Mode "none" is the model as it is (other batches: float round-off only).
    for a, b in zip(
        adapted["modes"]["none"]["cells"] + [adapted["modes"]["none"]["clean"]],
        plain["cells"] + [plain["clean"]],
    ):
        assert a["accuracy"] == b["accuracy"] and a["ece"] == pytest.approx(b["ece"], abs=1e-6)
    summary = adapted["adaptation"]
    assert set(summary) == {"none", "bn", "tent", "ttt"}
    assert summary["none"]["gain"]["mean_accuracy_all"] == 0.0
    assert set(summary["bn"]["severity_means"]) == {"1", "5"}
    assert all(v["seconds_per_image"] > 0 for v in summary.values())
    text = open(paths["markdown"]).read()
    assert "## Test-time adaptation" in text and "| tent |" in text
    import csv

    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert {r["mode"] for r in rows} == {"none", "bn", "tent", "ttt"} and len(rows) == 4 * 5
    assert os.path.exists(paths["heatmap_bn"]) and os.path.exists(paths["comparison"])


def test_ttt_is_refused_in_one_line_for_a_run_without_the_heads(tmp_path):
    from conftest import run_cli, tiny_config

    from robust_ssl.train import train_and_evaluate

    workdir = tmp_path / "ir_run"
    train_and_evaluate(tiny_config("ir", **{"train.epochs": 1}), str(workdir))
    result = run_cli(
        "evaluate", f"--workdir={workdir}", "--cifar10c=generate", "--adapt=none,ttt", timeout=300
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --adapt=ttt needs a run trained with")
    assert "Traceback" not in result.stderr


def test_exported_batch_stats_signature_equals_bn_mode(model, tmp_path):
    from robust_ssl import export

    path = export.export_saved_model(model, str(tmp_path / "export"), with_batch_stats=True)
    loaded = tf.saved_model.load(path)
    pixels = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype(np.uint8)
    served = loaded.signatures["serving_batch_stats"](images=tf.constant(pixels))["logits"].numpy()
    expected = adaptation.Adapter(model, "bn").predict(pixels.astype(np.float32) / 255.0)
    np.testing.assert_allclose(served, expected, atol=1e-4)
    plain = loaded.signatures["serving_default"](images=tf.constant(pixels))["logits"].numpy()
    np.testing.assert_allclose(plain, model(pixels.astype(np.float32) / 255.0, training=False), atol=1e-4)


def test_a_class_sorted_cell_is_adapted_in_mixed_batches_and_returned_in_order(model):
    # Two "classes" in sorted order, as an image folder is read: without the
    # shuffle every batch of 8 would hold one of them only.
    cell = np.concatenate([batch(8, seed=6) * 0.2, batch(8, seed=7) * 0.2 + 0.8])
    settings = adaptation.Settings(batch_size=8)
    adapter = adaptation.Adapter(model, "bn", settings)
    seen = []
    predict = adapter.predict
    adapter.predict = lambda x: seen.append(x.copy()) or predict(x)
    logits = adaptation.predict_cell(adapter, cell)
    assert len(seen) == 2
    for x in seen:  # both halves in each test batch
        means = x.mean(axis=(1, 2, 3))
        assert (means < 0.5).any() and (means > 0.5).any()
    # Each image's logits come back at its own index: the per-batch forward of
    # the shuffled stream, put back in the cell's order.
    order = np.random.default_rng(settings.seed).permutation(len(cell))
    expected = np.empty_like(logits)
    expected[order[:8]] = predict(cell[order[:8]])
    expected[order[8:]] = predict(cell[order[8:]])
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    # Without adaptation the order does not matter at all.
    none = adaptation.Adapter(model, "none", settings)
    np.testing.assert_allclose(adaptation.predict_cell(none, cell), model(cell, training=False), atol=1e-5)
    sorted_stream = adaptation.Settings(batch_size=8, shuffle=False)
    unshuffled = adaptation.predict_cell(adaptation.Adapter(model, "bn", sorted_stream), cell)
    assert not np.allclose(unshuffled, logits, atol=1e-3)  # one-class batches: other statistics
