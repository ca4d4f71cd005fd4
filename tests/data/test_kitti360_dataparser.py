"""The ``kitti360-data`` dataparser on a tiny generated KITTI-360 folder (``bts-studio synth-kitti360``).

Geometry is checked against what the generator drew, computed independently of the parser's own
calibration code: sidecar depth unprojected with the KITTI-360 chain of :mod:`bts_studio.data.kitti360.reader`
must land, through nerfstudio's own ray generation, on the pixels the generator rendered; resampled
fisheye pixels must show what the original fisheye image shows where the scene point lies.
"""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bts_studio.core.fisheye import MeiParams, mei_project
from bts_studio.data.kitti360 import reader as formats
from bts_studio.data.kitti360.dataparser import GROUP_SIZE, Kitti360DataParserConfig
from bts_studio.data.kitti360.lidar_depth import nearest_depth_map
from bts_studio.data.kitti360.reader import Kitti360FormatError, Kitti360Paths
from bts_studio.data.kitti360.splits import SplitEntry, read_split_file, write_split_file

FRAMES = 8  # 6 posed frames (the generator leaves 2 stationary ones out of poses.txt); groups clamp, as in BTS
SCALE = 0.1  # 141x38 perspective, 140x140 fisheye
SEQUENCE = formats.sequence_name(0)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A tiny synthetic KITTI-360 folder, generated once per session; tests copy it before changing it."""
    from bts_studio.data.synthetic.kitti360_cli import SynthKitti360Config, run

    root = tmp_path_factory.mktemp("kitti360") / "KITTI-360"
    run(SynthKitti360Config(out=root, frames=FRAMES, scale=SCALE, seed=0, device="cpu"))
    return root


@pytest.fixture
def data_copy(synthetic_root: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic folder (without the ground-truth sidecar) that a test may damage."""
    copy = tmp_path / "KITTI-360"
    shutil.copytree(synthetic_root, copy, ignore=shutil.ignore_patterns("bts_gt"))
    return copy


def parse(root: Path, split: str = "train", **overrides):
    config = Kitti360DataParserConfig(data=root, **overrides)
    return config.setup().get_dataparser_outputs(split)


def world_to_parsed(outputs, points_world: torch.Tensor) -> torch.Tensor:
    """KITTI-360 world points -> the parser's nerfstudio world (``c2w_ns = T @ c2w_world``)."""
    transform = outputs.dataparser_transform.double()
    return points_world.double() @ transform[:, :3].T + transform[:, 3]


def point_to_ray_distance(origins, directions, points) -> torch.Tensor:
    offset = points - origins
    along = (offset * directions).sum(-1, keepdim=True)
    assert bool((along > 0).all()), "points must lie in front of the camera"
    return (offset - along * directions).norm(dim=-1)


def find_image(outputs, camera: int, frame: int) -> int:
    metadata = outputs.cameras.metadata
    match = (metadata["camera_id"][:, 0] == camera) & (metadata["frame_id"][:, 0] == frame)
    assert int(match.sum()) == 1, f"camera {camera} frame {frame} appears {int(match.sum())} times"
    return int(match.nonzero()[0, 0])


def kitti_chain(root: Path):
    """Calibration, poses and pose index of the synthetic sequence, read with the format readers only."""
    paths = Kitti360Paths(root, SEQUENCE)
    calibration = formats.read_perspective_calibration(paths.perspective_calibration)
    cam_to_pose = formats.read_cam_to_pose(paths.cam_to_pose)
    frame_ids, poses = formats.read_poses(paths.poses)
    return paths, calibration, cam_to_pose, {int(f): i for i, f in enumerate(frame_ids)}, poses


# ----------------------------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("camera", [0, 1])
def test_perspective_rays_pass_through_the_points_the_generator_drew(synthetic_root: Path, tmp_path: Path, camera):
    from bts_studio.data.synthetic.ground_truth import load_ground_truth_depth

    outputs = parse(synthetic_root, "train", cache_dir=tmp_path / "cache")
    paths, calibration, cam_to_pose, pose_index, poses = kitti_chain(synthetic_root)
    frame = sorted(pose_index)[3]
    depth = load_ground_truth_depth(synthetic_root, SEQUENCE, camera, frame)
    height0, width0 = depth.shape
    rows, columns = np.nonzero(np.isfinite(depth) & (depth < 60))
    z = torch.from_numpy(depth[rows, columns]).double()
    # The generator's pixel (i, j) is the OpenCV point (j, i) of the rectified camera.
    P = calibration[f"P_rect_{camera:02d}"]
    camera_points = torch.stack(
        [(torch.from_numpy(columns) - P[0, 2]) / P[0, 0] * z, (torch.from_numpy(rows) - P[1, 2]) / P[1, 1] * z, z],
        dim=-1,
    )
    c2w = formats.perspective_cam_to_world(
        poses[pose_index[frame]], cam_to_pose[f"image_{camera:02d}"], calibration[f"R_rect_{camera:02d}"]
    )
    points_world = camera_points @ torch.from_numpy(c2w[:3, :3]).T + torch.from_numpy(c2w[:3, 3])

    index = find_image(outputs, camera, frame)
    height, width = 192, 640
    # Continuous coordinates scale with the image: pixel centre j + 0.5 at width0 is (j + 0.5) W / W0 at W.
    coords = torch.stack(
        [(torch.from_numpy(rows) + 0.5) * height / height0, (torch.from_numpy(columns) + 0.5) * width / width0], dim=-1
    ).float()
    rays = outputs.cameras.generate_rays(camera_indices=index, coords=coords)
    distance = point_to_ray_distance(
        rays.origins.double(), rays.directions.double(), world_to_parsed(outputs, points_world)
    )
    # Half a target pixel is 0.2% of the depth (fx ~ 250 px); the tolerance is ten times tighter.
    assert float((distance / z).max()) < 2e-4
    assert outputs.cameras.camera_type.unique().tolist() == [1]  # CameraType.PERSPECTIVE
    assert outputs.dataparser_scale == 1.0


def test_dataparser_transform_is_saved_and_maps_back_to_the_kitti360_world(synthetic_root: Path, tmp_path: Path):
    import json

    outputs = parse(synthetic_root, "test", cache_dir=tmp_path / "cache")
    outputs.save_dataparser_transform(tmp_path / "dataparser_transforms.json")
    saved = json.loads((tmp_path / "dataparser_transforms.json").read_text())
    assert saved["scale"] == 1.0 and np.allclose(np.array(saved["transform"])[:, :3], np.eye(3))
    _, calibration, cam_to_pose, pose_index, poses = kitti_chain(synthetic_root)
    originals = outputs.transform_poses_to_original_space(outputs.cameras.camera_to_worlds, camera_convention="opencv")
    for index in range(len(outputs.image_filenames)):
        camera = int(outputs.cameras.metadata["camera_id"][index])
        frame = int(outputs.cameras.metadata["frame_id"][index])
        expected = formats.perspective_cam_to_world(
            poses[pose_index[frame]], cam_to_pose[f"image_{camera:02d}"], calibration[f"R_rect_{camera:02d}"]
        )
        assert np.allclose(originals[index].numpy(), expected[:3], atol=1e-3)


def test_resampled_fisheye_shows_what_the_fisheye_sees(synthetic_root: Path, tmp_path: Path):
    from PIL import Image

    from bts_studio.data.synthetic.ground_truth import load_ground_truth_scene

    outputs = parse(synthetic_root, "train", cache_dir=tmp_path / "cache")
    paths, _, cam_to_pose, pose_index, poses = kitti_chain(synthetic_root)
    frame = sorted(pose_index)[-1]
    scene = load_ground_truth_scene(synthetic_root, SEQUENCE)
    for camera in (2, 3):
        index = find_image(outputs, camera, frame)
        ray_bundle = outputs.cameras.generate_rays(camera_indices=index)[::4, ::4]
        back = -outputs.dataparser_transform[:, 3].double()  # parsed world -> KITTI-360 world (translation only)
        origins = ray_bundle.origins.double() + back
        hits = scene.raycast(origins.reshape(-1, 3), ray_bundle.directions.reshape(-1, 3).double())
        hit = torch.isfinite(hits.t)
        points_world = (
            origins.reshape(-1, 3)[hit]
            + hits.t[hit, None].double() * ray_bundle.directions.reshape(-1, 3)[hit].double()
        )
        # Project the scene points into the real fisheye, independently of the parser.
        c2w = formats.fisheye_cam_to_world(poses[pose_index[frame]], cam_to_pose[f"image_{camera:02d}"])
        w2c = torch.from_numpy(np.linalg.inv(c2w))
        params = MeiParams.from_opencv(formats.read_mei_fisheye(paths.fisheye_calibration(camera)))
        uv, valid = mei_project(points_world @ w2c[:3, :3].T + w2c[:3, 3], params)
        original = torch.from_numpy(formats.read_image(paths.image(camera, frame))).double()
        sampled = torch.nn.functional.grid_sample(
            original.permute(2, 0, 1)[None],
            (2 * uv / torch.tensor([params.width, params.height]) - 1)[None, None],
            align_corners=False,
        )[0, :, 0].T
        cached = torch.from_numpy(np.asarray(Image.open(outputs.image_filenames[index]))).double()
        cached = cached[::4, ::4].reshape(-1, 3)[hit]
        assert int(valid.sum()) > 0.5 * len(valid)
        difference = (cached[valid] - sampled[valid]).abs().mean()
        assert float(difference) < 2.0, f"camera {camera}: mean colour difference {float(difference):.2f}/255"
        # And a wrong camera would see something else entirely: compare with a pixel-shifted sample.
        shifted = cached.reshape(-1, 3)[valid].roll(7, 0)
        assert float((shifted - sampled[valid]).abs().mean()) > 5 * float(difference)


def test_virtual_fisheye_pinholes_are_pitched_down(synthetic_root: Path, tmp_path: Path):
    outputs = parse(synthetic_root, "train", cache_dir=tmp_path / "cache", fisheye_pitch_deg=15.0)
    _, _, cam_to_pose, pose_index, poses = kitti_chain(synthetic_root)
    frame = sorted(pose_index)[-1]
    for camera in (2, 3):
        fisheye = formats.fisheye_cam_to_world(poses[pose_index[frame]], cam_to_pose[f"image_{camera:02d}"])
        fisheye_forward = fisheye[:3, 2]
        virtual_forward = -outputs.cameras.camera_to_worlds[find_image(outputs, camera, frame), :3, 2].double()
        angle = torch.rad2deg(torch.arccos((virtual_forward * torch.from_numpy(fisheye_forward)).sum()))
        assert abs(float(angle) - 15.0) < 1e-3
        assert float(virtual_forward[2]) < float(fisheye_forward[2])  # looks further down (world z is up)


def test_lidar_depth_agrees_with_sidecar_depth(synthetic_root: Path, tmp_path: Path):
    from bts_studio.data.synthetic.ground_truth import load_ground_truth_depth

    outputs = parse(synthetic_root, "test", cache_dir=tmp_path / "cache", target_height=38, target_width=141)
    depth_files = outputs.metadata["lidar_depth_filenames"]
    inputs = outputs.metadata["frame_groups"][:, 0].tolist()
    assert all(depth_files[i] is not None for i in inputs)
    assert sum(path is not None for path in depth_files) == len(set(inputs))
    in_range, smooth_errors = [], []
    for image_index in inputs:
        frame = int(outputs.cameras.metadata["frame_id"][image_index])
        lidar = np.load(depth_files[image_index])
        assert lidar.dtype == np.float32 and lidar.shape == (38, 141)
        truth = load_ground_truth_depth(synthetic_root, SEQUENCE, 0, frame)
        # A lidar point lies somewhere in its pixel, the true depth is at the pixel centre: compare with the
        # true depths around the pixel, and exactly where the true depth is smooth.
        windows = np.lib.stride_tricks.sliding_window_view(np.pad(truth, 1, mode="edge"), (3, 3))
        low, high = windows.min((-1, -2)), windows.max((-1, -2))
        hit = lidar > 0
        assert hit.sum() > 200
        in_range.append((lidar[hit] >= 0.98 * low[hit]) & (lidar[hit] <= 1.02 * high[hit]))
        smooth = hit & np.isfinite(high) & (high < 1.03 * low)
        smooth_errors.append(np.abs(lidar[smooth] - truth[smooth]) / truth[smooth])
    errors = np.concatenate(smooth_errors)
    # Edges remain: a lidar point can catch an object that the pixel centre's ray just misses (as on real data).
    assert np.concatenate(in_range).mean() > 0.95
    assert len(errors) > 50 and np.median(errors) < 0.005 and np.quantile(errors, 0.9) < 0.01


def test_nearest_depth_map_keeps_the_nearest_point_in_front_of_the_camera():
    K = torch.tensor([[10.0, 0.0, 2.0], [0.0, 10.0, 2.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    points = torch.tensor(
        [
            [0.0, 0.0, 5.0],  # projects to (2, 2): pixel row 2, column 2
            [0.01, 0.01, 3.0],  # same pixel, nearer: wins
            [0.0, 0.0, -3.0],  # behind the camera: dropped
            [-0.19, -0.19, 1.0],  # (0.1, 0.1): pixel (0, 0)
            [1.0, 0.0, 1.0],  # (12, 2): outside
        ],
        dtype=torch.float64,
    )
    depth = nearest_depth_map(points, K, 4, 4)
    expected = torch.zeros(4, 4, dtype=torch.float64)
    expected[2, 2], expected[0, 0] = 3.0, 1.0
    assert torch.equal(depth, expected)


# -------------------------------------------------------------------------------------------------- splits
def test_every_split_answers_with_bts_frame_groups(synthetic_root: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    train = parse(synthetic_root, "train", cache_dir=cache, test_every=4)
    test = parse(synthetic_root, "test", cache_dir=cache, test_every=4)
    val = parse(synthetic_root, "val", cache_dir=cache, test_every=4)
    for outputs in (train, test, val):
        groups = outputs.metadata["frame_groups"]
        assert groups.dtype == torch.long and groups.shape[1] == GROUP_SIZE
        assert outputs.metadata["sequences"] == [SEQUENCE]
        for key in ("sequence_idx", "frame_id", "camera_id", "pose_index"):
            value = outputs.cameras.metadata[key]
            assert value.dtype == torch.long and value.shape == (len(outputs.image_filenames), 1)
        assert len(outputs.metadata["lidar_depth_filenames"]) == len(outputs.image_filenames)
        assert all(Path(path).is_file() for path in outputs.image_filenames)
        assert torch.allclose(outputs.dataparser_transform, train.dataparser_transform)  # one world for all splits
    assert torch.equal(test.metadata["frame_groups"], val.metadata["frame_groups"])

    metadata = train.cameras.metadata
    camera, pose = metadata["camera_id"][:, 0], metadata["pose_index"][:, 0]
    groups = train.metadata["frame_groups"]
    assert (groups >= 0).all()  # every camera is on: full groups
    last_pose = int(pose.max())
    sides = camera[groups[:, 0]]
    assert set(sides.tolist()) == {0, 1}  # train has 'l' and 'r' entries
    for row, side in zip(groups, sides.tolist(), strict=True):
        t = int(pose[row[0]])
        expected_cameras = [side, side, 1 - side, 1 - side, 2 + side, 2 + side, 3 - side, 3 - side]
        expected_poses = [t, min(t + 1, last_pose), t, min(t + 1, last_pose)] + [
            min(t + s, last_pose) for s in (10, 11, 10, 11)
        ]
        assert camera[row].tolist() == expected_cameras
        assert pose[row].tolist() == expected_poses
        assert t % 4 != 0  # test_every=4 keeps pose indices 0, 4, 8 for test

    test_groups = test.metadata["frame_groups"]
    test_camera, test_pose = test.cameras.metadata["camera_id"][:, 0], test.cameras.metadata["pose_index"][:, 0]
    assert test_camera[test_groups[:, 0]].tolist() == [0] * len(test_groups)  # 'l' entries only
    assert (test_pose[test_groups[:, 0]] % 4 == 0).all()
    assert (test_groups[:, [0, 2]] >= 0).all() and (test_groups[:, [1, 3, 4, 5, 6, 7]] == -1).all()
    assert test_camera[test_groups[:, 2]].tolist() == [1] * len(test_groups)


def test_split_files_and_fisheye_switch(synthetic_root: Path, tmp_path: Path):
    frame_ids, _ = formats.read_poses(Kitti360Paths(synthetic_root, SEQUENCE).poses)
    entries = [SplitEntry(SEQUENCE, int(frame_ids[2]), False), SplitEntry(SEQUENCE, int(frame_ids[5]), True)]
    split_folder = tmp_path / "splits"
    write_split_file(split_folder / "train_files.txt", entries)
    write_split_file(split_folder / "test_files.txt", entries[:1])
    assert read_split_file(split_folder / "train_files.txt") == entries

    cache = tmp_path / "cache"
    train = parse(synthetic_root, "train", split_file=split_folder, cache_dir=cache, use_fisheye=False)
    groups = train.metadata["frame_groups"]
    frame, camera = train.cameras.metadata["frame_id"][:, 0], train.cameras.metadata["camera_id"][:, 0]
    assert frame[groups[:, 0]].tolist() == [entry.image_id for entry in entries]
    assert camera[groups[:, 0]].tolist() == [0, 1]
    assert (groups[:, :4] >= 0).all() and (groups[:, 4:] == -1).all()  # fisheyes off
    assert set(camera.tolist()) == {0, 1}

    val = parse(synthetic_root, "val", split_file=split_folder, cache_dir=cache)  # no val_files.txt: test's
    assert val.cameras.metadata["frame_id"][val.metadata["frame_groups"][:, 0], 0].tolist() == [entries[0].image_id]
    one_file = parse(synthetic_root, "test", split_file=split_folder / "train_files.txt", cache_dir=cache)
    assert len(one_file.metadata["frame_groups"]) == 2


# ------------------------------------------------------------------------------------------------ bad input
def test_missing_calibration_names_the_folder_and_download(data_copy: Path):
    shutil.rmtree(data_copy / "calibration")
    with pytest.raises(Kitti360FormatError, match=r"calibration.*Calibrations"):
        parse(data_copy)


def test_missing_poses_names_the_file_and_download(data_copy: Path):
    (data_copy / "data_poses" / SEQUENCE / "poses.txt").unlink()
    with pytest.raises(Kitti360FormatError, match=r"poses\.txt.*Vehicle Poses"):
        parse(data_copy, sequences=(SEQUENCE,))
    with pytest.raises(Kitti360FormatError, match=r"data_poses.*Vehicle Poses"):
        parse(data_copy)  # "all sequences" finds none with poses


def test_missing_fisheye_folder_names_the_folder_and_download(data_copy: Path):
    shutil.rmtree(data_copy / "data_2d_raw" / SEQUENCE / "image_02" / "data_rgb")
    with pytest.raises(Kitti360FormatError, match=r"image_02/data_rgb.*Fisheye Images.*use_fisheye"):
        parse(data_copy)
    assert len(parse(data_copy, use_fisheye=False).image_filenames) > 0


def test_unknown_sequence_lists_the_present_ones(data_copy: Path):
    with pytest.raises(Kitti360FormatError, match=rf"2013_05_28_drive_0007_sync.*present: {SEQUENCE}"):
        parse(data_copy, sequences=("7",))


def test_split_line_with_a_missing_frame_names_the_split_file(data_copy: Path, tmp_path: Path):
    split = tmp_path / "bad_split.txt"
    split.write_text(f"{SEQUENCE} 0000009999 l\n")
    with pytest.raises(Kitti360FormatError, match=r"bad_split\.txt.*0000009999\.png.*Perspective Images"):
        parse(data_copy, split_file=split)
    split.write_text(f"{SEQUENCE} 12 x\n")
    with pytest.raises(ValueError, match=r"bad_split\.txt:1"):
        parse(data_copy, split_file=split)


def test_corrupt_png_names_the_image_and_download(data_copy: Path):
    frame_ids, _ = formats.read_poses(Kitti360Paths(data_copy, SEQUENCE).poses)
    image = Kitti360Paths(data_copy, SEQUENCE).image(1, int(frame_ids[1]))
    image.write_bytes(image.read_bytes()[:100])
    with pytest.raises(Kitti360FormatError, match=rf"{image.name}.*corrupt.*Perspective Images"):
        parse(data_copy)


# ------------------------------------------------------------------------------------------------------ cache
def _fingerprint(root: Path) -> dict:
    return {
        path.relative_to(root): hashlib.sha1(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_cache_is_next_to_the_data_rebuilt_on_change_and_never_touches_originals(data_copy: Path):
    originals = _fingerprint(data_copy)
    outputs = parse(data_copy, "train")
    after = _fingerprint(data_copy)
    assert {path: after[path] for path in originals} == originals  # originals unchanged
    new_files = set(after) - set(originals)
    assert all(path.parts[0] in ("data_2d_raw", "data_3d_raw") for path in new_files)
    persp = data_copy / "data_2d_raw" / SEQUENCE / "image_00" / "data_192x640"
    fisheye = data_copy / "data_2d_raw" / SEQUENCE / "image_02" / "data_192x640_0x-15"
    assert persp / f"{int(outputs.cameras.metadata['frame_id'][0]):010d}.png" in outputs.image_filenames
    assert any(path.parent == fisheye for path in outputs.image_filenames)
    assert not any(path.name.endswith(".tmp") for path in new_files)

    # Same parameters: nothing is rewritten.
    stamps = {path: path.stat().st_mtime_ns for path in fisheye.iterdir()}
    parse(data_copy, "train")
    assert {path: path.stat().st_mtime_ns for path in fisheye.iterdir()} == stamps

    # Another pitch is another folder; a changed calibration rebuilds the fisheye cache in place.
    parse(data_copy, "train", fisheye_pitch_deg=10.0)
    assert (fisheye.parent / "data_192x640_0x-10").is_dir()
    before = {path.name: path.read_bytes() for path in fisheye.glob("*.png")}
    calibration = data_copy / "calibration" / "perspective.txt"
    text = calibration.read_text()
    fx = text.split("P_rect_00:")[1].split()[0]
    calibration.write_text(text.replace(f"P_rect_00: {fx}", f"P_rect_00: {float(fx) * 0.9:.6e}", 1))
    parse(data_copy, "train")
    rebuilt = {path.name: path.read_bytes() for path in fisheye.glob("*.png")}
    assert rebuilt.keys() == before.keys() and all(rebuilt[name] != before[name] for name in before)


def test_foreign_preprocessed_folder_is_used_and_not_overwritten(data_copy: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    folder = cache / "data_2d_raw" / SEQUENCE / "image_00" / "data_192x640"
    folder.mkdir(parents=True)
    frame_ids, _ = formats.read_poses(Kitti360Paths(data_copy, SEQUENCE).poses)
    foreign = folder / f"{int(frame_ids[1]):010d}.png"
    Image.fromarray(np.full((192, 640, 3), 7, dtype=np.uint8)).save(foreign)
    contents = foreign.read_bytes()
    outputs = parse(data_copy, "train", cache_dir=cache)
    assert foreign in outputs.image_filenames and foreign.read_bytes() == contents
    assert not (folder / ".bts_studio_cache.json").exists()
    # A damaged file in someone else's folder is named, never silently served nor overwritten.
    foreign.write_bytes(contents[: len(contents) // 2])
    with pytest.raises(Kitti360FormatError, match=f"{foreign}: damaged cached file"):
        parse(data_copy, "train", cache_dir=cache)
