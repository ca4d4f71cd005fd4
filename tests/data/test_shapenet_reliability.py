"""Tier 2: broken SRN and DVR inputs, built from generated data, fail naming the file (or parse to the right value).

Each test is a row of docs/reliability.md.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bts_studio.data.checks import UserError
from bts_studio.data.shapenet.dvr_dataparser import ShapeNetDVRDataParserConfig
from bts_studio.data.shapenet.dvr_reader import DVRFormatError, load_pointcloud, read_depth
from bts_studio.data.shapenet.srn_dataparser import ShapeNetSRNDataParserConfig
from bts_studio.data.shapenet.srn_reader import SRNFormatError
from bts_studio.data.synthetic.shapenet_cli import main as synth

SIZE = 16


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapenet_rel") / "synthetic"
    synth(
        [str(out), "--classes", "cars", "--instances", "2", "--val-instances", "1", "--test-instances", "1",
         "--format", "both", "--resolution", str(SIZE), "--train-views", "3", "--test-views", "3",
         "--dvr-views", "3", "--pointcloud-points", "100"]
    )  # fmt: skip
    return out


@pytest.fixture
def srn_split(generated, tmp_path) -> Path:
    split = tmp_path / "cars_train"
    shutil.copytree(generated / "srn_cars" / "cars_train", split)
    return split


@pytest.fixture
def dvr_root(generated, tmp_path) -> Path:
    root = tmp_path / "dvr"
    shutil.copytree(generated / "dvr", root)
    return root


def parse_srn(data: Path, tmp_path: Path, split: str = "train", **overrides):
    config = ShapeNetSRNDataParserConfig(
        data=data, few_shot_views=(0,), resize_cache_dir=tmp_path / "cache", **overrides
    )
    return config.setup().get_dataparser_outputs(split)


def parse_dvr(root: Path, tmp_path: Path, split: str = "train", **overrides):
    config = ShapeNetDVRDataParserConfig(data=root, image_cache_dir=tmp_path / "rgb", **overrides)
    return config.setup().get_dataparser_outputs(split)


def first_instance(split: Path) -> Path:
    return sorted(path for path in split.iterdir() if path.is_dir())[0]


def first_dvr_object(root: Path) -> Path:
    synset = root / "02958343"
    return synset / (synset / "train.lst").read_text().split()[0]


# ------------------------------------------------------------------------------------------------------- SRN
@pytest.mark.parametrize("scale", [1.5, 2.0, -1.0])
def test_srn_scaled_or_mirrored_pose_names_the_file(srn_split, tmp_path, scale):
    pose_path = sorted((first_instance(srn_split) / "pose").iterdir())[1]
    pose = np.loadtxt(pose_path).reshape(4, 4)
    pose[:3, :3] *= scale
    pose_path.write_text(" ".join(f"{v:.9g}" for v in pose.ravel()))
    with pytest.raises(SRNFormatError, match=rf"^{pose_path}: the rotation part is not a proper rotation"):
        parse_srn(srn_split, tmp_path)


@pytest.mark.parametrize("focal", ["0.", "-35.", "nan", "inf"])
def test_srn_degenerate_focal_names_intrinsics(srn_split, tmp_path, focal):
    path = first_instance(srn_split) / "intrinsics.txt"
    lines = path.read_text().splitlines()
    lines[0] = " ".join([focal, *lines[0].split()[1:]])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SRNFormatError, match=rf"^{path}: line 1 'f cx cy': degenerate intrinsics fx="):
        parse_srn(srn_split, tmp_path)


def test_srn_principal_point_outside_the_image_names_intrinsics(srn_split, tmp_path):
    path = first_instance(srn_split) / "intrinsics.txt"
    lines = path.read_text().splitlines()
    lines[0] = " ".join([lines[0].split()[0], "9000.", "9000.", "0."])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SRNFormatError, match=rf"^{path}: .*principal point"):
        parse_srn(srn_split, tmp_path)


def test_srn_truncated_png_is_named_by_the_parser(srn_split, tmp_path):
    image = sorted((first_instance(srn_split) / "rgb").iterdir())[2]
    image.write_bytes(image.read_bytes()[:-30])
    with pytest.raises(SRNFormatError, match=rf"^{image}: truncated PNG"):
        parse_srn(srn_split, tmp_path)


def test_srn_unreadable_pose_file_is_named(srn_split, tmp_path):
    pose_path = sorted((first_instance(srn_split) / "pose").iterdir())[0]
    pose_path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(SRNFormatError, match=rf"^{pose_path}: not a list of numbers"):
        parse_srn(srn_split, tmp_path)


@pytest.mark.parametrize("mode", ["P", "LA", "RGBA", "I;16"])
def test_srn_non_rgb_views_reach_nerfstudio_as_the_right_rgb(srn_split, tmp_path, mode):
    from nerfstudio.data.datasets.base_dataset import InputDataset

    view = sorted((first_instance(srn_split) / "rgb").iterdir())[0]
    with Image.open(view) as original:
        rgb = np.asarray(original.convert("RGB"))
    if mode == "P":
        image = Image.fromarray(rgb).quantize(colors=256)
        expected = np.asarray(image.convert("RGB"))
    elif mode == "LA":
        grey = rgb[..., 1]
        image = Image.fromarray(np.stack([grey, np.full_like(grey, 128)], -1), mode="LA")
        expected = np.repeat(grey[..., None], 3, -1)
    elif mode == "RGBA":
        image = Image.fromarray(np.concatenate([rgb, np.zeros_like(rgb[..., :1])], -1), mode="RGBA")
        expected = rgb  # alpha dropped as SRN's load_rgb does ([..., :3]); not composited on white
    else:
        grey16 = rgb[..., 1].astype(np.uint16) * 257
        image = Image.fromarray(grey16)
        expected = np.repeat(rgb[..., 1:2], 3, -1)
    image.save(view)
    outputs = parse_srn(srn_split, tmp_path)
    served = InputDataset(outputs).get_image_uint8(0).numpy()
    np.testing.assert_array_equal(served, expected)
    assert Path(outputs.image_filenames[0]) != view and view.parent not in Path(outputs.image_filenames[0]).parents


def test_srn_damaged_resize_cache_entry_is_rebuilt(srn_split, tmp_path):
    outputs = parse_srn(srn_split, tmp_path, image_size=8)
    cached = Path(outputs.image_filenames[0])
    good = cached.read_bytes()
    cached.write_bytes(good[: len(good) // 2])
    again = parse_srn(srn_split, tmp_path, image_size=8)
    assert Path(again.image_filenames[0]) == cached and cached.read_bytes() == good


def test_srn_resize_cache_under_a_file_names_the_option(srn_split, tmp_path):
    (tmp_path / "blocker").write_text("a file")
    config = ShapeNetSRNDataParserConfig(
        data=srn_split, few_shot_views=(0,), image_size=8, resize_cache_dir=tmp_path / "blocker" / "cache"
    )
    with pytest.raises(UserError, match=r"blocker is a file, not a folder.*--resize-cache-dir"):
        config.setup().get_dataparser_outputs("train")


def test_srn_few_shot_views_beyond_an_instance_are_not_a_parser_error(generated, tmp_path):
    """docs/srn.md's ``srn-single-scene --data <instance>``: view 64 is only checked where few-shot evaluation runs."""
    instance = first_instance(generated / "srn_cars" / "cars_test")
    config = ShapeNetSRNDataParserConfig(data=instance, resize_cache_dir=tmp_path / "cache")  # default views (64,)
    test = config.setup().get_dataparser_outputs("test")
    assert not test.metadata["input_view_mask"].any() and test.metadata["few_shot_views"] == (64,)


@pytest.mark.parametrize("broken", ["pose", "intrinsics.txt"])
def test_srn_broken_instance_of_another_split_stops_training_at_start_up(generated, tmp_path, broken):
    """The train split's parse checks the layout of the val/test instances too (no file read), so a test instance
    with a pose file short (or no ``intrinsics.txt``) fails before training, not at ``ns-eval``."""
    root = tmp_path / "srn_cars"
    shutil.copytree(generated / "srn_cars", root)
    assert len(parse_srn(root, tmp_path).image_filenames) == 6
    target = first_instance(root / "cars_test") / broken
    if target.is_dir():
        sorted(target.iterdir())[-1].unlink()
        expected = rf"^{target.parent}: 3 images in rgb/ but 2 pose files in pose/.*\(an instance of the 'test' split"
    else:
        target.unlink()
        expected = rf"^missing {target}: every SRN instance folder needs an intrinsics.txt \(an instance of the 'test'"
    with pytest.raises(SRNFormatError, match=expected):
        parse_srn(root, tmp_path)


# ------------------------------------------------------------------------------------------------------- DVR
@pytest.mark.parametrize("scale", [1.5, 2.0])
def test_dvr_scaled_world_mat_names_the_key(dvr_root, tmp_path, scale):
    path = first_dvr_object(dvr_root) / "cameras.npz"
    cameras = dict(np.load(path))
    cameras["world_mat_1"] = cameras["world_mat_1"].copy()
    cameras["world_mat_1"][:3, :3] *= scale
    np.savez(path, **cameras)
    with pytest.raises(DVRFormatError, match=rf"^{path}: world_mat_1: the rotation part is not a proper rotation"):
        parse_dvr(dvr_root, tmp_path)


def test_dvr_dtu_style_projection_world_mat_is_decomposed_not_misread(dvr_root, tmp_path):
    """A DTU-style ``world_mat_i = K [R | t]`` (pixels) gives K's intrinsics, never an identity or a scaled rotation."""
    path = first_dvr_object(dvr_root) / "cameras.npz"
    cameras = dict(np.load(path))
    intrinsics = np.array([[30.0, 0, 15, 0], [0, 31.0, 14, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    for key in [k for k in cameras if k.startswith("world_mat_") and "inv" not in k]:
        cameras[key] = intrinsics @ cameras[key]  # DTU: world_mat = K [R | t] in pixels
    cameras = {key: value for key, value in cameras.items() if "inv" not in key}
    np.savez(path, **cameras)
    cams = parse_dvr(dvr_root, tmp_path).cameras
    # The first object's views come first. DTU puts pixel centres at integers; nerfstudio at +0.5.
    assert float(cams.fx[0]) == pytest.approx(30.0, rel=1e-5)
    assert float(cams.fy[0]) == pytest.approx(31.0, rel=1e-5)
    assert float(cams.cx[0]) == pytest.approx(15.5, rel=1e-5)
    assert float(cams.cy[0]) == pytest.approx(14.5, rel=1e-5)
    rotation = cams.camera_to_worlds[0, :3, :3].double()
    assert torch.allclose(rotation @ rotation.T, torch.eye(3, dtype=torch.float64), atol=1e-4)


@pytest.mark.parametrize("focal", [0.0, -2.0, np.nan])
def test_dvr_degenerate_camera_mat_names_the_key(dvr_root, tmp_path, focal):
    path = first_dvr_object(dvr_root) / "cameras.npz"
    cameras = dict(np.load(path))
    cameras["camera_mat_2"] = cameras["camera_mat_2"].copy()
    cameras["camera_mat_2"][0, 0] = focal
    np.savez(path, **cameras)
    expected = "must be a finite" if np.isnan(focal) else "degenerate intrinsics fx="
    with pytest.raises(DVRFormatError, match=rf"^{path}: camera_mat_2.*{expected}"):
        parse_dvr(dvr_root, tmp_path)


def test_dvr_truncated_cameras_npz_names_the_path(dvr_root, tmp_path):
    path = first_dvr_object(dvr_root) / "cameras.npz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DVRFormatError, match=rf"^{path}: cannot be read as DVR's cameras.npz .*truncated"):
        parse_dvr(dvr_root, tmp_path)


def test_dvr_truncated_image_names_the_path(dvr_root, tmp_path):
    image = sorted((first_dvr_object(dvr_root) / "image").iterdir())[1]
    image.write_bytes(image.read_bytes()[:-30])
    with pytest.raises(DVRFormatError, match=rf"^{image}: truncated PNG"):
        parse_dvr(dvr_root, tmp_path)


def test_dvr_truncated_mask_names_the_path(dvr_root, tmp_path):
    mask = sorted((first_dvr_object(dvr_root) / "mask").iterdir())[0]
    mask.write_bytes(mask.read_bytes()[:-20])
    with pytest.raises(DVRFormatError, match=rf"^{mask}: truncated PNG"):
        parse_dvr(dvr_root, tmp_path)


def test_dvr_palette_image_is_served_with_its_palette_colours(dvr_root, tmp_path):
    from nerfstudio.data.datasets.base_dataset import InputDataset

    image = sorted((first_dvr_object(dvr_root) / "image").iterdir())[0]
    with Image.open(image) as original:
        palette = original.convert("RGB").quantize(colors=256)
    palette.save(image)
    outputs = parse_dvr(dvr_root, tmp_path)
    index = [Path(p).name for p in outputs.image_filenames].index(Path(outputs.image_filenames[0]).name)
    served = InputDataset(outputs).get_image_uint8(index).numpy()
    np.testing.assert_array_equal(served, np.asarray(palette.convert("RGB")))


def test_dvr_truncated_depth_and_pointcloud_name_the_path(dvr_root):
    obj = first_dvr_object(dvr_root)
    depth = sorted((obj / "depth").iterdir())[0]
    depth.write_bytes(depth.read_bytes()[:100])
    with pytest.raises(DVRFormatError, match=rf"^{depth}: cannot be read as a float32"):
        read_depth(depth)
    cloud = obj / "pointcloud.npz"
    cloud.write_bytes(cloud.read_bytes()[:150])
    with pytest.raises(DVRFormatError, match=rf"^{cloud}: "):
        load_pointcloud(cloud)


def test_dvr_unreadable_split_list_is_named(dvr_root, tmp_path):
    path = dvr_root / "02958343" / "train.lst"
    path.write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(DVRFormatError, match=rf"^{path}: cannot be read as a split list"):
        parse_dvr(dvr_root, tmp_path)


def test_dvr_image_cache_under_a_file_names_the_option(dvr_root, tmp_path):
    image = sorted((first_dvr_object(dvr_root) / "image").iterdir())[0]
    Image.open(image).convert("RGB").quantize(colors=16).save(image)  # needs an RGB copy
    (tmp_path / "blocker").write_text("a file")
    config = ShapeNetDVRDataParserConfig(data=dvr_root, image_cache_dir=tmp_path / "blocker" / "rgb")
    with pytest.raises(DVRFormatError, match=r"blocker is a file, not a folder.*--image-cache-dir"):
        config.setup().get_dataparser_outputs("train")


def test_generator_output_folder_as_data_names_the_dataset_root(generated, tmp_path):
    """``--data OUT`` (the generator's folder) instead of ``OUT/srn_cars`` or ``OUT/dvr``: each parser's error
    names the folder to pass; that folder parses."""
    with pytest.raises(SRNFormatError, match=f"did you mean --data {generated / 'srn_cars'}"):
        parse_srn(generated, tmp_path)
    with pytest.raises(DVRFormatError, match=f"did you mean --data {generated / 'dvr'}"):
        parse_dvr(generated, tmp_path)
    assert len(parse_srn(generated / "srn_cars", tmp_path).image_filenames) > 0
    assert len(parse_dvr(generated / "dvr", tmp_path).image_filenames) > 0
