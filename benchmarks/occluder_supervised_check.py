"""Why does the tiny bts-density model not find the one car? Input dependence, gradients and a supervised fit.

Issue #18 (docs/benchmarks.md, "The one-car check on the CPU"): on the CPU the ``bts-density-tiny`` preset trained
on the one-car world predicts the same depth map for every input image. This script trains the SAME network (the
preset's ``BTSModel``: encoder, decoder, density MLP, sampler, compositing) outside nerfstudio's trainer, with
either the preset's own photometric loss (``pipeline.get_train_loss_dict``, the exact training objective) or a
direct supervised loss on the synthetic set's exact z-depth (``bts_gt/``), and reports every ``--eval-every``
steps on the training inputs (train = test, the overfit setting of runs G/J):

- input dependence: the spread of the predicted depth maps across the inputs (``depth_spread``: mean over pixels
  of the standard deviation across images, metres) beside the ground truth's own spread, and the encoder
  features' spread across images relative to their spread across pixels;
- depth error against the exact z-depth (``absrel``; ``car_absrel`` on the car's pixels only);
- exact occupancy (``bts_studio.eval.occupancy_exact``, the code ``bts-studio eval-occupancy`` runs) of the model:
  O_rec (the car guard of the one-car check), IE_rec, IE_acc;
- gradient norms per parameter group (encoder ResNet, decoder, density MLP) in the logged steps;
- BatchNorm: the depth maps of one train-mode forward of all inputs (batch statistics) beside eval mode's;
- the density 0.5 m inside the car, and the car's depth error of the mean depth map over all inputs (a shared
  prior) beside each input's own.

Issue 18's opt-in options: ``--decoder-lr`` trains the decoder in the model's own ``decoder`` optimizer group
(``--pipeline.model.decoder-param-group``; ``--mlp-lr`` sets the density MLP's), ``--automask`` turns on
Monodepth2's auto-mask (``--pipeline.model.automask``); with it the log adds the share of pixels masked
(``train_automasked_ratio``) beside the training batches' mean depth (docs/benchmarks.md, "Decoder learning rate
and auto-masking").

``--loss direct`` is the control (a 1x1-conv disparity head on the same encoder, same pixels and loss, no density
field); ``--loss oracle`` trains nothing and evaluates the photometric loss of exact density fields (the scene, the
scene without the car, the far plane, the scene with the input view's occluded space filled, and with its first 4 m
filled) on the preset's batches (``oracle_losses``). Results: docs/benchmarks.md, "Why the tiny model misses the
car" and "BTS's photometric loss prefers a filled shadow to the exact empty one".

    bts-studio synth-kitti360 /tmp/od/onecar --world one-car --frames 32 --scale 0.25
    python benchmarks/occluder_supervised_check.py --data /tmp/od/onecar --loss supervised --steps 300
    python benchmarks/occluder_supervised_check.py --data /tmp/od/onecar --loss photometric --steps 300
    python benchmarks/occluder_supervised_check.py --data /tmp/od/onecar --loss photometric --steps 400 --automask \\
        [--decoder-lr 1e-3 --mlp-lr 1e-3] [--no-fisheye] [--seed 1]

A trained run's weights (``--checkpoint``, of ``--preset``'s model) are loaded before training or scoring; with
``--loss oracle`` the trained field and two edits of it are scored beside the exact ones (``MODEL_FIELDS``: is the
trained model next to a better field behind the cars?). For a GPU run of ``benchmarks/gpu_occluders.sh`` (its
``WORK``), on that machine's CPU after training (one step takes ~30 s on 2 cores):

    python benchmarks/occluder_supervised_check.py --data $WORK/KITTI-360 --loss oracle --preset official \\
        --checkpoint $WORK/outputs/occluders/bts-density/run --height 192 --width 640 --num-samples 64 \\
        --steps 30 --rays 4096 --output-json oracle_model.json

CPU only; run with ``OMP_NUM_THREADS=1`` on a shared box.
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import torch  # noqa: E402

DEFAULT_INPUTS = (12, 14, 16, 18, 20)
"""Frame ids of the overfit set of run G (the car 6-14 m ahead), each with its l and r images."""


FRAME_GROUP_REACH = 11
"""Frames after an input frame that its group uses (the fisheyes at t+10 and t+11): a chosen input frame must have
them in its sequence, or the group's indices are clamped at the sequence's end."""


def frames_with_hidden_space(root: Path, count: int, sequence: str = "2013_05_28_drive_0000_sync") -> List[int]:
    """The ``count`` frame ids of ``sequence`` (ascending) whose left camera's exact-variant cuboid (``ExactGrid``)
    holds the most invisible empty points, the space IE_rec scores; each keeps ``FRAME_GROUP_REACH`` frames after
    it, and the chosen ones lie at least 3 frames apart (neighbours see nearly the same space). The default inputs
    (``DEFAULT_INPUTS``, chosen for the one-car world) can have none on the street world: there the hidden space
    of a batch may lie entirely outside the cuboid. Raises ValueError when fewer than ``count`` frames qualify."""
    from bts_studio.data.kitti360.rig import load_rig
    from bts_studio.data.synthetic.ground_truth import load_ground_truth_scene
    from bts_studio.eval.occupancy_exact import ExactGrid, exact_reference
    from bts_studio.eval.occupancy_protocol import Kitti360Calibration

    calibration = Kitti360Calibration(Path(root), sequence)
    scene = load_ground_truth_scene(root, sequence)
    height, width = 192, 640  # K scales with the size, so the frustum test (23 grid points outside) does not change
    K = torch.from_numpy(load_rig(Path(root), (height, width), 15.0, 0.0, False).K.copy())
    points = ExactGrid().points().reshape(-1, 3)
    usable = len(calibration.frame_ids) - FRAME_GROUP_REACH
    hidden = []
    for index in range(usable):
        c2w = torch.from_numpy(calibration.rectified_camera_to_world(index, 0))
        occupied, visible = exact_reference(scene, points, c2w, K, width, height)
        hidden.append(int((~visible & ~occupied).sum()))
    chosen: List[int] = []
    for index in sorted(range(usable), key=lambda index: -hidden[index]):  # most first, at least 3 frames apart
        if all(abs(index - other) >= 3 for other in chosen):
            chosen.append(index)
    if len(chosen) < count:
        raise ValueError(f"{root}: {sequence} has {len(chosen)} frames 3 apart with a full frame group, {count} asked")
    return sorted(int(calibration.frame_ids[index]) for index in chosen[:count])


def add_frame_arguments(parser: argparse.ArgumentParser) -> None:
    """``--frames`` or ``--hidden-frames`` (the scripts' shared choice of input frames; one of the two)."""
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--frames", type=int, nargs="+", default=list(DEFAULT_INPUTS), help="input frame ids")
    choice.add_argument(
        "--hidden-frames",
        type=int,
        default=None,
        help="instead of --frames, the N frames with the most hidden empty space in the scored cuboid "
        "(frames_with_hidden_space; the street world's default frames may have none)",
    )


def resolve_frames(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Replace ``args.frames`` by ``frames_with_hidden_space`` when ``--hidden-frames`` is given (``parser.error``
    for N < 1 or a sequence too short)."""
    if args.hidden_frames is None:
        return
    if args.hidden_frames < 1:
        parser.error(f"--hidden-frames must be positive, got {args.hidden_frames}")
    try:
        args.frames = frames_with_hidden_space(args.data, args.hidden_frames)
    except ValueError as error:
        parser.error(str(error))
    print(f"input frames with the most hidden empty space in the cuboid: {args.frames}", flush=True)


def split_file(frames, work: Path) -> Path:
    path = work / "fit_split.txt"
    seq = "2013_05_28_drive_0000_sync"
    path.write_text("".join(f"{seq} {k:010d} l\n{seq} {k:010d} r\n" for k in frames))
    return path


def build_pipeline(args, work: Path, checkpoint: Optional[Dict] = None):
    """The ``--preset`` pipeline (bts-density-tiny unless told) on the chosen inputs, every split = those inputs
    (train = test); with ``--checkpoint`` the trained run's weights are loaded into it."""
    from nerfstudio.scripts.train import _set_random_seed

    config = preset_config(args.preset)
    config.pipeline.datamanager.data = args.data
    dataparser = config.pipeline.datamanager.dataparser
    dataparser.target_height, dataparser.target_width = args.height, args.width
    dataparser.split_file = split_file(args.frames, work)
    dataparser.cache_dir = work / "cache"
    config.pipeline.datamanager.groups_per_batch = args.groups
    config.pipeline.datamanager.rays_per_group = args.rays
    config.pipeline.datamanager.num_workers = 0
    config.pipeline.datamanager.colour_jitter = not args.no_augment
    config.pipeline.model.flip_augmentation = not args.no_augment
    config.pipeline.model.search_torch_hub_cache = False
    config.pipeline.model.near = args.near
    if args.num_samples is not None:
        config.pipeline.model.num_samples = args.num_samples
    dataparser.use_fisheye = not args.no_fisheye
    config.pipeline.model.automask = args.automask
    # --decoder-lr trains the decoder in the model's own "decoder" group (the option ns-train exposes).
    config.pipeline.model.decoder_param_group = args.decoder_lr is not None
    config.machine.seed = args.seed
    _set_random_seed(args.seed)
    pipeline = config.pipeline.setup(device="cpu", test_mode="test", world_size=1, local_rank=0)
    if args.checkpoint is not None:  # main has read it already; a caller without it reads it here
        load_checkpoint(pipeline, checkpoint or read_checkpoint(args.checkpoint, args.near, samples_per_ray(args)))
    return pipeline


def preset_config(preset: str):
    """The trainer config of ``--preset``: bts-density (``official``) or bts-density-tiny."""
    from bts_studio.methods.bts.method_config import bts_density_config, bts_density_tiny_config

    return bts_density_config() if preset == "official" else bts_density_tiny_config()


def samples_per_ray(args) -> int:
    """The samples per ray the oracle's model renders with: ``--num-samples``, else the preset's."""
    return args.num_samples if args.num_samples is not None else preset_config(args.preset).pipeline.model.num_samples


def checkpoint_file(path: Path) -> Path:
    """A nerfstudio ``step-*.ckpt``, or the newest one in a run's ``nerfstudio_models`` folder (or the run folder
    above it); SystemExit naming the path when there is none."""
    if path.is_file():
        return path
    for folder in (path, path / "nerfstudio_models"):
        found = sorted(folder.glob("step-*.ckpt")) if folder.is_dir() else []
        if found:
            return found[-1]
    raise SystemExit(f"--checkpoint {path}: expected a step-*.ckpt file or a folder holding one (nerfstudio_models)")


def read_checkpoint(path: Path, near: float, num_samples: int) -> Dict:
    """The model weights of a nerfstudio checkpoint (``_model.`` keys, ``module.`` stripped) and its step. Refuses,
    naming the file, anything that is not a nerfstudio checkpoint, and a run whose config.yml (beside
    ``nerfstudio_models``) sampled rays otherwise than ``--near`` / ``--num-samples`` (the oracle would score
    another field than the one trained)."""
    import pickle
    import zipfile

    file = checkpoint_file(path)
    try:
        state = torch.load(file, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, ValueError) as error:
        raise SystemExit(f"--checkpoint {file}: not a torch checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict) or not isinstance(state.get("pipeline"), dict):
        raise SystemExit(f"--checkpoint {file}: not a nerfstudio checkpoint (no 'pipeline' state dict)")
    weights = {}
    for key, value in state["pipeline"].items():
        key = key[len("module.") :] if key.startswith("module.") else key
        if key.startswith("_model."):
            weights[key[len("_model.") :]] = value
    if not weights:
        raise SystemExit(f"--checkpoint {file}: its pipeline state has no model weights ('_model.' keys)")
    config_path = file.parent.parent / "config.yml"
    if config_path.is_file():
        import yaml

        trained = yaml.load(config_path.read_text(), Loader=yaml.Loader).pipeline.model
        asked = {"near": near, "num_samples": num_samples}
        differ = {k: (getattr(trained, k), v) for k, v in asked.items() if getattr(trained, k) != v}
        if differ:
            told = ", ".join(f"{k} {a} (asked {b})" for k, (a, b) in differ.items())
            raise SystemExit(f"--checkpoint {file}: its run ({config_path}) trained with {told}; pass the run's values")
    return {"file": file, "weights": weights, "step": state.get("step", 0)}


def load_checkpoint(pipeline, checkpoint: Dict) -> None:
    """Load :func:`read_checkpoint`'s weights into the model, strictly: nerfstudio's own ``load_pipeline`` falls back
    to a non-strict load and would score a half-initialised model in silence."""
    file = checkpoint["file"]
    try:
        result = pipeline.model.load_state_dict(checkpoint["weights"], strict=False)
    except RuntimeError as error:  # shapes differ: PyTorch lists every one; the first says enough
        details = str(error).splitlines()
        shown = next((line.strip() for line in details[1:] if line.strip()), details[0])
        raise SystemExit(
            f"--checkpoint {file} does not fit --preset's model ({shown} ...); pass the run's --preset"
        ) from None
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise SystemExit(
            f"--checkpoint {file} does not fit --preset's model: {len(missing)} missing and {len(unexpected)} "
            f"unexpected keys (first: {first}); pass the run's --preset"
        )
    pipeline.model.update_to_step(checkpoint["step"])
    print(f"loaded {file} (step {checkpoint['step']})", flush=True)


def param_groups(model) -> Dict[str, List[torch.nn.Parameter]]:
    """ResNet, decoder and density MLP: the model's groups with ``decoder_param_group`` (``encoder`` = the ResNet);
    without it the decoder is split out of ``encoder`` here, for its gradient norm and ``--lr`` alone."""
    if model.config.decoder_param_group:
        groups = model.get_param_groups()
        return {"resnet": groups["encoder"], "decoder": groups["decoder"], "density_mlp": groups["density_mlp"]}
    net = model.net
    return {
        "resnet": list(net.encoder.encoder.parameters()),
        "decoder": list(net.encoder.decoder.parameters()),
        "density_mlp": list(net.mlp_coarse.parameters()),
    }


class GroundTruth:
    """Exact z-depth of the chosen train images at the training resolution (nearest pixel centre) and car masks."""

    def __init__(self, pipeline, height: int, width: int, calibration) -> None:
        from bts_studio.data.synthetic.ground_truth import load_ground_truth_depth, load_ground_truth_scene
        from bts_studio.eval.kitti360_run import data_root, eval_images

        self.images = eval_images(pipeline, "train")
        root = data_root(pipeline, "train")
        self.scene = load_ground_truth_scene(root, self.images[0].sequence)
        depths = []
        for image in self.images:
            full = torch.from_numpy(load_ground_truth_depth(root, image.sequence, image.camera_id, image.frame_id))
            rows = ((torch.arange(height) + 0.5) * full.shape[0] / height).long().clamp_max(full.shape[0] - 1)
            cols = ((torch.arange(width) + 0.5) * full.shape[1] / width).long().clamp_max(full.shape[1] - 1)
            depths.append(full[rows][:, cols].float())
        self.depth = torch.stack(depths)  # [N, H, W], inf = sky
        self.car = torch.stack([self._car_mask(pipeline, image, calibration) for image in self.images])

    def _car_mask(self, pipeline, image, calibration) -> torch.Tensor:
        """Pixels whose exact first hit (a raycast through the pixel centre) is a primitive labelled car."""
        from bts_studio.methods.common.cameras import cameras_to_opencv

        camera = pipeline.datamanager.train_dataset.cameras[image.index : image.index + 1]
        K, _ = cameras_to_opencv(camera)
        height, width = self.depth.shape[-2:]
        rows, cols = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
        pixels = torch.stack([cols, rows, torch.ones_like(rows)], dim=-1).reshape(-1, 3).double()
        c2w = torch.from_numpy(calibration.rectified_camera_to_world(image.pose_index, image.camera_id))
        directions = pixels @ torch.linalg.inv(K[0].double()).T @ c2w[:3, :3].T
        hits = self.scene.raycast(c2w[:3, 3], directions)
        labels = np.array(self.scene.labels + ["none"])
        hit_labels = labels[hits.primitive_id.numpy()]
        return torch.from_numpy(hit_labels == "car").reshape(height, width)


def rays_of(pipeline, index: int):
    from bts_studio.methods.common.cameras import camera_rays

    camera = pipeline.datamanager.train_dataset.cameras[index : index + 1]
    return camera_rays(camera)


def supervised_step(
    pipeline, gt: GroundTruth, generator: torch.Generator, groups: int, rays: int, near, far, direct_head=None
):
    """Render ``rays`` random pixels of ``groups`` random inputs conditioned on themselves; L1 on inverse z-depth."""
    from bts_studio.methods.bts.conditioning import BTSConditioning
    from bts_studio.methods.common.cameras import cameras_to_opencv

    model = pipeline.model
    dataset = pipeline.datamanager.train_dataset
    picks = torch.randperm(len(gt.images), generator=generator)[:groups].tolist()
    images, Ks, w2cs, origins, directions, norms, targets, pixel_ids = [], [], [], [], [], [], [], []
    for pick in picks:
        index = gt.images[pick].index
        image = dataset.get_image_float32(index)[..., :3].permute(2, 0, 1)
        K, c2w = cameras_to_opencv(dataset.cameras[index : index + 1])
        w2c = torch.linalg.inv(c2w[0])[:3]
        r = rays_of(pipeline, index)
        height, width = r.origins.shape[:2]
        pixels = torch.randint(0, height * width, (rays,), generator=generator)
        origins.append(r.origins.reshape(-1, 3)[pixels])
        directions.append(r.directions.reshape(-1, 3)[pixels])
        norms.append(r.directions_norm.reshape(-1, 1)[pixels])
        targets.append(gt.depth[pick].reshape(-1)[pixels])
        pixel_ids.append(pixels)
        images.append(image)
        Ks.append(K[0])
        w2cs.append(w2c)
    images_t = torch.stack(images)
    K_t, w2c_t = torch.stack(Ks), torch.stack(w2cs)
    conditioning = BTSConditioning(
        features=model.net.encode(images_t),
        source_K=K_t,
        source_w2c=w2c_t,
        colour_images=images_t[:, None],
        colour_K=K_t[:, None],
        colour_w2c=w2c_t[:, None],
    )
    if direct_head is None:
        outputs = model.render_ray_tensors(
            torch.stack(origins), torch.stack(directions), conditioning, torch.stack(norms)
        )
        z_pred = outputs["z_depth"][..., 0]
    else:
        # The control: the same encoder features read at the same pixels, a 1x1 conv to a disparity in
        # (near/far, 1) (Monodepth2's sigmoid head), no density field, no volume rendering.
        height, width = images_t.shape[-2:]
        disparity = torch.sigmoid(direct_head(conditioning.features)).flatten(1)  # [G, H * W]
        z_pred = near / (near / far + (1 - near / far) * disparity.gather(1, torch.stack(pixel_ids)))
    z_true = torch.stack(targets).clamp(near, far)  # sky (inf) -> far: the forced last sample
    return (near / z_pred - near / z_true).abs().mean()


@torch.no_grad()
def evaluate(pipeline, gt: GroundTruth, calibration, direct_head=None) -> Dict[str, float]:
    from bts_studio.eval.density_field import depth_plus_band_field
    from bts_studio.eval.kitti360_run import model_field
    from bts_studio.eval.occupancy_exact import evaluate_exact_frames

    model = pipeline.model
    model.eval()
    model.forget_sources()
    depths, features, per_image, baseline, car_sigmas = [], [], [], [], []
    for image in gt.images:
        field_, _ = model_field(pipeline, "train", image)
        depths.append(field_.depth)
        features.append(model.source_view("train", image.index).features)
        car_sigmas.append(density_inside_car(model, model.source_view("train", image.index), gt, len(car_sigmas)))
        c2w = torch.from_numpy(calibration.rectified_camera_to_world(image.pose_index, image.camera_id))
        frames = evaluate_exact_frames({"m": field_, "d4": depth_plus_band_field(field_)}, gt.scene, c2w)
        per_image.append(frames["m"].metrics)
        baseline.append(frames["d4"].metrics)
    depth_bn_batch = depths_with_batch_statistics(pipeline, gt)
    if direct_head is not None:  # the control's depth maps replace the (untrained) field's
        near, far = model.config.near, model.config.far
        disparity = torch.sigmoid(direct_head(torch.stack(features)))[:, 0]
        depths = list(near / (near / far + (1 - near / far) * disparity))
    model.train()
    model.forget_sources()
    depth = torch.stack(depths)
    feats = torch.stack(features)  # [N, C, H, W]
    true = gt.depth.clamp(max=80.0)
    valid = torch.isfinite(gt.depth)
    car = gt.car
    absrel = ((depth - true).abs() / true)[valid].mean()
    car_absrel = ((depth - true).abs() / true)[car].mean() if car.any() else torch.tensor(float("nan"))

    def mean_of(key, rows=per_image):
        values = [m[key] for m in rows if m.get(key) is not None and np.isfinite(m[key])]
        return float(np.mean(values)) if values else float("nan")

    return {
        "car_depth_true": float(true[car].mean()) if car.any() else float("nan"),
        "car_depth_pred": float(depth[car].mean()) if car.any() else float("nan"),
        "car_absrel_bn_batch": float(((depth_bn_batch - true).abs() / true)[car].mean()),
        "depth_spread_bn_batch": float(depth_bn_batch.std(dim=0).mean()),
        "car_sigma_median": float(torch.cat(car_sigmas).median()),
        "car_sigma_above_half": float((torch.cat(car_sigmas) > 0.5).float().mean()),
        "depth_spread": float(depth.std(dim=0).mean()),
        "gt_depth_spread": float(true.std(dim=0).mean()),
        "feature_image_over_pixel_std": float(feats.std(dim=0).mean() / feats.std(dim=(2, 3)).mean()),
        "absrel": float(absrel),
        "car_absrel": float(car_absrel),
        # The same error for the mean of the ten depth maps (one input-independent picture): close to car_absrel
        # means the car's depth comes from a prior shared by all inputs, not from each input image.
        "car_absrel_mean_map": float(((depth.mean(dim=0, keepdim=True) - true).abs() / true)[car].mean()),
        "mean_depth": float(depth.mean()),
        "O_rec": mean_of("o_rec"),
        "IE_rec": mean_of("ie_rec"),
        "IE_acc": mean_of("ie_acc"),
        "depth4m_O_rec": mean_of("o_rec", baseline),
        "depth4m_IE_rec": mean_of("ie_rec", baseline),
    }


@torch.no_grad()
def density_inside_car(model, source, gt: GroundTruth, i: int, inside: float = 0.5) -> torch.Tensor:
    """Density at points ``inside`` metres behind the car's visible surface along its pixels' rays (car pixels of
    image ``i``): what the occupancy threshold (density > 0.5) reads there."""
    from bts_studio.methods.bts.inference import density_in_camera

    rows, cols = torch.nonzero(gt.car[i], as_tuple=True)
    if rows.numel() == 0:
        return torch.zeros(0)
    z = gt.depth[i][rows, cols]
    pixels = torch.stack([cols + 0.5, rows + 0.5, torch.ones_like(z)], dim=-1)
    rays = pixels @ torch.linalg.inv(source.K.cpu().float()).T  # z = 1
    points = rays * (z + inside / rays.norm(dim=-1))[:, None]  # ``inside`` metres further along the ray
    return density_in_camera(model, source, points).cpu()


@torch.no_grad()
def depths_with_batch_statistics(pipeline, gt: GroundTruth) -> torch.Tensor:
    """Depth maps of all inputs encoded as one batch with BatchNorm in train mode (batch statistics, as in a training
    step), BatchNorm's running statistics left untouched: does eval mode's use of running statistics hide an
    input dependence the training forward has?"""
    from bts_studio.methods.bts.inference import depth_map
    from bts_studio.methods.bts.sources import SourceView

    model = pipeline.model
    bank = model._source_bank
    inputs = [bank.view_inputs("train", image.index) for image in gt.images]
    buffers = {k: v.clone() for k, v in model.net.encoder.state_dict().items() if "running" in k or "num_batches" in k}
    model.net.train()
    features = model.net.encode(torch.stack([image for image, _, _ in inputs]))
    model.net.encoder.load_state_dict(buffers, strict=False)
    model.net.eval()
    depths = []
    for (image, K, c2w), feature in zip(inputs, features, strict=True):
        source = SourceView(feature, image, K, c2w, int(image.shape[-2]), int(image.shape[-1]))
        depths.append(depth_map(model, source))
    return torch.stack(depths)


def world_transform(pipeline, gt: GroundTruth, calibration) -> torch.Tensor:
    """``[4, 4]`` float64 map from the nerfstudio world of the pipeline to KITTI-360's world (where the scene lives)."""
    from bts_studio.methods.common.cameras import cameras_to_opencv

    transforms = []
    for image in gt.images:
        _, c2w_ns = cameras_to_opencv(pipeline.datamanager.train_dataset.cameras[image.index : image.index + 1])
        c2w_kitti = torch.from_numpy(calibration.rectified_camera_to_world(image.pose_index, image.camera_id))
        transforms.append(c2w_kitti @ torch.linalg.inv(c2w_ns[0].double()))
    spread = max(float((t - transforms[0]).abs().max()) for t in transforms)
    assert spread < 1e-3, f"the nerfstudio -> KITTI-360 world map differs between images by {spread}"
    return transforms[0]


def image_cameras(pipeline) -> List[int]:
    """KITTI-360's camera of each training image, by index (0/1: the perspective pair, 2/3: the fisheyes)."""
    filenames = pipeline.datamanager.train_dataset._dataparser_outputs.image_filenames
    return [next(c for c in range(4) if f"image_0{c}" in Path(f).parts) for f in filenames]


def kitti_points(points: torch.Tensor, to_kitti: torch.Tensor) -> torch.Tensor:
    """``[..., 3]`` model-frame points -> ``[M, 3]`` float64 points in the generator's KITTI frame (``to_kitti``:
    ``world_transform``'s 4x4)."""
    flat = points.reshape(-1, 3).double()
    return flat @ to_kitti[:3, :3].T + to_kitti[:3, 3]


def camera_centres(w2c: torch.Tensor, to_kitti: torch.Tensor) -> torch.Tensor:
    """``[M, 3]`` float64 KITTI-frame centres of the cameras ``w2c`` ``[..., 3, 4]`` (model frame), flattened."""
    from bts_studio.core.geometry import invert_pose

    return kitti_points(invert_pose(w2c.double())[..., :3, 3], to_kitti)


def behind_input_surface(scene, to_kitti: torch.Tensor, points: torch.Tensor, w2c: torch.Tensor) -> torch.Tensor:
    """``[B, N]`` metres by which each point of ``points`` ``[B, N, 3]`` (model frame) lies behind the first surface
    of the exact ``scene`` on its line of sight from batch element b's input camera (``w2c`` ``[B, 3, 4]``, OpenCV;
    negative: in front of it; -inf: nothing on the line of sight). > 0 is the input view's occluded space."""
    centres = camera_centres(w2c, to_kitti)  # [B, 3]
    out = torch.empty(points.shape[:2], dtype=torch.float64)
    for b in range(points.shape[0]):
        sight = kitti_points(points[b], to_kitti) - centres[b]  # [N, 3]
        t = scene.raycast(centres[b], sight).t.double()  # in units of `sight`: < 1 is before the point
        out[b] = torch.where(torch.isfinite(t), (1.0 - t) * sight.norm(dim=-1), torch.full_like(t, -np.inf))
    return out


def hidden_in_views(
    scene,
    to_kitti: torch.Tensor,
    points: torch.Tensor,
    w2c: torch.Tensor,
    visibility_margin: float,
    spacing: float,
    margin_scale: float = 1.5,
) -> torch.Tensor:
    """``[B, N, V]``: the exact ``scene`` hides point n of ``points`` ``[B, N, 3]`` (model frame) from render view v
    of ``w2c`` ``[B, V, 3, 4]``: a hit more than ``visibility_margin`` metres plus ``margin_scale`` sample intervals
    before it (``spacing``: the disparity step (1/near - 1/far) / (S - 1), 1/m)."""
    centres = camera_centres(w2c, to_kitti).reshape(*w2c.shape[:2], 3)
    out = torch.zeros(*points.shape[:2], w2c.shape[1], dtype=torch.bool)
    for b in range(points.shape[0]):
        flat = kitti_points(points[b], to_kitti)
        for v in range(w2c.shape[1]):
            sight = flat - centres[b, v]
            length = sight.norm(dim=-1)
            t = scene.raycast(centres[b, v], sight).t.double()
            # A field's surface sample lies up to one sample interval inside the solid (disparity-linear samples:
            # d^2 (1/near - 1/far) / (S - 1) at distance d along the loss ray); the distance from the render camera
            # stands in for that one (a proxy: the cameras are metres apart).
            margin = visibility_margin + margin_scale * length**2 * spacing
            out[b, :, v] = torch.isfinite(t) & ((1.0 - t) * length > margin)
    return out


def disparity_spacing(config) -> float:
    """The disparity step between a ray's samples, (1/near - 1/far) / (S - 1), 1/m, of a ``BTSModelConfig``
    (BTS's sampler is linear in disparity)."""
    return (1.0 / config.near - 1.0 / config.far) / (config.num_samples - 1)


def with_visibility_test(lookup, scene, to_kitti: torch.Tensor, visibility_margin: float, spacing: float):
    """``lookup`` (``rendering.sample_view_colours``'s signature and outputs) with every sample that the exact
    ``scene`` hides from a render view (``hidden_in_views``) also marked invalid in that view: the upper bound of a
    visibility test, which BTS's colour lookup does not have."""

    def colours(images, points, K, w2c):
        found, invalid = lookup(images, points, K, w2c)
        hidden = hidden_in_views(scene, to_kitti, points.detach(), w2c.detach(), visibility_margin, spacing)
        return found, invalid | hidden.to(invalid.device)

    return colours


FIELDS = ("exact", "no_car", "far", "filled", "plus4m")
"""The oracle's density fields (``oracle_losses``)."""
MODEL_FIELDS = ("model", "model_hidden_exact", "model_hidden_filled")
"""With ``--checkpoint``, the trained model's own field, and that field with the space hidden from the batch's input
camera (behind its first surface in the exact scene) replaced by the exact occupancy or by solid: does emptying the
shadow lower the loss at the trained model (then training has not found a better field it is next to), or raise it
(then the filling pays, given the model's other errors)?"""
FISHEYE_WEIGHTS = (1.0, 2.0, 3.0, 4.0)
"""Fisheye loss weights whose weighted objective the oracle reports (issue 18: would a weight make the exact field
the loss's optimum behind the car?)."""


@torch.no_grad()
def oracle_losses(
    pipeline,
    gt: GroundTruth,
    calibration,
    steps: int,
    visibility: bool = False,
    visibility_margin: float = 0.5,
    trained: bool = False,
) -> Dict[str, float]:
    """Is the car's depth in the photometric signal? The preset's own loss (``get_train_loss_dict``: same batches,
    same render frames, same min-over-views SSIM + L1) with the density field replaced by exact ones: ``exact``
    (1e3 inside any solid of the scene, 0 outside), ``no_car`` (the same scene without the car: the best a field
    that ignores the car can do), ``far`` (density 0: every ray ends at the forced last sample), ``filled`` (the
    scene plus everything behind the first surface seen from the batch's input camera: what a field that fills the
    occluded space renders) and ``plus4m`` (the scene plus the first 4 m behind those surfaces: Depth + 4 m's
    field). Per-patch losses
    (the loss function on one patch at a time), averaged over patches whose loss-frame rays hit the car (>= half of
    the patch's pixels) and over all patches. A signal exists where ``exact`` is clearly below ``no_car``.

    Two changes to BTS's rule are scored beside it (issue 18: would either make the exact field the optimum?):
    ``valid_views_*`` keys take each pixel's minimum only over the render views whose invalid weight mass is under
    the threshold (BTS lets a view whose samples fall outside its image compete with border colours, and discards
    a pixel only when every view is invalid); ``visibility`` marks a sample invalid in a render view that sees it
    occluded in the exact scene (hit more than ``visibility_margin`` metres plus 1.5 sample intervals before it: the
    upper bound of a visibility test, which BTS's ``sample_colors`` does not have), for both rules. The error over
    the kept pixels only (``*_kept_pixel_error``) and the share discarded are reported for each field.

    ``trained`` (a checkpoint was loaded) adds ``MODEL_FIELDS``: the model's own field and two edits of it, and,
    over the shadowed patches whose loss the exact edit changes, per loss camera (all, perspective, fisheye), the
    share where it lowers the trained model's loss (``model_hidden_exact_better_share_*``) and the mean decrease
    (``model_hidden_exact_gain_*``, positive: emptying helps). The model is scored as it trains (train mode: the
    encoder's BatchNorm uses the batch's statistics; the forward passes also move the running statistics, which
    nothing here reads). With ``visibility`` the colour test applies to the model fields too, so ``model`` is then
    no longer the model's own loss."""
    from bts_studio.data.synthetic.primitives import Scene
    from bts_studio.methods.bts import rendering
    from bts_studio.methods.bts.losses import (
        discarded_pixels,
        invalid_views,
        min_view_errors,
        min_view_photometric_loss,
        photometric_loss_from_errors,
        pixels_without_valid_view,
    )

    model = pipeline.model
    net = model.net
    original = net.density
    to_kitti = world_transform(pipeline, gt, calibration)
    scenes = {
        "exact": gt.scene,
        "no_car": Scene(
            [p for p in gt.scene.primitives if p.label != "car"], origin=tuple(float(v) for v in gt.scene.origin)
        ),
    }
    labels = np.array(gt.scene.labels + ["none"])

    def kitti(points: torch.Tensor) -> torch.Tensor:
        return kitti_points(points, to_kitti)

    def behind_first_surface(points: torch.Tensor, w2c: torch.Tensor) -> torch.Tensor:
        return behind_input_surface(gt.scene, to_kitti, points, w2c)

    sample_view_colours = rendering.sample_view_colours
    spacing = disparity_spacing(model.config)

    def occluded_in_views(points: torch.Tensor, w2c: torch.Tensor, margin_scale: float = 1.5) -> torch.Tensor:
        return hidden_in_views(gt.scene, to_kitti, points, w2c, visibility_margin, spacing, margin_scale)

    colours_with_visibility = with_visibility_test(sample_view_colours, gt.scene, to_kitti, visibility_margin, spacing)

    def per_patch(view_missing, loss, *per_patch_args) -> torch.Tensor:
        """``[P]``: ``loss`` (one of the model's loss functions) on one patch at a time."""
        one = [slice(i, i + 1) for i in range(per_patch_args[0].shape[0])]
        missing = [None if view_missing is None else view_missing[i] for i in one]
        return torch.stack([loss(*(a[i] for a in per_patch_args), m) for i, m in zip(one, missing, strict=True)])

    def valid_view_losses(rendered, target, discard, masses, view_missing) -> torch.Tensor:
        """``[P]``: the loss of ``--pipeline.model.valid-view-minimum True``, one patch at a time."""
        invalid = invalid_views(masses, model.config.invalid_threshold)
        return per_patch(
            view_missing,
            lambda r, t, d, v, m: min_view_photometric_loss(r, t, d, m, v),
            rendered,
            target,
            discard,
            invalid,
        )

    def best_over_seeing_views(rendered, target, batch, hits, views, view_missing) -> torch.Tensor:
        """``[P, h, w]``: per pixel, the minimum error over the render views that see the pixel's true surface
        point (nan where none does): what an exact visibility test in the minimum would give the exact field."""
        p, v, _, h, w = rendered.shape
        directions = batch.rays.directions.reshape(-1, 3).double() @ to_kitti[:3, :3].T
        surface = kitti(batch.rays.origins) + directions * hits.t.double()[:, None]  # [G * R, 3], KITTI frame
        w2c = views["w2c"]
        groups = w2c.shape[0]
        surface_model = (surface - to_kitti[:3, 3]) @ torch.linalg.inv(to_kitti[:3, :3]).T  # back to model frame
        surface_model = surface_model.reshape(groups, -1, 3).to(w2c.dtype)
        _, outside = sample_view_colours(views["images"], surface_model, views["K"], w2c)  # behind or off-image
        seen = ~occluded_in_views(surface_model, w2c, margin_scale=0.0) & ~outside.cpu()
        seen = seen & torch.isfinite(hits.t).reshape(groups, -1, 1)
        # rays of a group are its patches' pixels in _patches' order: [G, P/G * h * w] -> [P, h, w, V]
        seen = seen.reshape(p, h, w, v).permute(0, 3, 1, 2)
        best = min_view_errors(rendered, target, view_missing, view_invalid=~seen)  # the loss's own minimum
        return best.masked_fill(pixels_without_valid_view(~seen, view_missing), float("nan"))

    colour_views: Dict[str, torch.Tensor] = {}

    def stash_views(images, points, K, w2c):
        """Keep the render views' poses (for the per-pixel diagnosis below) and sample as configured."""
        colour_views.update(images=images, K=K, w2c=w2c)
        return (colours_with_visibility if visibility else sample_view_colours)(images, points, K, w2c)

    rendering.sample_view_colours = stash_views
    fields = FIELDS + (MODEL_FIELDS if trained else ())
    results: Dict[str, List[float]] = {}
    per_step: Dict[str, List[torch.Tensor]] = {}
    cameras = image_cameras(pipeline)
    try:  # the patched density and colour sampling are put back whatever happens
        for step in range(steps):
            seed_state = torch.get_rng_state()
            for name in fields:
                torch.set_rng_state(seed_state)  # the same batch and flip draw for every field

                def density(points, features, K, w2c, name=name):
                    sigma, outside = original(points, features, K, w2c)
                    if name == "far":
                        return torch.zeros_like(sigma), outside
                    if name == "model":
                        return sigma, outside
                    if name.startswith("model_hidden_"):
                        hidden = (behind_first_surface(points, w2c) > 0).reshape(sigma.shape).to(sigma.device)
                        solid = torch.ones_like(hidden)
                        if name == "model_hidden_exact":
                            solid = scenes["exact"].occupied(kitti(points)).reshape(sigma.shape).to(sigma.device)
                        return torch.where(hidden, solid.to(sigma.dtype) * 1e3, sigma), outside
                    occupied = (
                        scenes["no_car" if name == "no_car" else "exact"].occupied(kitti(points)).reshape(sigma.shape)
                    )
                    if name in ("filled", "plus4m"):  # everything, or the first 4 m, behind the input view's surfaces
                        behind = behind_first_surface(points, w2c)
                        occupied = occupied | ((behind > 0) & (behind < (4.0 if name == "plus4m" else np.inf)))
                    return occupied.to(sigma.dtype) * 1e3, outside

                net.density = density
                _, batch = pipeline.datamanager.next_train(step)
                outputs = model(batch)
                rendered, target, masses, depth, view_missing = model._patches(outputs, batch)
                discard = discarded_pixels(masses, model.config.invalid_threshold)
                per_step.setdefault(f"depth_{name}", []).append(depth)
                per_step.setdefault(f"discard_{name}", []).append(discard)
                # BTS's loss per patch from the per-pixel minimum (min_view_photometric_loss's own two steps,
                # the minimum taken once: the kept-pixel error below reads it too).
                best = min_view_errors(rendered, target, view_missing)
                per_patch_loss = per_patch(view_missing, photometric_loss_from_errors, best, discard)
                per_patch_valid = valid_view_losses(rendered, target, discard, masses, view_missing)
                per_step.setdefault(f"valid_views_{name}", []).append(per_patch_valid)
                # The error over the kept pixels only, and the share discarded: BTS counts a discarded pixel as 0 in
                # the mean, so a field can lower its loss by making samples invalid (the far plane does, below).
                per_step.setdefault(f"kept_error_{name}", []).append((best * (~discard)).sum().reshape(1))
                per_step.setdefault(f"kept_pixels_{name}", []).append((~discard).sum().reshape(1).to(best.dtype))
                per_step.setdefault(f"best_{name}", []).append(best)
                if name == fields[0]:  # the loss rays are the same for every field (same batch): cast them once
                    hits = gt.scene.raycast(
                        kitti(batch.rays.origins), batch.rays.directions.reshape(-1, 3).double() @ to_kitti[:3, :3].T
                    )
                    car = torch.from_numpy(labels[hits.primitive_id.numpy()] == "car").reshape(best.shape[0], -1)
                    car_patch = car.float().mean(dim=1) >= 0.5
                    # Hit distance along the unit ray: a car closer than the near plane (the fisheyes beside parked
                    # cars) cannot be represented by any field sampled from `near` on.
                    distance = hits.t.float().reshape(best.shape[0], -1).median(dim=1).values
                    before_near = distance < model.config.near
                if name == "exact":  # each pixel's true surface point: which render views see it, and their errors
                    per_step.setdefault("visible_best_exact", []).append(
                        best_over_seeing_views(rendered, target, batch, hits, colour_views, view_missing)
                    )
                per_step.setdefault(name, []).append(per_patch_loss)
                if name == "exact":  # the loss frame's camera of each patch (image_00/01 perspective, 02/03 fisheye)
                    first_ray = batch.rays.camera_indices.reshape(best.shape[0], -1)[:, 0].tolist()
                    per_step.setdefault("camera", []).append(torch.tensor([cameras[i] for i in first_ray]))
                results.setdefault(f"{name}_all", []).extend(per_patch_loss.tolist())
                results.setdefault(f"{name}_car", []).extend(per_patch_loss[car_patch].tolist())
                results.setdefault(f"{name}_car_beyond_near", []).extend(
                    per_patch_loss[car_patch & ~before_near].tolist()
                )
                results.setdefault(f"{name}_car_before_near", []).extend(
                    per_patch_loss[car_patch & before_near].tolist()
                )
    finally:
        net.density = original
        rendering.sample_view_colours = sample_view_colours
    # The patches whose loss the input view's occluded space changes (filled != exact): there, does the loss prefer
    # the exact (empty) space behind the surfaces over a filled one, and over Depth + 4 m's?
    exact, filled = torch.cat(per_step["exact"]), torch.cat(per_step["filled"])
    shadowed = (filled - exact).abs() > 1e-7
    for name in fields:
        results[f"{name}_shadowed"] = torch.cat(per_step[name])[shadowed].tolist()
    summary = {key: float(np.mean(values)) if values else float("nan") for key, values in results.items()}
    summary["shadowed_patches"] = float(shadowed.sum())
    summary["filled_worse_than_exact_share"] = float((filled[shadowed] > exact[shadowed]).float().mean())
    camera = torch.cat(per_step["camera"])
    for label, chosen in (("perspective", camera < 2), ("fisheye", camera >= 2)):
        mask = shadowed & chosen
        summary[f"shadowed_patches_{label}"] = float(mask.sum())
        if mask.any():
            summary[f"exact_shadowed_{label}"] = float(exact[mask].mean())
            summary[f"filled_shadowed_{label}"] = float(filled[mask].mean())
            summary[f"filled_worse_than_exact_share_{label}"] = float((filled[mask] > exact[mask]).float().mean())
    # A fisheye loss weight w (each fisheye loss frame's patch counted w times): which field does the weighted
    # objective prefer, over all patches and over the shadowed ones?
    for weight in FISHEYE_WEIGHTS:
        w = torch.where(camera >= 2, float(weight), 1.0).to(exact.dtype)
        for name in fields:
            values = torch.cat(per_step[name])
            summary[f"w{weight:g}_{name}_all"] = float((w * values).sum() / w.sum())
            summary[f"w{weight:g}_{name}_shadowed"] = float((w * values)[shadowed].sum() / w[shadowed].sum())
    # The valid-views rule on the same batches: its optimum over all patches and over the shadowed ones (the
    # patches BTS's rule calls shadowed; the rule changes no density, so the set is the same).
    for name in fields:
        values = torch.cat(per_step[f"valid_views_{name}"])
        summary[f"valid_views_{name}_all"] = float(values.mean())
        summary[f"valid_views_{name}_shadowed"] = float(values[shadowed].mean())
    valid_exact, valid_filled = torch.cat(per_step["valid_views_exact"]), torch.cat(per_step["valid_views_filled"])
    summary["valid_views_filled_worse_than_exact_share"] = float(
        (valid_filled[shadowed] > valid_exact[shadowed]).float().mean()
    )
    pixels = float(sum(int(t.numel()) for t in per_step["discard_exact"]))  # every field's batches have these
    for name in fields:
        kept = float(torch.cat(per_step[f"kept_pixels_{name}"]).sum())
        summary[f"{name}_kept_pixel_error"] = float(torch.cat(per_step[f"kept_error_{name}"]).sum()) / max(kept, 1.0)
        summary[f"{name}_discarded_share"] = 1.0 - kept / pixels
        # The same on the shadowed patches: does a field win there by its colours or by the pixels it discards?
        best, keep = torch.cat(per_step[f"best_{name}"])[shadowed], ~torch.cat(per_step[f"discard_{name}"])[shadowed]
        if keep.numel():
            summary[f"{name}_shadowed_kept_pixel_error"] = float((best * keep).sum() / keep.sum().clamp_min(1))
            summary[f"{name}_shadowed_discarded_share"] = 1.0 - float(keep.float().mean())
    # Per pixel, where the exact and the filled fields end a ray at different depths (> 0.5 m) and neither
    # discards it: BTS's minimum for both fields, and the exact field's minimum over the views that truly see
    # the pixel's surface (where one does).
    depth_exact, depth_filled = torch.cat(per_step["depth_exact"]), torch.cat(per_step["depth_filled"])
    kept = ~torch.cat(per_step["discard_exact"]) & ~torch.cat(per_step["discard_filled"])
    differ = ((depth_exact - depth_filled).abs() > 0.5) & kept
    best_exact, best_filled = torch.cat(per_step["best_exact"]), torch.cat(per_step["best_filled"])
    visible_best = torch.cat(per_step["visible_best_exact"])
    seen = differ & torch.isfinite(visible_best)
    summary["differing_pixels"] = float(differ.sum())
    summary["differing_pixels_surface_seen_share"] = float(seen.sum()) / max(float(differ.sum()), 1.0)
    if differ.any():
        summary["differing_exact_depth_median"] = float(depth_exact[differ].median())
        summary["differing_filled_depth_median"] = float(depth_filled[differ].median())
    for label, mask in (("all", differ), ("seen", seen), ("unseen", differ & ~seen)):
        if mask.any():
            summary[f"differing_{label}_exact_error"] = float(best_exact[mask].mean())
            summary[f"differing_{label}_filled_error"] = float(best_filled[mask].mean())
            summary[f"differing_{label}_filled_better_share"] = float(
                (best_filled[mask] < best_exact[mask]).float().mean()
            )
    if seen.any():
        summary["differing_seen_exact_error_seeing_views"] = float(visible_best[seen].mean())
    if trained:  # at the trained model: would the exact hidden space lower its loss where the shadow matters?
        own, emptied = torch.cat(per_step["model"]), torch.cat(per_step["model_hidden_exact"])
        changed = shadowed & ((emptied - own).abs() > 1e-7)  # an opaque model in front: the edit changes nothing
        summary["model_hidden_changed_patches"] = float(changed.sum())
        for label, chosen in (("all", torch.ones_like(changed)), ("perspective", camera < 2), ("fisheye", camera >= 2)):
            mask = changed & chosen
            if mask.any():  # the fisheye and perspective loss frames pull opposite ways in the exact oracle
                summary[f"model_hidden_exact_better_share_{label}"] = float((emptied[mask] < own[mask]).float().mean())
                summary[f"model_hidden_exact_gain_{label}"] = float((own[mask] - emptied[mask]).mean())
    summary["visibility"] = float(visibility)
    summary["car_patches"] = float(len(results.get("exact_car", [])))
    summary["car_patches_before_near"] = float(len(results.get("exact_car_before_near", [])))
    summary["patches"] = float(len(results["exact_all"]))
    return summary


def add_visibility_arguments(parser: argparse.ArgumentParser) -> None:
    """``--visibility`` and ``--visibility-margin`` (``hidden_in_views``), as this script and
    ``occluder_gradient_check.py`` take them; ``check_sampling_arguments`` refuses a negative margin."""
    parser.add_argument(
        "--visibility",
        action="store_true",
        help="a sample's colour is invalid in a render view that sees it occluded in the exact scene (not BTS's rule)",
    )
    parser.add_argument(
        "--visibility-margin", type=float, default=0.5, help="metres a hit must lie before a point to hide it"
    )


def check_sampling_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``parser.error`` (SystemExit) for ``--num-samples`` below 2 or a negative ``--visibility-margin``, the
    options this script and ``occluder_gradient_check.py`` share."""
    if args.num_samples is not None and args.num_samples < 2:
        parser.error(f"--num-samples must be at least 2 (samples per ray), got {args.num_samples}")
    if args.visibility_margin < 0:
        parser.error(f"--visibility-margin must be 0 or more metres, got {args.visibility_margin}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", type=Path, required=True, help="a synth-kitti360 folder (the one-car or the street world)"
    )
    parser.add_argument(
        "--loss",
        choices=("supervised", "photometric", "direct", "oracle"),
        default="supervised",
        help="supervised: the density field's rendered z-depth vs exact depth; photometric: the preset's training "
        "loss; direct: the control, a 1x1-conv disparity head on the same encoder features, same pixels and loss; "
        "oracle: no training, the photometric loss of exact density fields (oracle_losses) over --steps batches",
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=100)
    add_frame_arguments(parser)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=224)
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--rays", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam lr of every group (the preset: 1e-4)")
    parser.add_argument("--mlp-lr", type=float, default=None, help="lr of the density MLP (default: --lr)")
    parser.add_argument(
        "--decoder-lr",
        type=float,
        default=None,
        help="lr of the decoder in its own group (--pipeline.model.decoder-param-group True; default: --lr)",
    )
    parser.add_argument(
        "--automask",
        action="store_true",
        help="Monodepth2's auto-mask on the photometric loss (--pipeline.model.automask)",
    )
    parser.add_argument("--no-augment", action="store_true", help="no colour jitter, no flip")
    parser.add_argument(
        "--preset",
        choices=("tiny", "official"),
        default="tiny",
        help="the model: bts-density-tiny (ResNet-18, 32 samples) or bts-density (ResNet-50, 64 samples)",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="a trained run's step-*.ckpt (or its nerfstudio_models folder) of --preset's model: loaded before "
        "training or scoring; with --loss oracle it adds the trained field and two edits of it (MODEL_FIELDS); a "
        "run whose config.yml names another --near or --num-samples (default: the preset's) is refused",
    )
    parser.add_argument("--no-fisheye", action="store_true", help="frame groups without the fisheye frames")
    parser.add_argument("--near", type=float, default=3.0, help="sampling start and code near plane (BTS: 3 m)")
    parser.add_argument("--num-samples", type=int, default=None, help="samples per ray (tiny preset 32; BTS 64)")
    add_visibility_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--output-json", type=Path, default=None)
    args = parser.parse_args()
    check_sampling_arguments(parser, args)
    resolve_frames(parser, args)
    checkpoint = None
    if args.checkpoint is not None:  # refused before any work when it is no usable checkpoint
        checkpoint = read_checkpoint(args.checkpoint, args.near, samples_per_ray(args))
    work = args.work or Path(tempfile.mkdtemp(prefix="occl_sup_"))
    work.mkdir(parents=True, exist_ok=True)

    from bts_studio.eval.occupancy_protocol import Kitti360Calibration

    pipeline = build_pipeline(args, work, checkpoint)
    model = pipeline.model
    model.train()
    calibration = Kitti360Calibration(Path(args.data), "2013_05_28_drive_0000_sync")
    gt = GroundTruth(pipeline, args.height, args.width, calibration)
    groups = param_groups(model)
    direct_head = None
    if args.loss == "direct":
        direct_head = torch.nn.Conv2d(model.config.feature_dim, 1, 1)
        groups["density_mlp"] = list(direct_head.parameters())  # reported as the head's group
    lrs = {"resnet": args.lr, "decoder": args.decoder_lr or args.lr, "density_mlp": args.mlp_lr or args.lr}
    if args.loss == "oracle":
        summary = oracle_losses(
            pipeline, gt, calibration, args.steps, args.visibility, args.visibility_margin, args.checkpoint is not None
        )
        print(json.dumps({k: round(v, 5) for k, v in summary.items()}), flush=True)
        if args.output_json is not None:
            args.output_json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **summary}))
        return
    optimizer = torch.optim.Adam([{"params": p, "lr": lrs[n]} for n, p in groups.items()], eps=1e-8)
    generator = torch.Generator().manual_seed(args.seed)
    near, far = model.config.near, model.config.far
    history = []
    print(f"inputs: {len(gt.images)} images, car pixels {int(gt.car.sum())}; loss {args.loss}; lrs {lrs}", flush=True)
    start = time.time()
    losses: List[float] = []
    step_metrics: Dict[str, List[float]] = {}
    grad_norms: Dict[str, List[float]] = {name: [] for name in groups}
    for step in range(args.steps + 1):
        if step % args.eval_every == 0:
            row = {
                "step": step,
                "loss": float(np.mean(losses)) if losses else float("nan"),
                **evaluate(pipeline, gt, calibration, direct_head),
            }
            row.update({f"grad_{k}": float(np.mean(v)) if v else float("nan") for k, v in grad_norms.items()})
            row.update({f"train_{k}": float(np.mean(v)) for k, v in step_metrics.items()})
            row["wall_s"] = time.time() - start
            history.append(row)
            print(json.dumps({k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
            losses = []
            step_metrics = {}
            grad_norms = {name: [] for name in groups}
        if step == args.steps:
            break
        optimizer.zero_grad(set_to_none=True)
        if args.loss in ("supervised", "direct"):
            loss = supervised_step(pipeline, gt, generator, args.groups, args.rays, near, far, direct_head)
        else:
            _, loss_dict, metrics_dict = pipeline.get_train_loss_dict(step)
            loss = sum(loss_dict.values())
            for key in ("mean_depth", "automasked_ratio"):  # the training batches' mean depth, the share masked
                if key in metrics_dict:
                    step_metrics.setdefault(key, []).append(float(metrics_dict[key]))
        loss.backward()
        for name, params in groups.items():
            grads = [p.grad.norm() for p in params if p.grad is not None]
            grad_norms[name].append(float(torch.stack(grads).norm()) if grads else 0.0)
        optimizer.step()
        losses.append(float(loss.detach()))
    if args.output_json is not None:
        args.output_json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "history": history}, indent=1)
        )


if __name__ == "__main__":
    main()
