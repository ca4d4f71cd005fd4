"""Broken DeepVoxels scenes, built from the generated scene: each error names the file, or the value is corrected."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bts_studio.data.checks import UserError
from bts_studio.data.deepvoxels.dataparser import DeepVoxelsDataParserConfig
from bts_studio.data.synthetic.deepvoxels_cli import main as synth_deepvoxels


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dv") / "scene"
    synth_deepvoxels([str(out), "--resolution", "16", "--train-views", "4", "--test-views", "2"], prog="synth")
    return out


@pytest.fixture
def scene(generated, tmp_path) -> Path:
    root = tmp_path / "scene"
    shutil.copytree(generated, root)
    return root


def parse(root: Path, tmp_path: Path, split: str = "train"):
    config = DeepVoxelsDataParserConfig(data=root, image_cache_dir=tmp_path / "rgb")
    return config.setup().get_dataparser_outputs(split)


def train_file(root: Path, folder: str, index: int = 1) -> Path:
    return sorted(next(root.glob("train/*")).joinpath(folder).iterdir())[index]


@pytest.mark.parametrize("scale", [1.5, 2.0, -1.0])
def test_scaled_or_mirrored_pose_names_the_file(scene, tmp_path, scale):
    path = train_file(scene, "pose")
    pose = np.array(path.read_text().split(), dtype=np.float64).reshape(4, 4)
    pose[:3, :3] *= scale
    path.write_text(" ".join(f"{value:.9g}" for value in pose.ravel()))
    with pytest.raises(UserError, match=rf"{path}.*not a proper rotation"):
        parse(scene, tmp_path)


def test_truncated_png_names_the_file(scene, tmp_path):
    path = train_file(scene, "rgb")
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(UserError, match=rf"^{path}"):
        parse(scene, tmp_path)


@pytest.mark.parametrize("mode", ["P", "LA", "RGBA"])
def test_non_rgb_views_reach_nerfstudio_as_the_right_rgb(scene, tmp_path, mode):
    path = train_file(scene, "rgb")
    rgb = np.asarray(Image.open(path).convert("RGB"))
    Image.open(path).convert(mode).save(path)
    outputs = parse(scene, tmp_path)
    handed = Path(outputs.image_filenames[1])
    image = Image.open(handed)
    assert image.mode == "RGB"
    expected = np.asarray(Image.open(path).convert("RGB"))  # the documented rule: alpha dropped, palette expanded
    assert np.array_equal(np.asarray(image), expected)
    if mode == "RGBA":  # an opaque alpha channel is dropped: the original colours, exactly
        assert np.array_equal(np.asarray(image), rgb)


def test_binary_intrinsics_file_names_the_file(scene, tmp_path):
    path = next(scene.glob("train/*/intrinsics.txt"))
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(UserError, match=rf"^{path}: cannot be read as text"):
        parse(scene, tmp_path)


def test_missing_pose_for_an_image_names_the_folder(scene, tmp_path):
    path = train_file(scene, "pose")
    path.unlink()
    with pytest.raises(UserError, match=rf"^{path.parent.parent}: .*do not pair up by name"):
        parse(scene, tmp_path)


def test_image_cache_under_a_file_names_the_option(scene, tmp_path):
    path = train_file(scene, "rgb")
    Image.open(path).convert("P").save(path)
    (tmp_path / "blocker").write_text("a file")
    config = DeepVoxelsDataParserConfig(data=scene, image_cache_dir=tmp_path / "blocker" / "rgb")
    with pytest.raises(UserError, match="--image-cache-dir"):
        config.setup().get_dataparser_outputs("train")


def test_parent_or_split_folder_as_data_names_the_root(scene, tmp_path):
    """``--data`` one level above the root, or at its ``train/`` folder: the error names the root to pass."""
    for wrong in (scene.parent, scene / "train"):
        with pytest.raises(UserError, match=f"no train/ folder.*did you mean --data {scene}\\?"):
            parse(wrong, tmp_path)
    assert len(parse(scene, tmp_path).image_filenames) > 0


def test_a_broken_test_view_stops_training_at_start_up(scene, tmp_path):
    """The train split's parse reads the val/test poses too, so a test view without its pose fails before training,
    not at ``ns-eval``; the intact scene parses."""
    assert len(parse(scene, tmp_path).image_filenames) == 4
    test_folder = next(scene.glob("test/*"))
    sorted((test_folder / "pose").iterdir())[0].unlink()
    with pytest.raises(UserError, match=rf"^{test_folder}: .*do not pair up by name.*\(the 'test' split, checked"):
        parse(scene, tmp_path)
