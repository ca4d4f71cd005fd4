"""``bts-studio synth-kitti360``: the files follow KITTI-360's formats and the ground truth is exact.

The main checks replay KITTI-360's calibration chain on the generated files: lidar points go
velodyne -> unrectified camera 0 -> pose -> world -> each camera, and must agree with the sidecar depth
(perspective cameras) or with a ray cast through the MEI model (fisheyes) to float precision.
"""

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from bts_studio.core.fisheye import MeiParams, mei_project, mei_unproject
from bts_studio.data.kitti360 import reader as formats
from bts_studio.data.synthetic import ground_truth
from bts_studio.data.synthetic.kitti360_cli import SynthKitti360Config, main, run
from bts_studio.data.synthetic.primitives import Scene

SEQUENCE = "2013_05_28_drive_0000_sync"
FRAMES = 12
SCALE = 0.25


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # These tests cast many small batches of rays: extra threads only add synchronisation.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_kitti360") / "KITTI-360"
    run(SynthKitti360Config(out=out, frames=FRAMES, scale=SCALE, seed=7, workers=1))
    return out


@pytest.fixture(scope="session")
def calibration(root):
    paths = formats.Kitti360Paths(root, SEQUENCE)
    return {
        "perspective": formats.read_perspective_calibration(paths.perspective_calibration),
        "cam_to_pose": formats.read_cam_to_pose(paths.cam_to_pose),
        "cam_to_velo": formats.read_cam_to_velo(paths.cam_to_velo),
        "fisheye": {camera: formats.read_mei_fisheye(paths.fisheye_calibration(camera)) for camera in (2, 3)},
    }


def _homogeneous(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points, np.ones((len(points), 1))], axis=1)


def _transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return (_homogeneous(points) @ matrix.T)[:, :3]


def _lidar_world(root: Path, calibration, frame: int, pose: np.ndarray) -> np.ndarray:
    scan = formats.read_velodyne(formats.Kitti360Paths(root, SEQUENCE).velodyne(frame))
    velo_to_world = formats.velodyne_to_world(pose, calibration["cam_to_pose"]["image_00"], calibration["cam_to_velo"])
    return _transform(velo_to_world, scan[:, :3].astype(np.float64))


def _visible_from(scene: Scene, center: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points the camera at ``center`` sees (nothing in between): the ray towards them stops at t = 1."""
    hits = scene.raycast(torch.tensor(center), torch.tensor(points - center, dtype=torch.float32))
    return (hits.t > 0.9995).numpy()


# ---------------------------------------------------------------------------------------------- layout


def test_layout_and_readers_parse_every_file(root, calibration):
    paths = formats.Kitti360Paths(root, 0)
    assert formats.list_sequences(root) == [SEQUENCE]
    width, height = calibration["perspective"]["S_rect_00"].astype(int)
    assert (width, height) == (round(1408 * SCALE), round(376 * SCALE))
    assert set(calibration["cam_to_pose"]) == {"image_00", "image_01", "image_02", "image_03"}
    for camera, fisheye in calibration["fisheye"].items():
        assert (fisheye.width, fisheye.height) == (round(1400 * SCALE),) * 2, camera
        assert (root / "calibration" / f"image_{camera:02d}.yaml").read_text().startswith("%YAML:1.0\n")
    frame_ids, poses = formats.read_poses(paths.poses)
    np.testing.assert_array_equal(frame_ids, np.arange(2, FRAMES))  # the stationary start is left out
    cam0_ids, cam0_to_world = formats.read_cam0_to_world(paths.cam0_to_world)
    np.testing.assert_array_equal(cam0_ids, frame_ids)
    for camera in range(4):
        assert len(formats.read_timestamps(paths.image_timestamps(camera))) == FRAMES
        for frame in range(FRAMES):
            image = formats.read_image(paths.image(camera, frame))
            expected = (height, width) if camera < 2 else (calibration["fisheye"][camera].height,) * 2
            assert image.shape == (*expected, 3) and image.dtype == np.uint8
    stamps = formats.read_timestamps(paths.velodyne_timestamps)
    assert len(stamps) == FRAMES and stamps[0].startswith("2013-05-28 ") and len(stamps[0].split(".")[1]) == 9
    for frame in range(FRAMES):
        scan = formats.read_velodyne(paths.velodyne(frame))
        assert scan.dtype == np.float32 and scan.shape[1] == 4 and len(scan) > 1000
        assert 0.0 <= scan[:, 3].min() and scan[:, 3].max() <= 1.0
        for camera in (0, 1):
            assert ground_truth.load_ground_truth_depth(root, SEQUENCE, camera, frame).shape == (height, width)
    # Consecutive posed frames are about 1 m apart; the world sits far from its origin, z up, like KITTI-360.
    steps = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
    assert np.all((steps > 0.85) & (steps < 1.15)), steps
    assert np.all(np.abs(poses[:, :2, 3]) > 500) and np.all(poses[:, 2, 2] < -0.99)  # pose z axis points down
    baseline = -calibration["perspective"]["P_rect_01"][0, 3] / calibration["perspective"]["P_rect_01"][0, 0]
    assert baseline == pytest.approx(0.5942, abs=1e-6)


def test_cam0_to_world_is_the_rectified_chain(root, calibration):
    paths = formats.Kitti360Paths(root, SEQUENCE)
    _, poses = formats.read_poses(paths.poses)
    _, cam0_to_world = formats.read_cam0_to_world(paths.cam0_to_world)
    expected = formats.perspective_cam_to_world(
        poses, calibration["cam_to_pose"]["image_00"], calibration["perspective"]["R_rect_00"]
    )
    np.testing.assert_allclose(cam0_to_world, expected, atol=1e-8)


def test_stereo_pair_is_rectified(root, calibration):
    """A world point has the same row in both rectified images and disparity fx * baseline / z."""
    _, poses = formats.read_poses(formats.Kitti360Paths(root, SEQUENCE).poses)
    perspective = calibration["perspective"]
    points = np.random.default_rng(0).uniform([-5, -2, 4], [5, 2, 40], size=(50, 3))  # rectified cam 0 frame
    world = _transform(
        formats.perspective_cam_to_world(poses[3], calibration["cam_to_pose"]["image_00"], perspective["R_rect_00"]),
        points,
    )
    right = _transform(
        np.linalg.inv(
            formats.perspective_cam_to_world(poses[3], calibration["cam_to_pose"]["image_01"], perspective["R_rect_01"])
        ),
        world,
    )
    K = perspective["P_rect_00"][:, :3]
    left_uv = (points @ K.T)[:, :2] / points[:, 2:]
    right_uv = (right @ K.T)[:, :2] / right[:, 2:]
    np.testing.assert_allclose(right_uv[:, 1], left_uv[:, 1], atol=1e-6)
    baseline = -perspective["P_rect_01"][0, 3] / K[0, 0]
    np.testing.assert_allclose(left_uv[:, 0] - right_uv[:, 0], K[0, 0] * baseline / points[:, 2], rtol=1e-6)


# ------------------------------------------------------------------------------------- exact depth


def _perspective_agreement(root, calibration, scene, camera: int, frame_index: int, use_rect: bool = True):
    """Relative error between lidar z-depth and the sidecar's inverse depth interpolated at the point.

    Only points the camera sees whose four surrounding pixel centres lie on one planar face are used: there
    inverse depth is affine in pixel coordinates, so bilinear interpolation is exact.
    """
    paths = formats.Kitti360Paths(root, SEQUENCE)
    frame_ids, poses = formats.read_poses(paths.poses)
    frame, pose = int(frame_ids[frame_index]), poses[frame_index]
    perspective = calibration["perspective"]
    rect = perspective[f"R_rect_{camera:02d}"] if use_rect else np.eye(3)
    cam_to_world = formats.perspective_cam_to_world(pose, calibration["cam_to_pose"][f"image_{camera:02d}"], rect)
    world = _lidar_world(root, calibration, frame, pose)
    local = _transform(np.linalg.inv(cam_to_world), world)
    K = perspective[f"P_rect_{camera:02d}"][:, :3]
    width, height = perspective[f"S_rect_{camera:02d}"].astype(int)
    z = local[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K[0, 0] * local[:, 0] / z + K[0, 2]  # OpenCV units: pixel (i, j) is centred on (u, v) = (j, i)
        v = K[1, 1] * local[:, 1] / z + K[1, 2]
    col, row = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    keep = (z > 1.0) & (col >= 0) & (col + 1 < width) & (row >= 0) & (row + 1 < height)
    keep &= _visible_from(scene, cam_to_world[:3, 3], world)
    col, row, u, v, z = col[keep], row[keep], u[keep], v[keep], z[keep]
    # The four pixel centres around each point: on one planar face of one primitive?
    corners = [(row, col), (row, col + 1), (row + 1, col), (row + 1, col + 1)]
    rays = np.stack(
        [np.stack([(c - K[0, 2]) / K[0, 0], (r - K[1, 2]) / K[1, 1], np.ones_like(z)], -1) for r, c in corners]
    )
    directions = torch.tensor(rays @ cam_to_world[:3, :3].T, dtype=torch.float32).reshape(-1, 3)
    hits = scene.raycast(torch.tensor(cam_to_world[:3, 3]), directions)
    ids, normals = hits.primitive_id.view(4, -1), hits.normal.view(4, -1, 3)
    kinds = np.array([scene.primitives[i].kind if i >= 0 else "" for i in ids[0].tolist()])
    planar = ((ids == ids[0]).all(0) & ((normals - normals[0]).abs().amax(-1) < 1e-4).all(0)).numpy()
    planar &= np.isin(kinds, ["box", "halfspace"])
    depth = ground_truth.load_ground_truth_depth(root, SEQUENCE, camera, frame).astype(np.float64)
    inverse = [1.0 / depth[r, c] for r, c in corners]
    fu, fv = u - col, v - row
    interpolated = (
        inverse[0] * (1 - fu) * (1 - fv)
        + inverse[1] * fu * (1 - fv)
        + inverse[2] * (1 - fu) * fv
        + inverse[3] * fu * fv
    )
    return np.abs(interpolated * z - 1.0)[planar]


@pytest.mark.parametrize("camera", [0, 1])
def test_lidar_points_match_sidecar_depth(root, calibration, camera):
    scene = ground_truth.load_ground_truth_scene(root, SEQUENCE)
    for frame_index in (0, 5, FRAMES - 3):
        errors = _perspective_agreement(root, calibration, scene, camera, frame_index)
        assert errors.size > 300, "too few lidar points on planar surfaces to test"
        assert np.quantile(errors, 0.999) < 1e-4, (frame_index, np.sort(errors)[-5:])


def test_depth_check_detects_a_wrong_chain(root, calibration):
    """Negative control: leaving out R_rect (a 0.4 degree rotation) breaks the agreement."""
    scene = ground_truth.load_ground_truth_scene(root, SEQUENCE)
    errors = _perspective_agreement(root, calibration, scene, 0, 5, use_rect=False)
    assert np.mean(errors < 1e-4) < 0.5


@pytest.mark.parametrize("camera", [2, 3])
def test_lidar_points_match_fisheye_raycast(root, calibration, camera):
    """velo -> world -> fisheye through the MEI model, back through its inverse, cast into the scene."""
    paths = formats.Kitti360Paths(root, SEQUENCE)
    scene = ground_truth.load_ground_truth_scene(root, SEQUENCE)
    params = MeiParams.from_opencv(calibration["fisheye"][camera])
    frame_ids, poses = formats.read_poses(paths.poses)
    for frame_index in (1, FRAMES - 4):
        frame, pose = int(frame_ids[frame_index]), poses[frame_index]
        cam_to_world = formats.fisheye_cam_to_world(pose, calibration["cam_to_pose"][f"image_{camera:02d}"])
        world = _lidar_world(root, calibration, frame, pose)
        local = torch.tensor(_transform(np.linalg.inv(cam_to_world), world))
        uv, valid = mei_project(local, params)
        valid &= torch.from_numpy(_visible_from(scene, cam_to_world[:3, 3], world))
        assert valid.sum() > 500
        rays = mei_unproject(uv[valid], params)
        hits = scene.raycast(torch.tensor(cam_to_world[:3, 3]), (rays @ torch.tensor(cam_to_world[:3, :3]).T).float())
        distance = local[valid].norm(dim=-1)
        errors = ((hits.t.double() - distance).abs() / distance).numpy()
        assert np.quantile(errors, 0.999) < 1e-4, np.sort(errors)[-5:]
        # The fisheye image is rendered (not black) where the points project.
        image = formats.read_image(paths.image(camera, frame))
        pixels = uv[valid].floor().long().numpy()
        assert (image[pixels[:, 1], pixels[:, 0]].max(axis=-1) > 0).mean() > 0.99


def test_ground_truth_occupancy_is_exact_around_lidar_points(root, calibration):
    paths = formats.Kitti360Paths(root, SEQUENCE)
    scene = ground_truth.load_ground_truth_scene(root, SEQUENCE)
    frame_ids, poses = formats.read_poses(paths.poses)
    world = _lidar_world(root, calibration, int(frame_ids[4]), poses[4])
    velodyne = formats.velodyne_to_world(poses[4], calibration["cam_to_pose"]["image_00"], calibration["cam_to_velo"])[
        :3, 3
    ]
    direction = (world - velodyne) / np.linalg.norm(world - velodyne, axis=1, keepdims=True)
    in_front = scene.occupied(torch.tensor(world - 0.03 * direction))
    behind = scene.occupied(torch.tensor(world + 0.03 * direction))
    assert in_front.float().mean() < 0.001  # free space between the sensor and its returns
    assert behind.float().mean() > 0.97  # solid just behind (thin poles and wheel rims can be crossed)
    info = ground_truth.load_generator_info(root)
    assert info["seed"] == 7 and info["frames"] == FRAMES


# ------------------------------------------------------------------------------------ CLI behaviour


def _files(root: Path) -> dict:
    return {path.relative_to(root): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_deterministic_for_a_seed_and_different_across_seeds(tmp_path):
    for name, seed, frames in (("a", 3, 4), ("b", 3, 4), ("c", 4, 3)):
        main([str(tmp_path / name), "--frames", str(frames), "--scale", "0.05", "--seed", str(seed)])
    first, second, other = (_files(tmp_path / name) for name in "abc")
    assert first.keys() == second.keys() and all(first[key] == second[key] for key in first)
    key = Path("data_poses", SEQUENCE, "poses.txt")
    assert first[key].splitlines()[0] != other[key].splitlines()[0]


def test_texture_knobs_change_the_images_and_nothing_else(tmp_path):
    """``--texture-scale/--texture-contrast`` (issue 18's experiment knobs) repaint the surfaces; poses, calibration,
    the lidar points (not their intensities, read from the albedo) and the exact ground truth stay the default
    world's files."""
    main([str(tmp_path / "plain"), "--frames", "3", "--scale", "0.05"])
    main(
        [
            str(tmp_path / "textured"),
            "--frames",
            "3",
            "--scale",
            "0.05",
            "--texture-scale",
            "8",
            "--texture-contrast",
            "3",
        ]
    )
    plain, textured = _files(tmp_path / "plain"), _files(tmp_path / "textured")
    assert plain.keys() == textured.keys()
    changed = {key for key in plain if plain[key] != textured[key]}
    assert any(key.suffix == ".png" and "data_2d_raw" in key.parts for key in changed), "the images are repainted"
    scans = {key for key in changed if key.suffix == ".bin"}
    for key in scans:  # x, y, z, intensity per point (float32)
        a, b = (np.frombuffer(files[key], dtype=np.float32).reshape(-1, 4) for files in (plain, textured))
        assert np.array_equal(a[:, :3], b[:, :3]) and not np.array_equal(a[:, 3], b[:, 3]), key
    unexpected = {key for key in changed - scans if "data_2d_raw" not in key.parts and key.name != "info.json"}
    assert scans and not unexpected, sorted(map(str, unexpected))


def test_refuses_non_empty_output_without_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(SystemExit, match="--overwrite"):
        main([str(out), "--frames", "3", "--scale", "0.05"])
    assert (out / "keep.txt").read_text() == "user data"
    main([str(out), "--frames", "3", "--scale", "0.05", "--overwrite"])
    assert not (out / "keep.txt").exists() and (out / "calibration" / "perspective.txt").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging folders left behind"


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["--frames", "0"], "--frames"),
        (["--scale", "-1"], "--scale"),
        (["--sequences", "0"], "--sequences"),
        (["--texture-scale", "0"], "--texture-scale"),
        (["--texture-contrast", "-1"], "--texture-contrast"),
    ],
)
def test_bad_arguments_name_the_argument(tmp_path, arguments, named):
    with pytest.raises(SystemExit, match=named):
        main([str(tmp_path / "out"), *arguments])
    assert not (tmp_path / "out").exists()


def test_unwritable_output_names_out(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit, match="OUT"):
        main([str(blocker / "out"), "--frames", "3", "--scale", "0.05"])
    if os.geteuid() != 0:  # root ignores permission bits
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
        try:
            with pytest.raises(SystemExit, match="not writable"):
                main([str(locked / "out"), "--frames", "3", "--scale", "0.05"])
        finally:
            locked.chmod(stat.S_IRWXU)


def test_one_car_world_has_one_isolated_car_in_view():
    """``--world one-car`` (issue #18): one parked car on the right, no trees, poles or side streets, placed where the
    middle frames have it inside the occupancy cuboid."""
    from bts_studio.data.synthetic.street import build_street, ego_poses, one_car_position

    def world(kind):
        return build_street(np.random.default_rng(3), 40.0, (2000.0, 900.0), 110.0, world=kind)

    one_car, street = world("one-car"), world("street")
    labels = [p.label for p in one_car.primitives]
    assert labels.count("car") == 4  # body, cabin and two axles of one car
    assert not {"vegetation", "pole"} & set(labels) and one_car.layout.side_streets == ()
    assert labels.count("building") > 4 and [p.label for p in street.primitives].count("car") > 4
    body = next(p for p in one_car.primitives if p.label == "car")
    s, lateral = one_car.layout.coordinates(torch.tensor([body.center[:2]], dtype=torch.float64))
    assert abs(float(s[0]) - one_car_position(40.0)) < 1e-6 and -4.2 < float(lateral[0]) < -3.8  # right, parked
    poses = ego_poses(one_car.layout, 36, 2, np.random.default_rng(0))
    ego_s = one_car.layout.coordinates(torch.from_numpy(poses[:, :2, 3]))[0]
    ahead = one_car_position(40.0) - ego_s
    assert int(((ahead > 3.0) & (ahead < 20.0)).sum()) >= 12  # many input frames have it in the cuboid's depth range
    with pytest.raises(ValueError, match="world must be one of"):
        world("desert")
