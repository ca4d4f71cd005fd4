"""KITTI-360 readers on hand-written files in the official layouts, their errors, and, where the official
devkit (pip ``kitti360Scripts``) is installed, equivalence with it on generated data.

The strings below were written for these tests following the documented formats (``key: values`` lines,
one bare 3x4 in calib_cam_to_velo.txt, OpenCV YAML for the MEI fisheyes, ``frame + 12`` / ``frame + 16``
number rows for the poses); the numbers are made up.
"""

import numpy as np
import pytest
import torch

from bts_studio.core.fisheye import MeiParams, mei_project
from bts_studio.data.kitti360 import reader as formats
from bts_studio.data.synthetic.kitti360_cli import SynthKitti360Config, run


def _row(key: str, values) -> str:
    return f"{key}: " + " ".join(f"{value:e}" for value in values)


PERSPECTIVE = (
    "\n".join(
        [
            "calib_time: 01-Jan-2013 12:00:00",
            "corner_dist: 1.000000e-01",
            _row("S_00", [1392, 512]),
            _row("K_00", [790, 0, 690, 0, 790, 260, 0, 0, 1]),
            _row("D_00", [-0.34, 0.16, 1e-3, -1e-4, -0.04]),
            _row("R_00", [1, 0, 0, 0, 1, 0, 0, 0, 1]),
            _row("T_00", [0, 0, 0]),
            _row("S_rect_00", [1408, 376]),
            _row("R_rect_00", [0.99999, -0.004, 0, 0.004, 0.99999, 0, 0, 0, 1]),
            _row("P_rect_00", [550, 0, 680, 0, 0, 550, 240, 0, 0, 0, 1, 0]),
            _row("S_01", [1392, 512]),
            _row("S_rect_01", [1408, 376]),
            _row("R_rect_01", [1, 0, 0, 0, 1, 0, 0, 0, 1]),
            _row("P_rect_01", [550, 0, 680, -330, 0, 550, 240, 0, 0, 0, 1, 0]),
        ]
    )
    + "\n"
)

CAM_TO_POSE = """image_00: 0.03971292 -0.1006157 0.9941325 1.5 0.9991658 -0.005473564 \
-0.04046797 0 0.009513162 0.9949103 0.1003144 -0.65
image_01: 0.01949044 -0.1005737 0.9947387 1.6 0.9997495 -0.008989889 \
-0.02049755 0.6 0.01100411 0.994889 0.1003733 -0.65
image_02: 0.9995423 0.004147855 -0.02996479 0.7 -0.03000476 0.00993497 \
-0.9995004 -0.15 -0.003848084 0.999942 0.01005488 -1.07
image_03: -0.9996875 0.000589817 -0.02499242 0.7 -0.02499194 0.0008072462 \
0.9996873 0.75 0.0006098076 0.9999995 -0.0007922532 -1.08
"""

CAM_TO_VELO = "0.03964478 -0.09020837 0.9951335 0.8 -0.9991559 0.00714875 0.04045305 \
0.3 -0.01076316 -0.9958973 -0.08984881 -0.18\n"

FISHEYE = """%YAML:1.0
---
model_type: MEI
camera_name: image_02
image_width: 1400
image_height: 1400
mirror_parameters:
   xi: 2.2e+00
distortion_parameters:
   k1: 1.5e-02
   k2: 1.6e+00
   p1: 4.0e-04
   p2: 4.5e-04
projection_parameters:
   gamma1: 1.33e+03
   gamma2: 1.34e+03
   u0: 7.15e+02
   v0: 7.05e+02
"""

POSES = """3 0.680076 -0.7318317 0.04380726 3639.2 -0.7300871 -0.6814812 \
-0.05055836 1708.2 0.06685404 0.002400409 -0.9977599 122.1
7 0.680076 -0.7318317 0.04380726 3640.1 -0.7300871 -0.6814812 \
-0.05055836 1707.3 0.06685404 0.002400409 -0.9977599 122.1
"""

CAM0_TO_WORLD = """3 -0.7019755 -0.02926527 0.7115996 3640.3 -0.7121929 0.02405879 -0.7015714 1707.1 \
0.003411455 -0.9992821 -0.0377312 122.8 0 0 0 1
7 -0.7019755 -0.02926527 0.7115996 3641.1 -0.7121929 0.02405879 -0.7015714 1706.2 \
0.003411455 -0.9992821 -0.0377312 122.8 0 0 0 1
"""


def test_readers_on_official_layouts(tmp_path):
    (tmp_path / "perspective.txt").write_text(PERSPECTIVE)
    calibration = formats.read_perspective_calibration(tmp_path / "perspective.txt")
    assert calibration["P_rect_01"].shape == (3, 4) and calibration["P_rect_01"][0, 3] == -330.0
    assert calibration["R_rect_00"].shape == (3, 3) and calibration["R_rect_00"][0, 1] == -0.004
    np.testing.assert_array_equal(calibration["S_rect_01"], [1408, 376])

    (tmp_path / "calib_cam_to_pose.txt").write_text(CAM_TO_POSE)
    cam_to_pose = formats.read_cam_to_pose(tmp_path / "calib_cam_to_pose.txt")
    assert cam_to_pose["image_01"][1, 3] == 0.6 and np.array_equal(cam_to_pose["image_03"][3], [0, 0, 0, 1])

    (tmp_path / "calib_cam_to_velo.txt").write_text(CAM_TO_VELO)
    cam_to_velo = formats.read_cam_to_velo(tmp_path / "calib_cam_to_velo.txt")
    assert cam_to_velo.shape == (4, 4) and cam_to_velo[2, 3] == -0.18

    for text in (FISHEYE, FISHEYE.replace("---\n", "")):  # with and without the document marker
        (tmp_path / "image_02.yaml").write_text(text)
        fisheye = formats.read_mei_fisheye(tmp_path / "image_02.yaml")
        assert (fisheye.xi, fisheye.k2, fisheye.p2, fisheye.v0) == (2.2, 1.6, 4.5e-4, 705.0)
        assert (fisheye.width, fisheye.height) == (1400, 1400)

    (tmp_path / "poses.txt").write_text(POSES)
    frame_ids, poses = formats.read_poses(tmp_path / "poses.txt")
    np.testing.assert_array_equal(frame_ids, [3, 7])
    assert poses.shape == (2, 4, 4) and poses[1, 0, 3] == 3640.1 and poses[0, 3, 3] == 1.0

    (tmp_path / "cam0_to_world.txt").write_text(CAM0_TO_WORLD)
    frame_ids, cam0 = formats.read_cam0_to_world(tmp_path / "cam0_to_world.txt")
    assert cam0.shape == (2, 4, 4) and cam0[1, 1, 3] == 1706.2

    points = np.arange(20, dtype="<f4").reshape(5, 4)
    points.tofile(tmp_path / "0000000000.bin")
    np.testing.assert_array_equal(formats.read_velodyne(tmp_path / "0000000000.bin"), points)

    (tmp_path / "timestamps.txt").write_text("2013-05-28 08:46:02.727072208\n2013-05-28 08:46:02.830000000\n\n")
    assert formats.read_timestamps(tmp_path / "timestamps.txt")[1] == "2013-05-28 08:46:02.830000000"


@pytest.mark.parametrize(
    ("name", "text", "reader", "message"),
    [
        (
            "perspective.txt",
            PERSPECTIVE.replace("P_rect_01", "Q_rect_01"),
            formats.read_perspective_calibration,
            "missing entries P_rect_01.*calibration",
        ),
        (
            "perspective.txt",
            PERSPECTIVE.replace("S_rect_00: 1.408000e+03 3.760000e+02", "S_rect_00: 1.408000e+03"),
            formats.read_perspective_calibration,
            "S_rect_00 has 1 values, expected 2",
        ),
        ("calib_cam_to_velo.txt", "1 2 3", formats.read_cam_to_velo, "expected 12 numbers"),
        ("image_02.yaml", FISHEYE.replace("%YAML:1.0\n", ""), formats.read_mei_fisheye, "%YAML:1.0"),
        (
            "image_02.yaml",
            FISHEYE.replace("   k2: 1.6e+00\n", ""),
            formats.read_mei_fisheye,
            "distortion_parameters.k2",
        ),
        ("poses.txt", POSES + "9 1 2 3\n", formats.read_poses, "line 3 has 4 numbers.*data_poses"),
        ("poses.txt", "".join(reversed(POSES.splitlines(keepends=True))), formats.read_poses, "strictly increasing"),
        ("poses.txt", POSES.replace("3639.2", "nan"), formats.read_poses, "NaN"),
    ],
)
def test_readers_reject_malformed_files(tmp_path, name, text, reader, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(formats.Kitti360FormatError, match=message) as error:
        reader(path)
    assert str(path) in str(error.value)


def test_missing_files_name_the_download(tmp_path):
    paths = formats.Kitti360Paths(tmp_path, 2)
    cases = [
        (formats.read_cam_to_pose, paths.cam_to_pose, '"calibration"'),
        (formats.read_poses, paths.poses, '"data_poses"'),
        (formats.read_velodyne, paths.velodyne(0), "Raw Velodyne Scans"),
        (formats.read_image, paths.image(0, 0), "Perspective Images"),
        (formats.read_image, paths.image(3, 0), "Fisheye Images"),
    ]
    for reader, path, download in cases:
        with pytest.raises(formats.Kitti360FormatError, match="not found") as error:
            reader(path)
        assert str(path) in str(error.value) and download in str(error.value)
    (tmp_path / "short.bin").write_bytes(b"\0" * 20)
    with pytest.raises(formats.Kitti360FormatError, match="multiple of 16"):
        formats.read_velodyne(tmp_path / "short.bin")


def test_paths_follow_the_real_layout(tmp_path):
    paths = formats.Kitti360Paths(tmp_path, 3)
    assert paths.sequence == "2013_05_28_drive_0003_sync" == formats.sequence_name(3)
    assert paths.image(0, 42).relative_to(tmp_path).as_posix() == (
        "data_2d_raw/2013_05_28_drive_0003_sync/image_00/data_rect/0000000042.png"
    )
    assert paths.image(2, 42).relative_to(tmp_path).as_posix() == (
        "data_2d_raw/2013_05_28_drive_0003_sync/image_02/data_rgb/0000000042.png"
    )
    assert paths.velodyne(7).relative_to(tmp_path).as_posix() == (
        "data_3d_raw/2013_05_28_drive_0003_sync/velodyne_points/data/0000000007.bin"
    )
    assert paths.poses.relative_to(tmp_path).as_posix() == "data_poses/2013_05_28_drive_0003_sync/poses.txt"
    assert paths.fisheye_calibration(3).name == "image_03.yaml"


def test_official_devkit_reads_generated_files_identically(tmp_path, monkeypatch):
    """Runs only where the official devkit is installed (``pip install --no-deps kitti360Scripts``)."""
    load_calibration = pytest.importorskip("kitti360scripts.devkits.commons.loadCalibration")
    project = pytest.importorskip("kitti360scripts.helpers.project")
    import yaml

    root = tmp_path / "KITTI-360"
    run(SynthKitti360Config(out=root, frames=5, scale=0.05, seed=1, workers=1))
    paths = formats.Kitti360Paths(root, 0)
    ours = formats.read_cam_to_pose(paths.cam_to_pose)
    theirs = load_calibration.loadCalibrationCameraToPose(str(paths.cam_to_pose))
    for key in ours:
        np.testing.assert_array_equal(ours[key], theirs[key])
    np.testing.assert_array_equal(
        formats.read_cam_to_velo(paths.cam_to_velo), load_calibration.loadCalibrationRigid(str(paths.cam_to_velo))
    )
    theirs = load_calibration.loadPerspectiveIntrinsic(str(paths.perspective_calibration))
    ours = formats.read_perspective_calibration(paths.perspective_calibration)
    for key in ("P_rect_00", "P_rect_01", "R_rect_00", "R_rect_01"):
        np.testing.assert_array_equal(ours[key], theirs[key][:3])

    frame_ids, poses = formats.read_poses(paths.poses)
    for camera in (0, 1):
        camera_model = project.CameraPerspective(str(root), paths.sequence, camera)
        assert (camera_model.width, camera_model.height) == tuple(ours[f"S_rect_{camera:02d}"].astype(int))
        for frame, pose in zip(frame_ids, poses, strict=True):
            expected = formats.perspective_cam_to_world(
                pose, formats.read_cam_to_pose(paths.cam_to_pose)[f"image_{camera:02d}"], ours[f"R_rect_{camera:02d}"]
            )
            np.testing.assert_allclose(camera_model.cam2world[frame], expected, atol=1e-12)

    # The devkit's YAML reader calls yaml.load without a Loader, which PyYAML >= 6 rejects: give it one.
    original_load = yaml.load
    monkeypatch.setattr(yaml, "load", lambda text, Loader=yaml.SafeLoader: original_load(text, Loader=Loader))
    for camera in (2, 3):
        fisheye = project.CameraFisheye(str(root), paths.sequence, camera)
        params = MeiParams.from_opencv(formats.read_mei_fisheye(paths.fisheye_calibration(camera)))
        points = np.random.default_rng(camera).normal(size=(100, 3)) + np.array([0.0, 0.0, 2.0])
        u, v, _ = fisheye.cam2image(points.T.copy())
        uv, _ = mei_project(torch.tensor(points), params)
        # The devkit works in OpenCV pixel units; ours are nerfstudio units (+0.5).
        np.testing.assert_allclose(uv.numpy(), np.stack([u, v], axis=-1) + 0.5, atol=1e-9)
