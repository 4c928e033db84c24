"""Tests of the CIFAR-10-C corruption generator (robust_ssl.data.corruptions)."""

import os

import numpy as np
import pytest
from conftest import run_cli
from scipy import ndimage

from robust_ssl.data import cifar10c, splits, synthetic
from robust_ssl.data import corruptions as C
from robust_ssl.errors import UserError

RANDOM = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "glass_blur",
    "motion_blur",
    "snow",
    "frost",
    "fog",
    "elastic_transform",
    "spatter",
)
# Corruptions whose original parameters make every severity strictly stronger
# than the one before (noise scale, blur width, zoom range, quality, ...).
MONOTONE = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "defocus_blur",
    "gaussian_blur",
    "zoom_blur",
    "snow",
    "fog",
    "brightness",
    "contrast",
    "pixelate",
    "jpeg_compression",
)


@pytest.fixture(scope="module")
def images():
    return synthetic.generate(16, seed=7)[0]


@pytest.fixture(scope="module")
def outputs(images):
    """Every corruption at every severity of the same 16 images, seed 0."""
    return {(name, s): C.corrupt(images, name, s, seed=0) for name in C.ALL_CORRUPTIONS for s in C.SEVERITIES}


def distortion(outputs, images, name):
    """Mean |corrupted - clean| per severity, in [0, 255] units."""
    return [np.abs(outputs[name, s].astype(np.float64) - images).mean() for s in C.SEVERITIES]


def test_registry_has_the_19_corruptions():
    assert tuple(C.CORRUPTIONS) == cifar10c.ALL_CORRUPTIONS
    assert len(cifar10c.BENCHMARK_CORRUPTIONS) == 15 and len(cifar10c.EXTRA_CORRUPTIONS) == 4
    assert set(RANDOM) | set(MONOTONE) <= set(C.CORRUPTIONS)


def test_every_output_is_uint8_of_the_same_shape_and_changes_every_image(images, outputs):
    for (name, severity), out in outputs.items():
        assert out.dtype == np.uint8 and out.shape == images.shape, (name, severity)
        diff = np.abs(out.astype(np.int16) - images)
        assert diff.mean() > 0.5, (name, severity, diff.mean())
        assert (diff >= 2).mean() > 0.005, (name, severity)  # more than rounding
        assert (diff.reshape(len(images), -1).max(axis=1) > 0).all(), (name, severity)


def test_public_functions_equal_corrupt(images):
    for name, fn in C.CORRUPTIONS.items():
        np.testing.assert_array_equal(fn(images[:2], 3, seed=5), C.corrupt(images[:2], name, 3, seed=5))


def test_same_seed_same_images_other_seed_other_images(images, outputs):
    for name in C.ALL_CORRUPTIONS:
        again = C.corrupt(images, name, 3, seed=0)
        np.testing.assert_array_equal(again, outputs[name, 3])
        if name in RANDOM:
            assert not np.array_equal(C.corrupt(images, name, 3, seed=1), again), name


def test_result_does_not_depend_on_batching(images):
    for name in RANDOM:
        whole = C.corrupt(images, name, 4, seed=3)
        part = C.corrupt(images[5:9], name, 4, seed=3, start_index=5)
        np.testing.assert_array_equal(part, whole[5:9], err_msg=name)


def test_global_numpy_rng_is_neither_used_nor_consulted(images):
    # The legacy global RNG on purpose: the generator must ignore it.
    state = np.random.get_state()  # noqa: NPY002
    np.random.seed(1)  # noqa: NPY002
    first = {name: C.corrupt(images[:3], name, 5, seed=2) for name in RANDOM}
    np.random.seed(2)  # noqa: NPY002
    for name in RANDOM:
        np.testing.assert_array_equal(C.corrupt(images[:3], name, 5, seed=2), first[name])
    np.random.set_state(state)  # noqa: NPY002
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    C.corrupt(images[:3], "fog", 2, seed=0)
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # noqa: NPY002


@pytest.mark.parametrize(
    "args",
    [
        ("no_such_corruption", 1),
        ("fog", 0),
        ("fog", 6),
    ],
)
def test_bad_name_or_severity_is_a_value_error(images, args):
    with pytest.raises(ValueError):
        C.corrupt(images, *args)


def test_bad_images_are_a_value_error(images):
    with pytest.raises(ValueError, match="uint8"):
        C.corrupt(images.astype(np.float32), "fog", 1)
    with pytest.raises(ValueError, match="32, 32, 3"):
        C.corrupt(images[:, :16], "fog", 1)
    with pytest.raises(ValueError, match="seed"):
        C.corrupt(images, "fog", 1, seed=-1)


# ---------------------------------------------------------------- severity behaviour
@pytest.mark.parametrize("name", MONOTONE)
def test_distortion_grows_with_severity(images, outputs, name):
    d = distortion(outputs, images, name)
    assert all(a < b for a, b in zip(d, d[1:])), d


def test_motion_blur_severities_3_and_4_are_the_same_blur(images, outputs):
    # (radius, sigma) = (6, 2) and (8, 2): the wider kernel's extra taps weigh
    # exp(-7**2 / 8) / sum < 1e-2 of a grey level, so with the same angle the
    # images agree to rounding; the other steps grow.
    d = distortion(outputs, images, "motion_blur")
    diff = np.abs(outputs["motion_blur", 3].astype(int) - outputs["motion_blur", 4])
    assert diff.max() <= 1
    assert d[0] < d[1] < d[2] < d[4] and d[3] < d[4]


def test_glass_blur_second_pass_adds_distortion(images, outputs):
    # Severities 4 and 5 repeat the local shuffling of 2 and 3 (same sigma) in a
    # second pass. Severities 1-3 change sigma only, in opposite directions for
    # the blur and for the visibility of the shuffle, so they are close.
    d = distortion(outputs, images, "glass_blur")
    assert d[3] > d[1] * 1.1 and d[4] > d[2] * 1.1
    assert max(d[:3]) < 1.15 * min(d[:3])


def test_frost_follows_the_blend_weights(images, outputs):
    # Same frost crop at every severity; severities 1-2 add 0.2 and 0.3 of it to
    # the full image, 3-4 add 0.4 of it to 0.9 and 0.85 of the image.
    f = {s: outputs["frost", s].astype(int) for s in C.SEVERITIES}
    assert (f[2] >= f[1]).all() and (f[2] > f[1]).mean() > 0.5
    assert (f[4] <= f[3]).all() and (f[4] < f[3]).mean() > 0.5
    d = distortion(outputs, images, "frost")
    assert d[0] < d[1] and d[3] < d[2]  # not monotone: severity 4 only darkens


def test_elastic_distortion_shrinks_with_the_affine_jitter(images, outputs):
    # The random affine's jitter falls from 0.08 to 0.03 image sizes while the
    # elastic field (alpha, sigma) stays sub-pixel: distortion decreases.
    d = distortion(outputs, images, "elastic_transform")
    assert d[0] > d[1] > d[2] > d[4]


def test_spatter_water_then_mud(images, outputs):
    # 1-3: translucent water, more of it each step; 4-5: opaque mud on a
    # smaller area than the water of 3.
    d = distortion(outputs, images, "spatter")
    assert d[0] < d[1] < d[2] and d[3] < d[4] and d[3] < d[2]


def test_saturate_follows_the_saturation_change(images, outputs):
    # S -> 0.3 S, 0.1 S, 1.5 S, 2 S + 0.1, 2.5 S + 0.2 (clipped to 1): the
    # change is 0.7 S, 0.9 S, <= 0.5 S, then larger than that of 3 twice.
    d = distortion(outputs, images, "saturate")
    assert d[2] < d[0] < d[1] and d[2] < d[3] < d[4]


# ---------------------------------------------------------------- oracles
def test_glass_blur_equals_the_original_loop(images):
    """The original's loop, literally, tuple 'swap' on numpy views included."""
    from skimage.filters import gaussian

    x = images[:3]
    for severity, (sigma, iterations) in {1: (0.05, 1), 4: (0.25, 2)}.items():
        expected = []
        for image, rng in zip(x, C._image_rngs(9, "glass_blur", len(x), 0)):
            y = np.uint8(gaussian(image / 255.0, sigma=sigma, channel_axis=-1) * 255)
            draws = rng.integers(-1, 1, size=(iterations, 30, 30, 2))
            for it in range(iterations):
                for a, h in enumerate(range(31, 1, -1)):
                    for b, w in enumerate(range(31, 1, -1)):
                        dx, dy = draws[it, a, b]
                        hp, wp = h + dy, w + dx
                        y[h, w], y[hp, wp] = y[hp, wp], y[h, w]
            expected.append(np.uint8(np.clip(gaussian(y / 255.0, sigma=sigma, channel_axis=-1), 0, 1) * 255))
        np.testing.assert_array_equal(C.corrupt(x, "glass_blur", severity, seed=9), np.stack(expected))


def test_hsv_and_blur_match_scikit_image(images):
    from skimage import color
    from skimage.filters import gaussian

    x = images[:4]
    for severity, c in ((2, 0.1), (5, 0.3)):
        hsv = color.rgb2hsv(x / 255.0)
        hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
        expected = np.uint8(np.clip(color.hsv2rgb(hsv), 0, 1) * 255)
        got = C.corrupt(x, "brightness", severity)
        assert np.abs(got.astype(int) - expected).max() <= 1
    hsv = color.rgb2hsv(x / 255.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * 2.5 + 0.2, 0, 1)
    expected = np.uint8(np.clip(color.hsv2rgb(hsv), 0, 1) * 255)
    assert np.abs(C.corrupt(x, "saturate", 5).astype(int) - expected).max() <= 1
    expected = np.stack(
        [np.uint8(np.clip(gaussian(i / 255.0, sigma=1, channel_axis=-1), 0, 1) * 255) for i in x]
    )
    assert np.abs(C.corrupt(x, "gaussian_blur", 5).astype(int) - expected).max() <= 1


def test_clipped_zoom_equals_scipy_zoom():
    x = np.random.default_rng(0).random((2, 32, 32, 3))
    for factor in (1.03, 1.11, 1.25, 1.75, 2.25):
        crop = int(np.ceil(32 / factor))
        top = (32 - crop) // 2
        zoomed = ndimage.zoom(x[:, top : top + crop, top : top + crop], (1, factor, factor, 1), order=1)
        trim = (zoomed.shape[1] - 32) // 2
        np.testing.assert_allclose(
            C._clipped_zoom(x, factor), zoomed[:, trim : trim + 32, trim : trim + 32], atol=1e-9
        )


def test_motion_blur_kernel_is_imagemagicks_half_gaussian():
    image = np.random.default_rng(1).random((32, 32))
    radius, sigma = 6, 2.0
    w = np.exp(-(np.arange(13) ** 2) / (2 * sigma**2))
    w /= w.sum()
    # angle 0: along +x, edge pixels repeated; angle 90: along +y.
    expected = sum(w[i] * image[:, np.minimum(np.arange(32) + i, 31)] for i in range(13))
    np.testing.assert_allclose(C._motion_blur_image(image, radius, sigma, 0.0), expected, atol=1e-12)
    expected = sum(w[i] * image[np.minimum(np.arange(32) + i, 31), :] for i in range(13))
    np.testing.assert_allclose(C._motion_blur_image(image, radius, sigma, 90.0), expected, atol=1e-12)


def test_defocus_kernel_is_a_normalised_disk():
    k = C._defocus_kernel(1.5, 0.1)
    assert k.shape == (5, 5) and abs(k.sum() - 1) < 1e-9
    np.testing.assert_allclose(k, k.T)
    np.testing.assert_allclose(k, k[::-1, ::-1])
    assert k[1:4, 1:4].min() > 0.1 and k[0].max() < 1e-3  # the 3x3 disk of radius 1.5, barely blurred


def test_frost_textures_are_fixed_and_frost_like():
    textures = C.frost_textures()
    assert len(textures) == 5
    for t in textures:
        assert min(t.shape[:2]) >= 128 and t.min() >= 0 and t.max() <= 255
        assert 100 < t.mean() < 180 and t.std() > 20
        assert t[..., 2].mean() > t[..., 0].mean()  # blue-white
    assert (
        C._frost_texture(np.random.default_rng(C._FROST_SEED), C._FROST_SHAPES[0]).tobytes()
        == textures[0].tobytes()
    )


# ---------------------------------------------------------------- data sets
def test_corrupted_holdout_holds_every_extra_block_in_order(images):
    labels = np.arange(len(images)) % 10
    x, y = C.corrupted_holdout(images[:5], labels[:5], seed=4)
    assert x.shape == (4 * 5 * 5, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int32
    np.testing.assert_array_equal(y, np.tile(labels[:5], 20))
    block = 0
    for name in cifar10c.EXTRA_CORRUPTIONS:
        for s in C.SEVERITIES:
            np.testing.assert_array_equal(x[block * 5 : block * 5 + 5], C.corrupt(images[:5], name, s, 4))
            block += 1
    x2, _ = C.corrupted_holdout(images[:5], labels[:5], corruptions=("fog",), severities=(2,), seed=4)
    np.testing.assert_array_equal(x2, C.corrupt(images[:5], "fog", 2, 4))


def test_written_set_has_the_official_layout(images, tmp_path):
    labels = np.arange(len(images)) % 10
    paths = C.write_corrupted_set(
        images[:6], labels[:6], str(tmp_path), ("fog", "pixelate"), seed=2, chunk_size=4, progress=False
    )
    assert sorted(os.path.basename(p) for p in paths) == ["fog.npy", "labels.npy", "pixelate.npy"]
    assert sorted(os.listdir(tmp_path)) == ["fog.npy", "labels.npy", "pixelate.npy"]  # no partial files left
    fog = np.load(tmp_path / "fog.npy")
    assert fog.shape == (30, 32, 32, 3) and fog.dtype == np.uint8
    stored = np.load(tmp_path / "labels.npy")
    assert stored.dtype == np.uint8 and stored.tolist() == labels[:6].tolist() * 5
    for s in (1, 3, 5):
        x, y = cifar10c.load_npy_block(str(tmp_path), "fog", s)
        np.testing.assert_array_equal(x, C.corrupt(images[:6], "fog", s, seed=2))
        np.testing.assert_array_equal(y, labels[:6])
    test = cifar10c.load_part("npy", "test", 2, corruptions=("fog", "pixelate"), directory=str(tmp_path))
    assert sum(1 for _ in test) == 2 * 5 * 4


def test_parse_corruptions_and_severities():
    assert cifar10c.parse_corruptions("all") == cifar10c.ALL_CORRUPTIONS
    assert cifar10c.parse_corruptions("extra,fog") == ("fog", *cifar10c.EXTRA_CORRUPTIONS)
    assert cifar10c.parse_corruptions("elastic, frosted_glass_blur") == ("glass_blur", "elastic_transform")
    assert cifar10c.parse_severities("1-3,5") == (1, 2, 3, 5)
    for bad in ("fogg", ""):
        with pytest.raises(UserError):
            cifar10c.parse_corruptions(bad)
    for bad in ("0", "6", "x", "1-7"):
        with pytest.raises(UserError):
            cifar10c.parse_severities(bad)


def _run_tool(*args):
    return run_cli("make-cifar10c", *args, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)


def test_make_cifar10c_tool_on_an_image_folder(images, tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    for k, image in enumerate(images[:6]):
        (folder / f"class_{k % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"class_{k % 2}" / f"{k}.png")
    out = tmp_path / "out"
    result = _run_tool(
        f"--folder={folder}", f"--output={out}", "--corruptions=fog,jpeg_compression", "--seed=3"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["fog.npy", "jpeg_compression.npy", "labels.npy"]
    # Files are read class by class (images 0, 2, 4 are class_0) and written in
    # the tool's seeded, stratified order, so no block starts with one class.
    order = splits.stratified_shuffle([0, 0, 0, 1, 1, 1], seed=3)
    labels = np.load(out / "labels.npy")
    assert labels.tolist() == np.asarray([0, 0, 0, 1, 1, 1])[order].tolist() * 5
    assert labels[:6].tolist() != sorted(labels[:6].tolist())
    clean = images[[0, 2, 4, 1, 3, 5]][order]
    np.testing.assert_array_equal(np.load(out / "fog.npy")[12:18], C.corrupt(clean, "fog", 3, seed=3))
    bad = _run_tool(f"--output={out}")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: give exactly one of --folder")


def test_writing_a_set_into_a_log_prints_plain_lines(images, tmp_path, capsys):
    """Redirected output gets one line per corruption, no carriage returns or colour codes."""
    labels = np.arange(len(images)) % 10
    C.write_corrupted_set(images[:2], labels[:2], str(tmp_path), ("fog", "pixelate"), seed=2, progress=True)
    out = capsys.readouterr().out
    assert "\r" not in out and "\x1b" not in out
    assert out.splitlines() == [
        "fog: written (10 of 20 images)",
        "pixelate: written (20 of 20 images)",
    ]
