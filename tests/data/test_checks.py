"""Tier 1: the shared input checks (bts_studio/data/checks.py) and the user-error hook (bts_studio/utils/errors.py).

docs/reliability.md names these tests per case.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bts_studio.data import checks
from bts_studio.data.checks import UserError


def rotation(angle: float = 0.3) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rigid(r: np.ndarray, t=(1.0, 2.0, 3.0)) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = r, t
    return matrix


@pytest.mark.parametrize(
    "matrix, message",
    [
        (rigid(1.5 * rotation()), "not a proper rotation"),  # the "scaled by 1.5"
        (rigid(2.0 * rotation()), "det R = 8"),
        (rigid(rotation() @ np.diag([1.0, 1.0, -1.0])), "det R = -1"),  # a mirror
        (rigid(rotation() @ np.array([[1.0, 0.2, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])), "not a proper"),  # shear
        (rigid(rotation()) * np.array([1, 1, 1, 1])[:, None] + np.diag([0, 0, 0, 1.0]), "last row"),
        (np.full((4, 4), np.nan), "NaN"),
    ],
)
def test_check_rigid_refuses_non_rigid_matrices_naming_where_and_fix(matrix, message):
    with pytest.raises(UserError, match=rf"^poses.txt line 7: .*{message}.*Re-export the poses\.$"):
        checks.check_rigid(matrix, "poses.txt line 7", "Re-export the poses.")
    assert checks.first_non_rigid(np.stack([rigid(rotation()), matrix])) == 1


def test_check_rigid_accepts_rotations_within_the_stated_tolerance():
    noisy = rotation() + 1e-5  # text files store about 6-10 digits
    checks.check_rigid(rigid(noisy), "x", "y")
    checks.check_rigid(rigid(noisy)[:3], "x", "y")
    assert checks.first_non_rigid(np.stack([rigid(rotation())] * 3)) is None
    with pytest.raises(UserError):
        checks.check_rigid(rigid(rotation() * (1 + 10 * checks.ROTATION_TOLERANCE)), "x", "y")


@pytest.mark.parametrize(
    "fx, fy, cx, cy, message",
    [
        (0.0, 100.0, 16.0, 16.0, "fx=0.0"),
        (-50.0, -50.0, 16.0, 16.0, "fx=-50.0, fy=-50.0"),
        (float("nan"), 100.0, 16.0, 16.0, "fx=nan"),
        (100.0, 100.0, float("inf"), 16.0, "cx=inf"),
        (100.0, 100.0, 0.0, 400.0, "principal point .* outside the 32x32 image"),
    ],
)
def test_degenerate_intrinsics_are_refused(fx, fy, cx, cy, message):
    with pytest.raises(UserError, match=f"^cameras.npz: camera_mat_3: .*{message}"):
        checks.check_pixel_intrinsics(fx, fy, cx, cy, 32, 32, "cameras.npz: camera_mat_3", "fix")


def _image_in_mode(path: Path, mode: str) -> np.ndarray:
    """Write an image in ``mode``; return the RGB the rule must give for it."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    grey = rgb[..., 0]
    if mode == "P":
        image = Image.fromarray(rgb).quantize(colors=16)
        expected = np.asarray(image.convert("RGB"))
    elif mode == "LA":
        image = Image.fromarray(np.stack([grey, 255 - grey], -1), mode="LA")
        expected = np.repeat(grey[..., None], 3, -1)
    elif mode == "RGBA":
        image = Image.fromarray(np.concatenate([rgb, np.zeros_like(grey)[..., None]], -1), mode="RGBA")
        expected = rgb  # alpha is dropped (SRN, DVR, pixelNeRF), not composited
    elif mode == "I;16":
        values = np.minimum(grey.astype(np.int64) * 257 + 100, 65535)
        image = Image.fromarray(values.astype(np.uint16))
        expected = np.repeat(np.round(values * 255 / 65535).astype(np.uint8)[..., None], 3, -1)
    elif mode == "L":
        image = Image.fromarray(grey)
        expected = np.repeat(grey[..., None], 3, -1)
    else:
        image, expected = Image.fromarray(rgb), rgb
    image.save(path)
    return expected


@pytest.mark.parametrize("mode", ["P", "LA", "RGBA", "I;16", "L", "RGB"])
def test_every_image_mode_becomes_rgb_by_the_documented_rule(tmp_path, mode):
    source = tmp_path / "view.png"
    expected = _image_in_mode(source, mode)
    np.testing.assert_array_equal(checks.read_rgb_image(source, "a view"), expected)
    served = checks.rgb_image_path(source, tmp_path / "cache", "a view", "--cache")
    assert (served == source) == (mode == "RGB")
    with Image.open(served) as image:
        assert image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), expected)


def test_truncated_png_and_jpeg_are_named(tmp_path):
    for suffix in ("png", "jpg"):
        path = tmp_path / f"view.{suffix}"
        Image.fromarray(np.zeros((40, 40, 3), np.uint8) + 90).save(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 20])
        with pytest.raises(UserError, match=rf"{path}: truncated"):
            checks.verify_image_file(path, "a view")
    (tmp_path / "not.png").write_text("hello")
    with pytest.raises(UserError, match=rf"{tmp_path / 'not.png'}: not a readable image"):
        checks.verify_image_file(tmp_path / "not.png", "a view")


def test_damaged_cache_entry_is_made_again(tmp_path):
    source = tmp_path / "view.png"
    _image_in_mode(source, "P")
    served = checks.rgb_image_path(source, tmp_path / "cache", "a view", "--cache")
    good = served.read_bytes()
    served.write_bytes(good[:30])  # a corrupted cache file
    again = checks.rgb_image_path(source, tmp_path / "cache", "a view", "--cache")
    assert again == served and again.read_bytes() == good


def test_truncated_npz_names_the_path(tmp_path):
    path = tmp_path / "cameras.npz"
    np.savez(path, world_mat_0=np.eye(4), camera_mat_0=np.eye(4))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match=rf"{path}: cannot be read as cameras \(BadZipFile"):
        checks.load_npz(path, "cameras")


def test_cache_folder_under_a_file_names_the_option(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"is a file, not a folder. Choose another folder with --cache-dir"):
        checks.ensure_writable_dir(tmp_path / "file" / "cache", "--cache-dir")


def test_stale_staging_folders_of_killed_generators_are_removed(tmp_path):
    out = tmp_path / "KITTI-360"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".KITTI-360.tmp-{dead.pid}-abc"
    live = tmp_path / f".KITTI-360.tmp-{os.getpid()}-def"
    stale.mkdir()
    live.mkdir()
    assert checks.remove_stale_staging(out) == [stale]
    assert not stale.exists() and live.exists()


def test_user_errors_end_with_the_message_and_no_traceback(tmp_path):
    script = "import bts_studio\nfrom bts_studio.data.checks import UserError\nraise UserError('/data/x.txt: bad')\n"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ})
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-2] == "error: /data/x.txt: bad"
    shown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env={**os.environ, "BTS_STUDIO_TRACEBACK": "1"})  # fmt: skip
    assert "Traceback" in shown.stderr and shown.stderr.strip().endswith("/data/x.txt: bad")


def test_ns_train_output_dir_under_a_file_names_output_dir(monkeypatch):
    from bts_studio.utils.errors import user_message

    monkeypatch.setattr(sys, "argv", ["/venv/bin/ns-train", "srn", "--output-dir", "/data/file/outputs"])
    error = NotADirectoryError(20, "Not a directory", "/data/file/outputs/cars/srn/2026")
    assert user_message(error) == (
        "cannot create the run folder /data/file/outputs/cars/srn/2026 (Not a directory). "
        "Choose another folder with --output-dir."
    )
    assert user_message(NotADirectoryError(20, "Not a directory", "/elsewhere/x")) is None
    monkeypatch.setattr(sys, "argv", ["/venv/bin/ns-eval"])
    assert user_message(error) is None


def test_unsupported_exports_are_refused_naming_the_supported_ones():
    from bts_studio.utils.errors import refuse_unsupported_export

    for command in ("pointcloud", "poisson"):
        with pytest.raises(UserError, match=rf"ns-export {command} is not supported for srn.*ns-export tsdf"):
            refuse_unsupported_export("srn", ["/x/bin/ns-export", command, "--load-config", "c.yml"])
    refuse_unsupported_export("srn", ["/x/bin/ns-export", "tsdf", "--load-config", "c.yml"])
    refuse_unsupported_export("srn", ["/x/bin/ns-train", "pointcloud"])
