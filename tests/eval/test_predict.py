"""bts-studio predict: agreement with ns-eval's depth, resize consistency, exports that read back, bad inputs."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bts_studio.eval import predict_intrinsics as pi

HEIGHT, WIDTH = 64, 160  # parsed size of the shared run (tests/eval/conftest.py)


# ------------------------------------------------------------------------------------------------ units
def test_calibration_file_gives_the_dataparser_intrinsics(tmp_path):
    from bts_studio.data.kitti360.rig import scale_intrinsics

    calibration = tmp_path / "perspective.txt"
    calibration.write_text(
        "calib_time: 09-Jan-2012 13:57:47\nS_rect_00: 1408 376\n"
        "P_rect_00: 552.55 0 682.05 0 0 552.55 238.77 0 0 0 1 0\n"
    )
    found = pi.from_calibration(calibration, 640, 192)
    P = np.array([[552.55, 0, 682.05, 0], [0, 552.55, 238.77, 0], [0, 0, 1, 0]])
    assert torch.allclose(found.K, torch.from_numpy(scale_intrinsics(P, (376, 1408), (192, 640))))
    kitti = tmp_path / "calib.txt"
    kitti.write_text("P0: 7 0 3 0 0 7 2 0 0 0 1 0\nP2: 700 0 600 4 0 700 180 0 0 0 1 0\n")
    assert float(pi.from_calibration(kitti, 1242, 375).K[0, 2]) == pytest.approx(600.5)
    with pytest.raises(pi.IntrinsicsError, match="no P_rect_05 or P5"):
        pi.from_calibration(calibration, 640, 192, camera=5)


def test_exif_focal_lengths():
    # 4 mm lens, 1000 px per cm on the sensor (unit 3): 400 px at the recorded 4000 px width, 200 px at 2000
    found = pi.from_exif(
        {
            "FocalLength": 4.0,
            "FocalPlaneXResolution": 1000.0,
            "FocalPlaneResolutionUnit": 3,
            "ExifImageWidth": 4000,
            "ExifImageHeight": 3000,
        },
        2000,
        1500,
    )
    assert float(found.K[0, 0]) == pytest.approx(200.0)
    equivalent = pi.from_exif({"FocalLengthIn35mmFilm": 26}, 4000, 3000)
    assert float(equivalent.K[0, 0]) == pytest.approx(26 / 43.2666 * 5000)
    assert pi.from_exif({"FocalLength": 4.0}, 100, 100) is None


def test_fov_default_and_sanity_warnings():
    fov = pi.from_fov(640, 480, 90.0)
    assert float(fov.K[0, 0]) == pytest.approx(320.0) and fov.hfov_deg == pytest.approx(90.0)
    default = pi.default_intrinsics(640, 480, 70.0)
    assert default.is_default and "default" in default.source
    assert pi.sanity_warnings(fov) == []
    odd = pi.from_flags(640, 480, fx=50.0, fy=400.0, cx=10.0)
    warnings = " ".join(pi.sanity_warnings(odd))
    assert "field of view" in warnings and "square pixels" in warnings and "principal point" in warnings


def test_fit_crops_to_the_training_aspect_and_moves_the_intrinsics():
    training = pi.kitti360_training_camera((192, 640))
    photo = torch.rand(3, 480, 640)
    intrinsics = pi.from_fov(640, 480, 70.0)
    fitted = pi.fit_to_training(photo, intrinsics, training)
    assert fitted.image.shape == (3, 192, 640)
    # the fitted pixels have the training pixel shape, and the principal point stays at the centre
    assert float(fitted.K[1, 1] / fitted.K[0, 0]) == pytest.approx(training.pixel_aspect, rel=1e-2)
    assert float(fitted.K[0, 2]) == pytest.approx(320.0, abs=0.5) and float(fitted.K[1, 2]) == pytest.approx(
        96.0, abs=1.0
    )
    left, top, right, bottom = fitted.crop_box
    assert (left, right) == (0, 640) and bottom - top == pytest.approx(640 / (1408 / 376), abs=1)
    # the horizontal field of view is untouched by a vertical crop and a uniform-in-x resize
    assert pi.horizontal_fov_deg(fitted.K, 640) == pytest.approx(70.0, abs=0.1)


# ------------------------------------------------------------------------------------------------ exports
def test_exports_read_back_with_expected_counts_and_bounds(tmp_path):
    import plyfile
    import trimesh

    from bts_studio.eval import predict_exports as ex
    from bts_studio.eval.density_field import FrameField

    K = pi.pinhole(50.0, 50.0, 40.0, 30.0).float()
    width, height = 80, 60

    def box_density(points: torch.Tensor) -> torch.Tensor:  # a 2 m cube centred 10 m ahead
        inside = (points[:, 0].abs() <= 1) & (points[:, 1].abs() <= 1) & ((points[:, 2] - 10).abs() <= 1)
        return inside.float() * 100.0

    depth = torch.full((height, width), 12.0)
    field = FrameField(box_density, depth, K)
    grid = ex.frustum_grid(K, width, height, near=3.0, max_depth=14.0, voxel_size=0.5)
    voxels = ex.sample_voxels(field, grid)
    centres = voxels.centres()
    assert len(centres) == 4 * 4 * 4  # voxel centres at +-0.25, +-0.75 on each axis
    assert np.allclose(centres.min(0), [-0.75, -0.75, 9.25]) and np.allclose(centres.max(0), [0.75, 0.75, 10.75])
    image = torch.rand(3, height, width)
    ex.write_voxels_npz(tmp_path / "voxels.npz", voxels, K, (height, width))
    ex.write_point_cloud(tmp_path / "voxels.ply", centres, ex.colours_from_image(centres, K, image))
    ply = plyfile.PlyData.read(str(tmp_path / "voxels.ply"))
    assert ply["vertex"].count == 64 and {"red", "green", "blue"} <= set(ply["vertex"].data.dtype.names)
    with np.load(tmp_path / "voxels.npz") as data:
        assert data["density"].shape == grid.shape and int(data["occupied"].sum()) == 64

    mesh = ex.marching_cubes_mesh(voxels)
    mesh.visual.vertex_colors = ex.colours_from_image(np.asarray(mesh.vertices), K, image)
    for suffix in ("ply", "obj"):
        ex.write_mesh(tmp_path / f"mesh.{suffix}", mesh)
        loaded = trimesh.load(tmp_path / f"mesh.{suffix}", force="mesh", process=False)
        assert len(loaded.vertices) == len(mesh.vertices) and len(loaded.faces) == len(mesh.faces)
        # the surface crosses 0.5 between the last occupied (100) and the first empty (0) voxel centres
        reach = 0.75 + 0.5 * (100 - 0.5) / 100
        expected = [[-reach, -reach, 10 - reach], [reach, reach, 10 + reach]]
        assert np.allclose(loaded.bounds, expected, atol=1e-4)
    assert trimesh.load(tmp_path / "mesh.ply", process=False).is_watertight
    assert mesh.volume > 0  # outward-facing triangles

    points, keep = ex.depth_point_cloud(depth, K, max_depth=20.0)
    ex.write_point_cloud(tmp_path / "cloud.ply", points, ex.colours_from_image(points, K, image))
    cloud = trimesh.load(tmp_path / "cloud.ply")
    assert len(cloud.vertices) == width * height and np.allclose(cloud.vertices[:, 2], 12.0)
    assert cloud.vertices[:, 0].min() == pytest.approx((0.5 - 40) / 50 * 12, abs=1e-4)
    with pytest.raises(FileExistsError, match="--overwrite"):
        ex.write_point_cloud(tmp_path / "cloud.ply", points, ex.colours_from_image(points, K, image))


# ------------------------------------------------------------------------------------------------ bad inputs
def _bad_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image")
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(folder / "grey.png")
    return folder


@pytest.mark.parametrize(
    "name, expected", [("empty.png", "empty file"), ("notes.jpg", "not a readable image"), ("grey.png", "expected RGB")]
)
def test_bad_files_are_named(tmp_path, name, expected):
    from bts_studio.eval import predict_cli

    folder = _bad_folder(tmp_path)
    argv = [str(folder / name), "--output-dir", str(tmp_path / "out"), "--checkpoint", str(tmp_path / "x.ckpt")]
    with pytest.raises(SystemExit, match=rf"{folder / name}: .*{expected}"):
        predict_cli.main(argv)


def test_a_folder_with_nothing_readable_is_an_error_even_when_skipping(tmp_path):
    from bts_studio.eval import predict_cli

    folder = _bad_folder(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="nothing readable"):
        predict_cli.main([str(folder), "--output-dir", str(out), "--checkpoint", "x.ckpt", "--skip-bad"])
    with pytest.raises(SystemExit, match="no image files"):
        (tmp_path / "void").mkdir()
        predict_cli.main([str(tmp_path / "void"), "--output-dir", str(out), "--checkpoint", "x.ckpt"])
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ a trained run


QUICK = ["--flythrough-frames", "2", "--grid.pixels-per-metre", "1", "--grid.height-levels", "8"]


@pytest.fixture(scope="module")
def ns_eval_frame(trained_config):
    """A test frame's image file and its z-depth along ns-eval's path (pipeline.evaluate_group's render)."""
    from bts_studio.eval.kitti360_run import eval_images, load_pipeline

    _, pipeline = load_pipeline(trained_config, "test")
    index = eval_images(pipeline, "test")[0].index
    dataset = pipeline.datamanager.eval_dataset
    source = pipeline.model.source_view("test", index)
    camera = dataset.cameras[index : index + 1].to(pipeline.device)
    depth = pipeline.model.render_camera(camera, source)["z_depth"][..., 0].cpu()  # BTSPipeline.evaluate_group
    K = source.K.double().cpu()
    return Path(dataset.image_filenames[index]), depth, K


def test_depth_equals_ns_eval_with_the_true_intrinsics(trained_config, synthetic_root, ns_eval_frame, tmp_path):
    from bts_studio.eval import predict_cli

    image_path, expected, _ = ns_eval_frame
    out = tmp_path / "out"
    calibration = synthetic_root / "calibration" / "perspective.txt"
    argv = [str(image_path), "--output-dir", str(out), "--load-config", str(trained_config)]
    predict_cli.main(
        [
            *argv,
            "--calibration",
            str(calibration),
            "--export",
            "voxels",
            "pointcloud",
            "mesh",
            *QUICK,
            "--voxel-size",
            "1.0",
        ]
    )
    folder = out / image_path.stem
    depth = torch.from_numpy(np.load(folder / "depth.npy"))
    assert depth.shape == expected.shape == (HEIGHT, WIDTH)
    assert (depth - expected).abs().max() <= 1e-4
    report = json.loads((folder / "prediction.json").read_text())
    assert report["fit"]["notes"] == [] and "calibration" in report["intrinsics"]["source"]
    assert abs(report["field_of_view"]["hfov_difference_deg"]) < 1e-6
    for name in ("depth.png", "panel.png", "flythrough.mp4", "voxels.npz", "voxels.ply", "pointcloud.ply"):
        assert (folder / name).stat().st_size > 0, name

    import plyfile

    cloud = plyfile.PlyData.read(str(folder / "pointcloud.ply"))["vertex"]
    assert cloud.count == int((depth <= 30.0).sum())
    kept = depth[depth <= 30.0].numpy()
    assert np.allclose(np.sort(cloud["z"]), np.sort(kept), atol=1e-5)  # one point per pixel, at its z-depth
    with np.load(folder / "voxels.npz") as data:
        occupied = int(data["occupied"].sum())
        zs = data["zs"]
    assert plyfile.PlyData.read(str(folder / "voxels.ply"))["vertex"].count == occupied
    assert zs.min() >= 3.0 and zs.max() <= 30.0
    with pytest.raises(SystemExit, match="pass --overwrite"):
        predict_cli.main([*argv, "--calibration", str(calibration), *QUICK])
    assert torch.equal(torch.from_numpy(np.load(folder / "depth.npy")), depth)


def test_resized_and_padded_copy_with_scaled_intrinsics_gives_consistent_depth(trained_config, ns_eval_frame, tmp_path):
    from bts_studio.core.depth_metrics import depth_metrics
    from bts_studio.eval import predict_cli

    image_path, expected, K = ns_eval_frame
    # 2x larger, with 20-pixel bands above and below that the crop to the training aspect removes again
    large = Image.open(image_path).convert("RGB").resize((2 * WIDTH, 2 * HEIGHT), Image.Resampling.BICUBIC)
    padded = np.full((2 * HEIGHT + 40, 2 * WIDTH, 3), 128, np.uint8)
    padded[20:-20] = np.asarray(large)
    path = tmp_path / "copy.png"
    Image.fromarray(padded).save(path)
    fx, fy = 2 * float(K[0, 0]), 2 * float(K[1, 1])
    cx, cy = 2 * float(K[0, 2]) - 0.5, 2 * float(K[1, 2]) + 20 - 0.5  # OpenCV convention on the command line
    out = tmp_path / "out"
    predict_cli.main(
        [
            str(path),
            "--output-dir",
            str(out),
            "--load-config",
            str(trained_config),
            "--fx",
            str(fx),
            "--fy",
            str(fy),
            "--cx",
            str(cx),
            "--cy",
            str(cy),
            "--no-bev",
            "--flythrough-frames",
            "0",
        ]
    )
    report = json.loads((out / "copy" / "prediction.json").read_text())
    assert report["fit"]["crop_box_ltrb"] == [0, 20, 2 * WIDTH, 2 * HEIGHT + 20]
    depth = torch.from_numpy(np.load(out / "copy" / "depth.npy"))
    metrics = depth_metrics(depth, expected, max_depth=80.0)
    assert metrics["abs_rel"] <= 0.02, metrics


def test_video_frames_and_skipped_bad_files(trained_config, ns_eval_frame, tmp_path):
    from bts_studio.eval import predict_cli
    from bts_studio.utils.video import write_video

    image_path, _, _ = ns_eval_frame
    frame = np.asarray(Image.open(image_path).convert("RGB"))
    video = tmp_path / "drive.mp4"
    assert write_video([frame] * 3, video, fps=4) is not None
    folder = _bad_folder(tmp_path)
    Image.fromarray(frame).save(folder / "good.png")
    out = tmp_path / "out"
    payloads = predict_cli.run(
        predict_cli.PredictConfig(
            inputs=(video, folder),
            output_dir=out,
            load_config=trained_config,
            fov_deg=90.0,
            skip_bad=True,
            bev=False,
            flythrough_frames=0,
        )
    )
    # every video frame, and the one good image of the folder (the three bad ones are skipped)
    assert sorted(p.name for p in out.iterdir()) == ["drive_000000", "drive_000001", "drive_000002", "good"]
    assert len(payloads) == 4
    for payload in payloads:
        assert math.isclose(payload["field_of_view"]["hfov_deg"], 90.0, rel_tol=1e-6)
