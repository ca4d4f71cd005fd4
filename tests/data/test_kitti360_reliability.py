"""Tier 2: broken KITTI-360 inputs, built from a generated folder, fail naming the file (or parse to the right value).

Each test is a row of docs/reliability.md.
"""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bts_studio.data.checks import UserError
from bts_studio.data.kitti360 import reader as formats
from bts_studio.data.kitti360.dataparser import Kitti360DataParserConfig
from bts_studio.data.kitti360.reader import Kitti360FormatError, Kitti360Paths

FRAMES = 8
SCALE = 0.06
SEQUENCE = formats.sequence_name(0)
SMALL = {"target_height": 24, "target_width": 80, "use_fisheye": False, "lidar_depth_splits": ()}


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    from bts_studio.data.synthetic.kitti360_cli import SynthKitti360Config, run

    root = tmp_path_factory.mktemp("kitti360_rel") / "KITTI-360"
    run(SynthKitti360Config(out=root, frames=FRAMES, scale=SCALE, seed=1, device="cpu"))
    return root


@pytest.fixture
def data(generated: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "KITTI-360"
    shutil.copytree(generated, copy, ignore=shutil.ignore_patterns("bts_gt"))
    return copy


def parse(root: Path, split: str = "train", **overrides):
    config = Kitti360DataParserConfig(data=root, **{**SMALL, **overrides})
    return config.setup().get_dataparser_outputs(split)


def scale_rotation_in_line(path: Path, line_index: int, first: int, factor: float) -> int:
    """Scale the 3x3 rotation of the matrix starting at token ``first`` on a line; return its 1-based number."""
    lines = path.read_text().splitlines()
    tokens = lines[line_index].split()
    values = np.array(tokens[first : first + 12], dtype=float).reshape(3, 4)
    values[:, :3] *= factor
    tokens[first : first + 12] = [f"{v:.10g}" for v in values.ravel()]
    lines[line_index] = " ".join(tokens)
    path.write_text("\n".join(lines) + "\n")
    return line_index + 1


@pytest.mark.parametrize("factor", [1.5, 2.0])
def test_scaled_rotation_in_poses_txt_names_file_line_and_frame(data: Path, factor: float):
    poses = Kitti360Paths(data, SEQUENCE).poses
    line = scale_rotation_in_line(poses, 2, 1, factor)
    frame = int(poses.read_text().splitlines()[2].split()[0])
    with pytest.raises(
        Kitti360FormatError,
        match=rf"^{poses}: line {line} \(frame {frame}\): the rotation part is not a"
        rf" proper rotation.*Vehicle Poses",
    ):
        parse(data)


def test_mirrored_cam0_to_world_names_the_line(data: Path):
    path = Kitti360Paths(data, SEQUENCE).cam0_to_world
    lines = path.read_text().splitlines()
    tokens = lines[0].split()
    tokens[1:4] = [str(-float(value)) for value in tokens[1:4]]  # flips the x row: det -1
    lines[0] = " ".join(tokens)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(Kitti360FormatError, match=rf"^{path}: line 1 .*det R = -1"):
        formats.read_cam0_to_world(path)


def test_scaled_calib_cam_to_pose_names_the_key(data: Path):
    path = data / "calibration" / "calib_cam_to_pose.txt"
    lines = path.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("image_01:"))
    scale_rotation_in_line(path, index, 1, 1.5)
    with pytest.raises(Kitti360FormatError, match=rf"^{path}: image_01: the rotation part.*Calibrations"):
        parse(data)


def test_scaled_calib_cam_to_velo_names_the_file(data: Path):
    path = data / "calibration" / "calib_cam_to_velo.txt"
    scale_rotation_in_line(path, 0, 0, 2.0)
    with pytest.raises(Kitti360FormatError, match=rf"^{path}: the 3x4 camera-to-velodyne matrix: .*rotation"):
        parse(data)


def test_scaled_rectifying_rotation_names_the_key(data: Path):
    path = data / "calibration" / "perspective.txt"
    text = path.read_text()
    line = next(line for line in text.splitlines() if line.startswith("R_rect_00:"))
    values = [float(v) * 1.5 for v in line.split()[1:]]
    path.write_text(text.replace(line, "R_rect_00: " + " ".join(map(str, values))))
    with pytest.raises(Kitti360FormatError, match=rf"^{path}: R_rect_00: the rotation part"):
        parse(data)


@pytest.mark.parametrize("focal", ["0", "-552.5", "nan"])
def test_degenerate_perspective_focal_names_the_key(data: Path, focal: str):
    path = data / "calibration" / "perspective.txt"
    text = path.read_text()
    line = next(line for line in text.splitlines() if line.startswith("P_rect_00:"))
    tokens = line.split()
    tokens[1] = focal
    path.write_text(text.replace(line, " ".join(tokens)))
    with pytest.raises(Kitti360FormatError, match=rf"{path}: .*P_rect_00"):
        parse(data)


def test_degenerate_fisheye_focal_names_the_yaml(data: Path):
    path = data / "calibration" / "image_02.yaml"
    path.write_text(re.sub(r"gamma1: *[-0-9.e+]+", "gamma1: 0.0", path.read_text()))
    with pytest.raises(Kitti360FormatError, match=rf"^{path}: projection_parameters: degenerate intrinsics fx=0.0"):
        parse(data, use_fisheye=True)


def test_empty_split_file_is_named(data: Path, tmp_path: Path):
    split = tmp_path / "train_files.txt"
    split.write_text("# nothing\n\n")
    with pytest.raises(Kitti360FormatError, match=rf"split file {split} \(answering split 'train'\) has no entries"):
        parse(data, split_file=split)


def test_frame_range_that_selects_nothing_names_the_split_file(data: Path, tmp_path: Path):
    split = tmp_path / "train_files.txt"
    frame = int(formats.read_poses(Kitti360Paths(data, SEQUENCE).poses)[0][1])
    split.write_text(f"{SEQUENCE} {frame:010d} l\n")
    with pytest.raises(Kitti360FormatError, match=rf"split file {split}: no entry .* --frame-range \[900, 901\)"):
        parse(data, split_file=split, frame_range=(900, 901))


def test_partial_download_with_official_split_and_sequences(data: Path, tmp_path: Path):
    """The official split lists sequences that are not on disk; --sequences restricts it before the check."""
    frame = int(formats.read_poses(Kitti360Paths(data, SEQUENCE).poses)[0][1])
    split = tmp_path / "train_files.txt"
    missing = formats.sequence_name(3)
    split.write_text(f"{missing} 0000000100 l\n{SEQUENCE} {frame:010d} l\n{SEQUENCE} {frame:010d} r\n")
    with pytest.raises(Kitti360FormatError, match=rf"{split} names sequence\(s\) {missing}.*--sequences"):
        parse(data, split_file=split)
    outputs = parse(data, split_file=split, sequences=("0",))
    assert len(outputs.metadata["frame_groups"]) == 2


def test_no_usable_frame_says_why_in_the_message(data: Path, tmp_path: Path):
    split = tmp_path / "train_files.txt"
    frame = int(formats.read_poses(Kitti360Paths(data, SEQUENCE).poses)[0][1])
    split.write_text(f"{SEQUENCE} {frame:010d} r\n")
    with pytest.raises(
        Kitti360FormatError,
        match=rf"no usable input frame \(from the split file {split}.*Skipped: 1 "
        "entries whose input camera image_01 is switched off",
    ):
        parse(data, split_file=split, cameras=("image_00",))


def test_damaged_cached_image_is_rebuilt(data: Path):
    outputs = parse(data)
    cached = Path(outputs.image_filenames[0])
    assert cached.parent.name == "data_24x80"
    good = cached.read_bytes()
    cached.write_bytes(good[: len(good) // 3])  # a corrupted cache entry
    parse(data)
    assert cached.read_bytes() == good
    cached.write_bytes(b"\x89PNG garbage of some length ...")
    parse(data)
    assert cached.read_bytes() == good


def test_changed_source_image_rebuilds_its_cached_copy(data: Path):
    outputs = parse(data)
    cached = Path(outputs.image_filenames[0])
    frame = int(cached.stem)
    source = Kitti360Paths(data, SEQUENCE).image(0, frame)
    before = cached.read_bytes()
    with Image.open(source) as image:
        Image.fromarray(255 - np.asarray(image.convert("RGB"))).save(source)
    parse(data)
    assert cached.read_bytes() != before


def test_cache_dir_under_a_file_names_the_option(data: Path, tmp_path: Path):
    (tmp_path / "blocker").write_text("a file")
    with pytest.raises(UserError, match=r"blocker is a file, not a folder\. Choose another folder with --cache-dir"):
        parse(data, cache_dir=tmp_path / "blocker" / "cache")


@pytest.mark.parametrize("mode", ["P", "LA", "RGBA"])
def test_non_rgb_originals_are_cached_as_bts_reads_them(data: Path, mode: str):
    """KITTI-360's rule is BTS's cv2.imread(IMREAD_COLOR): palette expanded, grey repeated, alpha dropped."""
    outputs = parse(data)
    cached = Path(outputs.image_filenames[0])
    frame = int(cached.stem)
    source = Kitti360Paths(data, SEQUENCE).image(0, frame)
    with Image.open(source) as image:
        rgb = np.asarray(image.convert("RGB"))
    if mode == "P":
        converted = Image.fromarray(rgb).quantize(colors=256)
        expected = np.asarray(converted.convert("RGB"))
    elif mode == "LA":
        converted = Image.fromarray(np.stack([rgb[..., 0], np.full_like(rgb[..., 0], 7)], -1), mode="LA")
        expected = np.repeat(rgb[..., :1], 3, -1)
    else:
        converted = Image.fromarray(np.concatenate([rgb, np.zeros_like(rgb[..., :1])], -1), mode="RGBA")
        expected = rgb
    converted.save(source)
    reference = Kitti360Paths(data, SEQUENCE).image(1, frame)
    Image.fromarray(expected).save(reference)  # the right camera's copy holds the expected RGB
    outputs = parse(data)
    left = Path(outputs.image_filenames[0])
    right = next(Path(p) for p in outputs.image_filenames if "image_01" in str(p) and Path(p).stem == left.stem)
    np.testing.assert_array_equal(np.asarray(Image.open(left)), np.asarray(Image.open(right)))


def test_synth_kitti360_removes_the_staging_folder_of_a_killed_run(tmp_path: Path):
    import subprocess
    import sys

    from bts_studio.data.synthetic.kitti360_cli import main

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.tmp-{dead.pid}-x1y2"  # what a SIGKILL-ed run leaves
    (stale / "data_2d_raw").mkdir(parents=True)
    main([str(tmp_path / "out"), "--frames", "3", "--scale", "0.05"])
    assert not stale.exists() and (tmp_path / "out" / "calibration").is_dir()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_parent_or_sub_folder_as_data_names_the_root(data: Path):
    """``--data`` one level above the KITTI-360 root, or at one of its folders: the error names the root."""
    for wrong in (data.parent, data / "data_poses"):
        with pytest.raises(Kitti360FormatError, match=f"calibration: folder not found.*did you mean --data {data}\\?"):
            parse(wrong)
    assert len(parse(data).image_filenames) > 0
