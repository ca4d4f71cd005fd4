"""Tier 2: the DeepVoxels scene format (reader, writer, deepvoxels-data dataparser) and bts-studio synth-deepvoxels."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bts_studio.data.deepvoxels.dataparser import DeepVoxelsDataParserConfig
from bts_studio.data.deepvoxels.reader import DeepVoxelsFormatError, read_intrinsics
from bts_studio.data.deepvoxels.writer import format_intrinsics, write_split
from bts_studio.data.shapenet.srn_reader import SRNFormatError
from bts_studio.data.shapenet.srn_reader import read_intrinsics as read_srn_intrinsics
from bts_studio.data.shapenet.srn_writer import format_intrinsics as format_srn_intrinsics
from bts_studio.data.synthetic.shapenet_views import look_at_opencv

FILE_SIDE, IMAGE_SIDE = 64, 32
FOCAL, CX, CY = 70.0, 31.0, 33.0  # at FILE_SIDE; principal point off-centre on purpose
BARYCENTRE = (0.1, -0.2, 0.3)


def _poses(count: int) -> np.ndarray:
    eyes = torch.tensor([[1.5, 0.4, 0.9], [-0.8, 1.2, 1.0], [0.3, -1.4, 0.6]], dtype=torch.float64)[:count]
    return look_at_opencv(eyes, torch.tensor(BARYCENTRE, dtype=torch.float64), torch.tensor([0.0, 0.0, 1.0])).numpy()


@pytest.fixture
def scene(tmp_path) -> Path:
    """A hand-written scene: 32 px images with intrinsics for 64 px, four-line poses in test/, no validation/."""
    root = tmp_path / "dv"
    images = np.full((3, IMAGE_SIDE, IMAGE_SIDE, 3), 255, dtype=np.uint8)
    text = format_intrinsics(FOCAL, CX, CY, BARYCENTRE, 0.0, 2.0, FILE_SIDE, FILE_SIDE)
    write_split(root / "train" / "bust", images, _poses(3), intrinsics_text=text)
    write_split(root / "test" / "bust", images[:2], _poses(2))
    for path in (root / "test" / "bust" / "pose").iterdir():  # the four-line pose variant
        values = path.read_text().split()
        path.write_text("\n".join(" ".join(values[row * 4 : row * 4 + 4]) for row in range(4)) + "\n")
    return root


def test_parser_reads_five_line_intrinsics_and_known_points_land_on_the_right_pixels(scene):
    parser = DeepVoxelsDataParserConfig(data=scene).setup()
    train = parser.get_dataparser_outputs("train")
    assert train.metadata["near_plane"] == pytest.approx(math.sqrt(3) / 2)  # 0 in the file
    assert train.metadata["grid_scale"] == 2.0 and train.metadata["scene_name"] == "bust"
    assert torch.allclose(train.metadata["grid_barycentre"], torch.tensor(BARYCENTRE))
    cameras = train.cameras
    ratio = IMAGE_SIDE / FILE_SIDE
    assert float(cameras.fx[0]) == pytest.approx(FOCAL * ratio) and float(cameras.cx[0]) == pytest.approx(CX * ratio)
    assert int(cameras.height[0]) == IMAGE_SIDE
    points = torch.tensor([[0.2, -0.1, 0.5], [-0.3, 0.1, 0.2], [0.1, -0.2, 0.3]], dtype=torch.float64)
    for index, pose in enumerate(_poses(3)):
        w2c = np.linalg.inv(pose)
        for point in points.numpy():
            camera_point = w2c[:3, :3] @ point + w2c[:3, 3]
            u = ratio * (FOCAL * camera_point[0] / camera_point[2] + CX)
            v = ratio * (FOCAL * camera_point[1] / camera_point[2] + CY)
            # nerfstudio's ray through continuous pixel coordinate (v, u) must pass through the point.
            rays = cameras.generate_rays(camera_indices=index, coords=torch.tensor([[v, u]], dtype=torch.float32))
            offset = torch.from_numpy(point).float() - rays.origins[0]
            along = (offset * rays.directions[0]).sum()
            assert (offset - along * rays.directions[0]).norm() < 1e-4 and along > 0


def test_val_split_falls_back_to_test_and_four_line_poses_parse(scene):
    parser = DeepVoxelsDataParserConfig(data=scene / "train" / "bust").setup()
    val = parser.get_dataparser_outputs("val")
    assert len(val.image_filenames) == 2 and "test" in val.metadata["split_dir"]
    expected = torch.from_numpy((_poses(2) @ np.diag([1.0, -1.0, -1.0, 1.0]))[:, :3]).float()
    assert torch.allclose(val.cameras.camera_to_worlds, expected, atol=1e-6)


def test_an_srn_intrinsics_file_is_rejected_by_deepvoxels_and_the_reverse(tmp_path):
    srn_file = tmp_path / "srn.txt"
    srn_file.write_text(format_srn_intrinsics(131.25, 64.0, 64.0, 128, 128))
    with pytest.raises(DeepVoxelsFormatError, match="SRN's four-line format"):
        read_intrinsics(srn_file)
    srn_file.write_text(format_srn_intrinsics(131.25, 64.0, 64.0, 128, 128) + "1\n")  # SRN's optional world2cam line
    with pytest.raises(DeepVoxelsFormatError, match="SRN's four-line format"):
        read_intrinsics(srn_file)
    dv_file = tmp_path / "dv.txt"
    dv_file.write_text(format_intrinsics(525.0, 256.0, 256.0, (0.0, 0.0, 0.0), 0.0, 1.0, 512, 512))
    with pytest.raises(SRNFormatError, match="DeepVoxels' five-line format"):
        read_srn_intrinsics(dv_file)
    assert read_intrinsics(dv_file).scale == 1.0


def test_bad_inputs_name_the_file(tmp_path, scene):
    bad = tmp_path / "bad.txt"
    bad.write_text("525 256 256\n0 0 0\nnear\n1\n512 512\n")
    with pytest.raises(DeepVoxelsFormatError, match="bad.txt"):
        read_intrinsics(bad)
    (scene / "train" / "bust" / "pose" / "000001.txt").write_text("1 2 3\n")
    with pytest.raises(DeepVoxelsFormatError, match="000001.txt"):
        DeepVoxelsDataParserConfig(data=scene).setup().get_dataparser_outputs("train")
    with pytest.raises(DeepVoxelsFormatError, match="no scene 'vase'"):
        DeepVoxelsDataParserConfig(data=scene, scene="vase").setup().get_dataparser_outputs("train")


def test_downscale_factor_other_than_one_is_refused_by_name(scene):
    # ns-render dataset --downscale-factor sets this field (nerfstudio asserts the dataparser has it).
    assert len(DeepVoxelsDataParserConfig(data=scene, downscale_factor=1.0).setup().get_dataparser_outputs("train")
               .image_filenames) == 3  # fmt: skip
    with pytest.raises(ValueError, match="deepvoxels-data: downscale_factor 2"):
        DeepVoxelsDataParserConfig(data=scene, downscale_factor=2.0).setup().get_dataparser_outputs("train")


def test_synth_deepvoxels_writes_the_layout_atomically(tmp_path):
    from bts_studio.data.synthetic.deepvoxels_cli import main

    out = tmp_path / "scene"
    args = [str(out), "--resolution", "24", "--train-views", "6", "--validation-views", "1", "--test-views", "4"]
    main(args)
    with pytest.raises(SystemExit, match="already exists"):
        main(args)
    main([*args, "--overwrite"])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["scene"], "no temporary folder left behind"
    parser = DeepVoxelsDataParserConfig(data=out).setup()
    train, test = parser.get_dataparser_outputs("train"), parser.get_dataparser_outputs("test")
    assert len(train.image_filenames) == 6 and len(test.image_filenames) == 4
    positions = torch.cat([train.cameras.camera_to_worlds, test.cameras.camera_to_worlds])[:, :, 3]
    assert (positions[:, 2] >= 0).all(), "views must lie on the upper hemisphere (z-up world)"
    assert torch.allclose(positions.norm(dim=-1), torch.full((10,), 1.5), atol=1e-5)
    image = np.asarray(Image.open(train.image_filenames[0]))
    assert image.shape == (24, 24, 3) and (image[0, 0] == 255).all(), "white background"
    assert (image < 250).any(axis=-1).mean() > 0.05, "the object is visible"


@pytest.mark.parametrize("focal", ["0", "-5", "nan", "inf"])
def test_degenerate_focal_length_names_intrinsics(tmp_path, scene, focal):
    import shutil

    from bts_studio.data.checks import UserError
    from bts_studio.data.deepvoxels.reader import read_intrinsics

    copy = tmp_path / "copy"
    shutil.copytree(scene, copy)
    path = next(copy.glob("train/*/intrinsics.txt"))
    lines = path.read_text().splitlines()
    lines[0] = " ".join([focal] + lines[0].split()[1:])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=rf"^{path}: line 1"):
        read_intrinsics(path)
