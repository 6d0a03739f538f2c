"""ImageNet-C corruptions on real Imagenette images from the shipped sample."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagenette_drift.corruptions import CORRUPTIONS, corrupt
from tests.conftest import import_or_fail

import_or_fail(
    "corrupt_tta",
    "the corruptions extra (pip install 'imagenette-drift[corruptions]')",
    allow_module_level=True,
)

GRAYSCALE = Path("val") / "n02979186" / "n02979186_11410.JPEG"  # relative to the sample root
# Severities 1-2 of ImageNet-C's elastic_transform use large smooth displacements; 3-5 use small local ones,
# so the pixel difference from the original is not monotone in severity for this corruption.
NON_MONOTONE = {"elastic_transform"}
UNSEEDABLE = {"impulse_noise"}


def _images(sample_root: Path, n: int) -> list[np.ndarray]:
    paths = sorted(sample_root.glob("val/*/*.JPEG"))
    paths = paths[:: max(1, len(paths) // n)][:n]
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


@pytest.fixture(scope="module")
def images(sample_root: Path) -> list[np.ndarray]:
    return _images(sample_root, 4)


def _mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def test_corruption_names_are_the_19_imagenet_c_names() -> None:
    import corrupt_tta

    assert len(CORRUPTIONS) == len(set(CORRUPTIONS)) == 19
    assert set(CORRUPTIONS) == set(corrupt_tta.corruption_dict)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_severities_give_uint8_rgb_of_the_same_size_and_grow_stronger(name: str, images) -> None:
    differences = {1: [], 5: []}
    for image in images:
        for severity, diffs in differences.items():
            out = corrupt(image, name, severity, seed=None if name in UNSEEDABLE else 0)
            assert out.dtype == np.uint8
            assert out.shape == image.shape
            diffs.append(_mean_abs_diff(out, image))
    # Averaged over images: on a single bright image frost or saturate at severity 1 can change more pixels.
    if name not in NON_MONOTONE:
        assert np.mean(differences[5]) > np.mean(differences[1]) > 0.0


@pytest.mark.parametrize("name", sorted(set(CORRUPTIONS) - UNSEEDABLE))
def test_seed_makes_corruption_deterministic_and_restores_numpy_state(name: str, images) -> None:
    np.random.seed(123)
    state_before = np.random.get_state()[1].copy()
    first = corrupt(images[0], name, 3, seed=7)
    assert np.array_equal(np.random.get_state()[1], state_before)
    assert np.array_equal(corrupt(images[0], name, 3, seed=7), first)


def test_unseedable_corruption_warns_when_seeded(images) -> None:
    with pytest.warns(UserWarning, match="impulse_noise cannot be seeded"):
        corrupt(images[0], "impulse_noise", 2, seed=0)


def test_grayscale_inputs_become_rgb(sample_root: Path) -> None:
    pil_gray = Image.open(sample_root / GRAYSCALE)
    assert pil_gray.mode == "L"
    from_pil = corrupt(pil_gray, "contrast", 2)
    from_array = corrupt(np.asarray(pil_gray), "contrast", 2)
    assert from_pil.shape == (pil_gray.height, pil_gray.width, 3)
    assert np.array_equal(from_pil, from_array)


@pytest.mark.parametrize(
    ("name", "severity", "match"),
    [
        ("fisheye", 1, "Unknown corruption 'fisheye'; valid names are: gaussian_noise, shot_noise"),
        ("fog", 0, "`severity` must be an integer from 1 to 5, got 0"),
        ("fog", 6, "`severity` must be an integer from 1 to 5, got 6"),
        ("fog", 2.0, "`severity` must be an integer from 1 to 5, got 2.0"),
        ("fog", True, "`severity` must be an integer from 1 to 5, got True"),
    ],
)
def test_bad_name_or_severity_is_rejected(name: str, severity, match: str, images) -> None:
    with pytest.raises(ValueError, match=match):
        corrupt(images[0], name, severity)


def test_bad_image_is_rejected(images) -> None:
    with pytest.raises(TypeError, match="dtype uint8"):
        corrupt(images[0].astype(np.float32), "fog", 1)
    with pytest.raises(ValueError, match="drop an alpha channel"):
        corrupt(np.zeros((8, 8, 4), dtype=np.uint8), "fog", 1)


def test_missing_corrupt_tta_names_the_extra(monkeypatch, images) -> None:
    monkeypatch.setitem(sys.modules, "corrupt_tta", None)  # what `import` sees when the package is absent
    with pytest.raises(ImportError, match=r"pip install 'imagenette-drift\[corruptions\]'"):
        corrupt(images[0], "fog", 1)


@pytest.mark.slow
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_severity_on_more_sample_images(name: str, sample_root: Path) -> None:
    for image in [*_images(sample_root, 5), np.asarray(Image.open(sample_root / GRAYSCALE))]:
        for severity in range(1, 6):
            out = corrupt(image, name, severity, seed=None if name in UNSEEDABLE else severity)
            assert out.shape == (image.shape[0], image.shape[1], 3)
            assert out.dtype == np.uint8


def test_motion_blur_grows_with_every_severity_as_in_imagenet_c(images) -> None:
    # ImageNet-C's sigma (3, 5, 8, 12, 15 px) sets the streak; a kernel that ignored it made severities 2-4 equal.
    diffs = [
        np.mean([_mean_abs_diff(corrupt(im, "motion_blur", s, seed=0), im) for im in images])
        for s in range(1, 6)
    ]
    assert all(b > a + 0.5 for a, b in itertools.pairwise(diffs)), diffs


def test_motion_blur_streak_is_one_sided_and_gaussian_weighted() -> None:
    from imagenette_drift.corruptions import _motion_blur

    impulse = np.zeros((61, 61))
    impulse[30, 30] = 1.0
    out = _motion_blur(impulse, radius=10, sigma=3, angle=0)
    assert out.sum() == pytest.approx(1.0)
    row = out[30]
    assert np.abs(row[31:]).max() < 1e-9  # the streak runs one way only (OpenCV's DFT leaves ~1e-17)
    taps = row[30:9:-1]
    assert np.all(np.diff(taps[:12]) < 0)  # weights fall off away from the pixel
    assert taps[3] / taps[0] == pytest.approx(np.exp(-9 / 18))


def test_fog_severities_3_and_4_differ_in_roughness(images) -> None:
    # Both have strength 2.5; ImageNet-C's wibbledecay (1.7, 1.5) is what sets them apart.
    assert not np.array_equal(corrupt(images[0], "fog", 3, seed=0), corrupt(images[0], "fog", 4, seed=0))
