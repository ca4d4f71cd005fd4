"""Tier 2: DVR's OpenEXR depth, DTU-style projection cameras, img_choy2016 input views, world_mat_inv_i and the
NMR split names parse into exact nerfstudio cameras (rays nerfstudio casts reproduce the stored masks/depth)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bts_studio.data.shapenet.dvr_dataparser import ShapeNetDVRDataParserConfig
from bts_studio.data.shapenet.dvr_reader import DVRFormatError, read_depth, read_object
from bts_studio.data.synthetic.shapenet_cli import canonical_instance
from bts_studio.data.synthetic.shapenet_cli import main as synth
from bts_studio.data.synthetic.shapenet_objects import instance_names, place

SEED, SIZE = 5, 32
SPLITS = {"train": 1, "val": 1, "test": 1}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dvr_extras") / "synthetic"
    synth(
        [str(out), "--classes", "cars", "--instances", "1", "--val-instances", "1", "--test-instances", "1",
         "--format", "dvr", "--seed", str(SEED), "--resolution", str(SIZE), "--dvr-views", "3",
         "--pointcloud-points", "500", "--dvr-depth-format", "exr", "--dvr-input-views", "2",
         "--dvr-input-resolution", "24", "--dvr-split-prefix", "softras_", "--dtu-scene", "--dtu-views", "4"]
    )  # fmt: skip
    return out


def exact(number: int):
    canonical, _ = canonical_instance(SEED, "cars", number)
    return place(canonical, "dvr")


def recast(scene_object, cameras, index: int, object_to_world: torch.Tensor):
    """Mask and z-depth that nerfstudio's rays of camera ``index`` see in the exact object (world frame)."""
    bundle = cameras.generate_rays(camera_indices=index)
    height, width = bundle.origins.shape[:2]
    rotation = object_to_world[:3, :3].double()
    # Rays into the object frame (object_to_world is a rotation here), then cast against the exact parts.
    origins = bundle.origins.reshape(-1, 3).double() @ rotation
    directions = bundle.directions.reshape(-1, 3).double() @ rotation
    hits = scene_object.scene().raycast(origins.float(), directions.float())
    optical_axis = -cameras.camera_to_worlds[index, :3, 2]
    z = hits.t * (bundle.directions.reshape(-1, 3) @ optical_axis)
    return (hits.primitive_id >= 0).reshape(height, width), z.reshape(height, width)


def grown(mask: np.ndarray) -> np.ndarray:
    """The mask grown by one pixel: where a point within a pixel of the silhouette may land."""
    padded = np.pad(mask, 1)
    height, width = mask.shape
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    return np.any([padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width] for dy, dx in shifts], axis=0)


def check_views(outputs, scene_object):
    metadata = outputs.metadata
    for index in range(len(outputs.cameras)):
        mask, z = recast(scene_object, outputs.cameras, index, metadata["object_to_world"])
        stored_mask = torch.from_numpy(np.asarray(Image.open(metadata["mask_filenames"][index])) > 127)
        assert (mask == stored_mask).float().mean() > 0.995, f"view {index}: mask of the parsed camera"
        if metadata["depth_filenames"] is not None:
            stored = torch.from_numpy(read_depth(Path(metadata["depth_filenames"][index])))
            both = mask & stored_mask
            assert both.sum() > 10 and torch.allclose(z[both], stored[both], atol=1e-4)
            assert torch.isinf(stored[~stored_mask]).all(), "background depth is inf"


def test_exr_depth_and_nmr_split_names_parse(dataset):
    config = ShapeNetDVRDataParserConfig(data=dataset / "dvr", split_prefix="softras_")
    outputs = config.setup().get_dataparser_outputs("train")
    assert all(str(path).endswith(".exr") for path in outputs.metadata["depth_filenames"])
    name = outputs.metadata["instance_names"][0].split("/")[1]
    number = instance_names("cars", sum(SPLITS.values()), SEED).index(name)
    check_views(outputs, exact(number))
    with pytest.raises(DVRFormatError, match="train.lst"):
        ShapeNetDVRDataParserConfig(data=dataset / "dvr").setup().get_dataparser_outputs("train")
    # ns-render dataset --downscale-factor sets this field; only 1 is served.
    with pytest.raises(ValueError, match="shapenet-dvr-data: downscale_factor 2"):
        config.downscale_factor = 2.0
        config.setup().get_dataparser_outputs("train")


def test_input_views_have_their_own_cameras(dataset):
    synset = dataset / "dvr" / "02958343"
    name = (synset / "softras_train.lst").read_text().split()[0]
    obj = read_object(synset, name)
    assert obj.input_views is not None and len(obj.input_views.image_paths) == 2
    assert obj.input_views.intrinsics.shape == (2, 3, 3) and obj.input_views.intrinsics[0, 0, 2] == 12.0
    # A known surface point of the exact object lands on a drawn pixel of the input view.
    scene_object = exact(instance_names("cars", 3, SEED).index(name))
    image = np.asarray(Image.open(obj.input_views.image_paths[0]))[..., :3]
    K, w2c = obj.input_views.intrinsics[0], obj.input_views.w2c[0]
    from bts_studio.data.synthetic.shapenet_surface import sample_surface

    points, _ = sample_surface(scene_object, 300, torch.Generator().manual_seed(0))
    camera = points.numpy() @ w2c[:3, :3].T + w2c[:3, 3]
    pixels = camera @ K.T
    uv = pixels[:, :2] / pixels[:, 2:]
    cols, rows = np.floor(uv).astype(int).T
    inside = (rows >= 0) & (rows < 24) & (cols >= 0) & (cols < 24)
    drawn = grown((image != 255).any(axis=-1))[rows[inside], cols[inside]]
    assert inside.mean() > 0.95 and drawn.mean() > 0.97


def test_world_mat_inv_only_file_is_read(dataset, tmp_path):
    synset = dataset / "dvr" / "02958343"
    name = (synset / "softras_val.lst").read_text().split()[0]
    reference = read_object(synset, name)
    copy = tmp_path / "02958343" / name
    import shutil

    shutil.copytree(synset / name, copy)
    with np.load(copy / "cameras.npz") as archive:
        entries = {key: archive[key] for key in archive.files}
    for view in range(3):
        entries[f"world_mat_inv_{view}"] = np.linalg.inv(entries.pop(f"world_mat_{view}"))
    np.savez(copy / "cameras.npz", **entries)
    parsed = read_object(tmp_path / "02958343", name)
    np.testing.assert_allclose(parsed.c2w_opencv, reference.c2w_opencv, atol=1e-9)


def test_dtu_style_scene_parses_with_decomposed_projections(dataset):
    scene = dataset / "dtu" / "scan1"
    with np.load(scene / "cameras.npz") as archive:
        assert not np.allclose(archive["scale_mat_0"], np.eye(4)), "the scene's scale_mat is non-trivial"
    outputs = ShapeNetDVRDataParserConfig(data=scene).setup().get_dataparser_outputs("train")
    assert len(outputs.cameras) == 4 and outputs.metadata["num_instances"] == 1
    assert abs(outputs.dataparser_scale - 1 / 180.0) < 1e-9, "scale_mat's scale is recorded"
    number = sum(SPLITS.values()) - 1  # the generator's DTU scene is the first test object
    check_views(outputs, exact(number))
    # Known surface points project through the parsed cameras onto mask pixels.
    with np.load(scene / "pointcloud.npz") as archive:
        points = torch.from_numpy(archive["points"]).double()
    cameras = outputs.cameras
    rotation = outputs.metadata["object_to_world"][:3, :3].double()
    world = points @ rotation.T
    c2w = cameras.camera_to_worlds[0].double()
    camera = (world - c2w[:3, 3]) @ c2w[:3, :3]  # OpenGL camera frame
    u = cameras.fx[0, 0] * camera[:, 0] / -camera[:, 2] + cameras.cx[0, 0]
    v = cameras.fy[0, 0] * -camera[:, 1] / -camera[:, 2] + cameras.cy[0, 0]
    mask = grown(np.asarray(Image.open(outputs.metadata["mask_filenames"][0])) > 127)
    rows, cols = v.floor().long().clamp(0, SIZE - 1), u.floor().long().clamp(0, SIZE - 1)
    assert mask[rows.numpy(), cols.numpy()].mean() > 0.97
    held = ShapeNetDVRDataParserConfig(data=scene, scene_heldout_every=2).setup()
    assert held.get_dataparser_outputs("train").cameras.metadata["view_idx"].reshape(-1).tolist() == [1, 3]
    assert held.get_dataparser_outputs("test").cameras.metadata["view_idx"].reshape(-1).tolist() == [0, 2]


def test_visual_hull_of_the_dtu_scene_contains_its_surface(dataset):
    from bts_studio.core.visual_hull import visual_hull_occupancy
    from bts_studio.methods.common.cameras import cameras_to_opencv_w2c

    scene = dataset / "dtu" / "scan1"
    outputs = ShapeNetDVRDataParserConfig(data=scene).setup().get_dataparser_outputs("train")
    K, w2c = cameras_to_opencv_w2c(outputs.cameras)
    masks = torch.from_numpy(
        np.stack([grown(np.asarray(Image.open(p)) > 127) for p in outputs.metadata["mask_filenames"]])
    )
    with np.load(scene / "pointcloud.npz") as archive:
        points = torch.from_numpy(archive["points"]).float() @ outputs.metadata["object_to_world"][:3, :3].T
    assert visual_hull_occupancy(points, K, w2c, masks).float().mean() > 0.99
    far_away = torch.tensor([[0.49, 0.49, 0.49], [-0.49, 0.49, -0.49]])
    assert not visual_hull_occupancy(far_away, K, w2c, masks).any()


def test_object_folder_without_cameras_npz_names_the_missing_file(dataset, tmp_path):
    """``--data`` a DTU-style scan (or one ShapeNet object) whose ``cameras.npz`` is missing: the error names that
    file, not the split lists a dataset root would have (it used to say "empty split 'train' ... no train.lst")."""
    import shutil

    scan = tmp_path / "scan1"
    shutil.copytree(dataset / "dtu" / "scan1", scan)
    (scan / "cameras.npz").unlink()
    config = ShapeNetDVRDataParserConfig(data=scan, image_cache_dir=tmp_path / "rgb")
    with pytest.raises(DVRFormatError, match=rf"^missing {scan / 'cameras.npz'}: {scan} looks like one object"):
        config.setup().get_dataparser_outputs("train")


@pytest.mark.parametrize(("split", "broken"), [("test", "cameras.npz"), ("val", "mask")])
def test_a_broken_object_of_another_split_stops_training_at_start_up(dataset, tmp_path, split, broken):
    """The train split's parse checks the layout of the val/test objects too (no file read), so a test object
    without ``cameras.npz`` (or with a ``mask/`` file short) fails before training, not at ``ns-eval``; the
    intact copy still parses."""
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(dataset / "dvr", root)
    config = ShapeNetDVRDataParserConfig(data=root, split_prefix="softras_", image_cache_dir=tmp_path / "rgb")
    assert len(config.setup().get_dataparser_outputs("train").image_filenames) == 3
    synset = next(path for path in root.iterdir() if path.is_dir())
    (model,) = (synset / f"softras_{split}.lst").read_text().split()
    target = synset / model / broken
    if target.is_dir():
        sorted(target.iterdir())[-1].unlink()
        expected = rf"^{target}: 2 files for 3 images in image/ \(an object of the '{split}' split"
    else:
        target.unlink()
        expected = rf"^missing {target}: every DVR object folder needs cameras.npz \(an object of the '{split}' split"
    with pytest.raises(DVRFormatError, match=expected):
        config.setup().get_dataparser_outputs("train")
