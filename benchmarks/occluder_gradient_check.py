"""Which way does BTS's training loss push the density in the space hidden behind the cars? (issue #18)

The oracle of ``benchmarks/occluder_supervised_check.py`` scores whole fields: at four trained models, the exact
hidden space would lower BTS's loss, yet training does not move there (docs/benchmarks.md, "The trained models'
own loss behind the cars"). This script asks whether the gradient points there. For each batch it runs one
backward pass of the training loss (``pipeline.get_train_loss_dict``: the photometric loss with its weight and the
edge-aware smoothness). It then reads the gradient dL/dsigma at every loss-ray sample, grouped by the sample's
place relative to the batch's input view:

- ``hidden_empty``: behind the input view's first surface and empty in the exact scene (the space IE_rec scores);
- ``hidden_occupied``: behind that surface and inside a solid (a car, a facade);
- ``visible``: in front of the first surface, or on a line of sight that hits nothing.

Each ray's last sample is left out where the renderer forces its alpha to 1 (BTS's ``hard_alpha_cap``): its
gradient is 0 by construction.

Per field, the training loss (``{field}_loss``, mean over the batches; with ``--loss-term``, only the terms named);
per region and field:

- the samples (``{field}_{region}_samples``);
- the shares where a descent step lowers sigma (``_down_share``: dL/dsigma > 1e-12), raises it (``_up_share``:
  dL/dsigma < -1e-12), or finds no gradient (``_no_gradient_share``: |dL/dsigma| <= 1e-12, e.g. behind a ray's
  termination); the three add up to 1;
- the sum of the gradients (``_gradient_sum``, summed over the batches, where the loss is their mean): the
  first-order loss decrease per unit of density removed from every sample of the region at once;
- their gradient-weighted balance (``_push``: sum dL/dsigma / sum |dL/dsigma|; +1 all towards empty, -1 all
  towards solid);
- the median sigma (``_sigma_median``, 1/m).

The hidden empty region is split further by the loss ray's camera (``perspective``: image_00/01, ``fisheye``:
image_02/03) and by metres behind the surface (``BANDS``), as ``{field}_hidden_empty_{camera}_{lo}-{hi}m_{stat}``
with ``samples``, ``gradient_sum`` and ``push``, and by its place on the loss ray relative to that ray's own
surface (the ray's first sample inside a solid of the exact scene), as ``{field}_hidden_empty_{offset}_{stat}``
(``OFFSETS``): ``before_1`` is the sample just in front of that surface, ``before_2-3`` and ``before_4+`` further
in front, ``past`` behind it (only reached through a non-saturated field), ``no_surface`` on a ray that meets no
solid. The exact field ends each loss ray at its first solid sample, up to one sample interval behind the true
surface (1.7 m at 18 m with 64 samples), so density one sample earlier fetches its colour nearer the surface;
a pull concentrated in ``before_1`` is that, not a demand for a filled shadow. ``in_cuboid`` is the hidden empty
space inside the exact variant's query cuboid of the input camera (``ExactGrid``: x -4..4 m, 0..1 m below the
camera, z 3..20 m in the tilted frame), the part IE_rec scores (for left inputs; the batches hold right ones too),
``in_cuboid_{offset}`` its split by ``OFFSETS`` and ``in_cuboid_{camera}`` its split by loss camera (``CAMERAS``).

Fields (``--field``, repeatable):

- ``model``: with ``--checkpoint``, the trained model as it is.
- ``filled``: solid in the exact scene's solids and everything behind the input view's first surface.
- ``plus4m``: solid in the scene's solids and the first 4 m behind that surface (Depth + 4 m's field).
- ``exact``: solid in the scene's solids only.

The last three are the oracle's fields: ``--sigma`` (1/m; default 1e3, the oracle's) in their solids and
``--empty-sigma`` (default 1e-4) elsewhere rather than 0, because the compositing's relu has no gradient at 0. At 1e3
the opacity alpha = 1 - exp(-sigma * delta) saturates: a solid sample gets no gradient, and neither does anything
behind it on a loss ray. A small ``--sigma`` (e.g. 2) shows the gradient of a soft filling instead.

The script runs on the CPU, one batch per ``--steps``. The command for a GPU run of ``benchmarks/gpu_occluders.sh``
(its ``WORK``), on that machine's CPU after training:

    python benchmarks/occluder_gradient_check.py --data $WORK/KITTI-360 --preset official \\
        --checkpoint $WORK/outputs/occluders/bts-density/run --hidden-frames 5 --field model --field exact \\
        --height 192 --width 640 --steps 10 --rays 4096 --output-json gradient.json

``--hidden-frames 5`` picks input frames whose scored cuboid holds hidden empty space; the default frames
(``--frames``, chosen for the one-car world) can have none on the street world. On an H200 machine's 16 cores the
command took 45 s (docs/benchmarks.md, "The scored cuboid").

Without a checkpoint (the exact fields only; a 32-frame street segment; 30 batches of the three fields took 5 min
at 128 samples on 2 cores):

    bts-studio synth-kitti360 /tmp/od/street52 --frames 32 --scale 0.52
    python benchmarks/occluder_gradient_check.py --data /tmp/od/street52 --preset official --field filled \\
        --field plus4m --field exact --height 192 --width 640 --steps 30 --rays 4096 [--num-samples 128]

Raises SystemExit when ``--field model`` has no ``--checkpoint``, a size, count or density option is not positive, or
``--num-samples`` is below 2. Raises RuntimeError if the training loss never calls ``net.density`` (nothing to read).
An unusable checkpoint is refused by path, as in the oracle.
"""

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import occluder_supervised_check as oracle  # noqa: E402

FIELDS = ("model", "filled", "plus4m", "exact")
REGIONS = ("hidden_empty", "hidden_occupied", "visible")
BANDS = ((0.0, 2.0), (2.0, 4.0), (4.0, float("inf")))
"""Metres behind the input view's first surface: the hidden empty region is also reported per band and per loss
camera, to see where a pull comes from (the shadow's edge just behind a car, or deep behind it)."""
CAMERAS = ("perspective", "fisheye")
"""Loss cameras: image_00/01 and image_02/03."""
OFFSETS = ("before_1", "before_2-3", "before_4+", "past", "no_surface")
"""A sample's place on its loss ray relative to the ray's first sample inside a solid (``surface_offsets``)."""
NO_GRADIENT = 1e-12
"""|dL/dsigma| up to which a sample counts as receiving no gradient (an absolute bound: the loss is a mean over the
batch's pixels, so a sample's gradient shrinks as the batch grows; the official batch's are ~1e-6 and above)."""


def field_sigma(
    name: str, sigma: torch.Tensor, behind: torch.Tensor, occupied: torch.Tensor, solid_sigma: float, empty_sigma: float
):
    """``[B, N]`` density of field ``name`` at the batch's samples: the model's own ``sigma``, or ``solid_sigma`` (1/m)
    in the field's solids and ``empty_sigma`` elsewhere. ``empty_sigma`` > 0 because the compositing's
    ``relu(sigma)`` has no gradient at 0 (the model's softplus is never 0). ``behind``: metres behind the input
    view's first surface (``behind_input_surface``); ``occupied``: inside a solid of the exact scene. Raises
    ValueError for a name not in ``FIELDS``."""
    if name == "model":
        return sigma
    solid = occupied.clone()
    if name == "filled":
        solid |= behind > 0
    elif name == "plus4m":
        solid |= (behind > 0) & (behind < 4.0)
    elif name != "exact":
        raise ValueError(f"unknown field {name!r}; expected one of {FIELDS}")
    return torch.where(solid, solid_sigma, empty_sigma).to(sigma.dtype)


def regions(
    behind: torch.Tensor, occupied: torch.Tensor, counted: Optional[torch.Tensor] = None
) -> Dict[str, torch.Tensor]:
    """The three disjoint sample regions (``REGIONS``) as boolean masks of ``behind``'s shape; together they cover
    every sample where ``counted`` (default: all) is true."""
    counted = torch.ones_like(occupied) if counted is None else counted
    hidden = (behind > 0) & counted
    return {"hidden_empty": hidden & ~occupied, "hidden_occupied": hidden & occupied, "visible": ~hidden & counted}


def not_forced(sigma: torch.Tensor, num_samples: int, terminate_last: bool) -> torch.Tensor:
    """``sigma``'s shape ``[B, R * S]`` (each ray's ``S`` samples in a row, as ``render_samples_unfused`` builds the
    points): False at each ray's last sample when the renderer forces its alpha to 1 (BTS's ``hard_alpha_cap``,
    ``terminate_last_sample``), whose dL/dsigma is 0 by construction, not by the loss."""
    index = torch.arange(sigma.shape[-1], device=sigma.device).expand_as(sigma)
    return (index % num_samples != num_samples - 1) | (not terminate_last)


def sample_fisheye(batch, fisheye_image: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``shape`` ``[B, R * S]``: whether each sample's loss ray comes from a fisheye image. The batch's rays are
    ``[B, ...]`` (group-major, as ``render_rays`` flattens them), each ray's ``S`` samples in a row."""
    per_ray = fisheye_image[batch.rays.camera_indices.reshape(shape[0], -1).long().cpu()]  # [B, R]
    samples = shape[1] // per_ray.shape[1]
    assert per_ray.shape[1] * samples == shape[1], f"{per_ray.shape[1]} rays for {shape[1]} samples"
    return per_ray.repeat_interleave(samples, dim=1)


def hidden_empty_part_names() -> List[str]:
    """``{camera}_{lo}-{hi}m`` for the loss cameras and ``BANDS``."""
    return [f"{camera}_{lo:g}-{hi:g}m" for camera in CAMERAS for lo, hi in BANDS]


def hidden_empty_parts(hidden_empty: torch.Tensor, behind: torch.Tensor, fisheye: torch.Tensor):
    """The hidden empty mask split by loss camera and by metres behind the surface (``hidden_empty_part_names``)."""
    parts = {}
    for camera, chosen in zip(CAMERAS, (~fisheye, fisheye), strict=True):
        for lo, hi in BANDS:
            parts[f"{camera}_{lo:g}-{hi:g}m"] = hidden_empty & chosen & (behind > lo) & (behind <= hi)
    return parts


def surface_offsets(occupied: torch.Tensor, num_samples: int) -> torch.Tensor:
    """``occupied`` ``[B, R * S]`` (each ray's ``S`` = ``num_samples`` samples in a row): per sample, its index minus
    the index of its ray's first occupied sample (negative in front of that surface, 0 at it), or ``num_samples``
    + 1 on a ray without an occupied sample (larger than any real offset)."""
    rays = occupied.reshape(occupied.shape[0], -1, num_samples)
    index = torch.arange(num_samples, device=occupied.device).expand_as(rays)
    first = torch.where(rays, index, num_samples).amin(dim=-1, keepdim=True)  # num_samples: no surface
    offset = torch.where(first < num_samples, index - first, num_samples + 1)
    return offset.reshape(occupied.shape)


def offset_parts(hidden_empty: torch.Tensor, offset: torch.Tensor, num_samples: int) -> Dict[str, torch.Tensor]:
    """The hidden empty mask split by ``OFFSETS`` (``offset`` from ``surface_offsets``); the parts are disjoint and
    cover it."""
    return {
        "before_1": hidden_empty & (offset == -1),
        "before_2-3": hidden_empty & (offset <= -2) & (offset >= -3),
        "before_4+": hidden_empty & (offset <= -4),
        "past": hidden_empty & (offset >= 0) & (offset <= num_samples),
        "no_surface": hidden_empty & (offset > num_samples),
    }


def in_cuboid(points: torch.Tensor, w2c: torch.Tensor, to_kitti: torch.Tensor) -> torch.Tensor:
    """``[B, N]``: whether each point of ``points`` ``[B, N, 3]`` (model frame) lies inside the exact variant's query
    cuboid (``ExactGrid``'s ranges) of batch element b's input camera (``w2c`` ``[B, 3, 4]``, OpenCV, model frame).
    The metres per model unit are read from ``to_kitti``: 1 for ``world_transform``'s rigid map (the model frame is
    metric), kept general in case a scaled one is passed. The input camera is left or right (the batches hold both);
    ``eval-occupancy`` scores the left camera's cuboid only."""
    from bts_studio.core.geometry import world_to_camera_points
    from bts_studio.eval.occupancy import tilt_rotation
    from bts_studio.eval.occupancy_exact import ExactGrid

    metres = float(to_kitti[:3, 0].norm())
    camera = world_to_camera_points(points.double(), w2c.double()) * metres
    tilted = camera @ tilt_rotation(dtype=torch.float64).T.to(camera.device)
    grid = ExactGrid()
    inside = torch.ones(points.shape[:2], dtype=torch.bool, device=points.device)
    for axis, (lo, hi) in enumerate((grid.x_range, grid.y_range, grid.z_range)):
        inside &= (tilted[..., axis] >= min(lo, hi)) & (tilted[..., axis] <= max(lo, hi))
    return inside


def gradient_counts(gradient: torch.Tensor) -> Dict[str, float]:
    """Of the samples' dL/dsigma values ``gradient`` (any shape): how many there are (``samples``), how many a
    descent step pushes down (``down``: > ``NO_GRADIENT``) or up (``up``: < -``NO_GRADIENT``) or leaves (``none``),
    and the sums of the values and of their magnitudes."""
    g = gradient.double()
    return {
        "samples": float(g.numel()),
        "down": float((g > NO_GRADIENT).sum()),
        "up": float((g < -NO_GRADIENT).sum()),
        "none": float((g.abs() <= NO_GRADIENT).sum()),
        "gradient_sum": float(g.sum()),
        "gradient_abs_sum": float(g.abs().sum()),
    }


def add_counts(totals: Dict[str, float], key: str, gradient: torch.Tensor) -> None:
    """Add ``gradient_counts(gradient)`` to ``totals`` under ``{key}_{stat}``."""
    for stat, value in gradient_counts(gradient).items():
        totals[f"{key}_{stat}"] = totals.get(f"{key}_{stat}", 0.0) + value


def sum_and_push(totals: Dict[str, float], key: str) -> Dict[str, float]:
    """``{key}_gradient_sum`` and ``{key}_push`` (the sum over the sum of magnitudes; NaN without a gradient) of
    ``gradient_counts``' totals under ``key``."""
    gradient_sum, magnitude = totals.get(f"{key}_gradient_sum", 0.0), totals.get(f"{key}_gradient_abs_sum", 0.0)
    return {f"{key}_gradient_sum": gradient_sum, f"{key}_push": gradient_sum / magnitude if magnitude else float("nan")}


def density_gradients(
    pipeline,
    gt,
    calibration,
    steps: int,
    fields: Sequence[str],
    solid_sigma: float = 1e3,
    empty_sigma: float = 1e-4,
    sigma_of: Callable = field_sigma,
    visibility: bool = False,
    visibility_margin: float = 0.5,
    loss_terms: Optional[Sequence[str]] = None,
) -> Dict[str, float]:
    """Per field and region, the statistics of dL/dsigma described in the module docstring, over ``steps`` batches;
    every field sees the same batches (the random state is put back before each). ``sigma_of`` builds a field's
    density (``field_sigma``'s signature); the tests pass an edited one. The model's weights get gradients too and
    are zeroed after each pass; nothing is stepped. ``visibility``: a sample's colour is invalid in a render view
    that sees it hidden in the exact scene (the oracle's ``--visibility``, ``hidden_in_views``: the upper bound of
    a visibility test, which BTS's colour lookup does not have), so the loss is then no longer BTS's.
    ``loss_terms``: the loss dict's entries to differentiate (default: all, the training loss); the gradient is
    linear in them, so per-term runs add up to the whole. Raises ValueError naming a term the loss dict lacks."""
    from bts_studio.methods.bts import rendering

    model = pipeline.model
    net = model.net
    original = net.density
    datamanager = pipeline.datamanager
    original_next = datamanager.next_train
    drawn: Dict[str, object] = {}

    def next_train(step: int):  # the loss's batch, for the camera of each loss ray
        rays, batch = original_next(step)
        drawn["batch"] = batch
        return rays, batch

    fisheye_image = torch.tensor(oracle.image_cameras(pipeline)) >= 2
    to_kitti = oracle.world_transform(pipeline, gt, calibration)
    sample_view_colours = rendering.sample_view_colours
    spacing = oracle.disparity_spacing(model.config)
    colours_with_visibility = oracle.with_visibility_test(
        sample_view_colours, gt.scene, to_kitti, visibility_margin, spacing
    )

    totals: Dict[str, float] = {}
    sigmas: Dict[str, List[torch.Tensor]] = {}
    try:  # the patched density is put back whatever happens
        for step in range(steps):
            state = torch.get_rng_state()
            places: List[tuple] = []  # per density call of this step: points, behind, occupied, cuboid, offset
            for name in fields:
                torch.set_rng_state(state)  # the same batch, flip and colour draws for every field
                stash = []

                def density(points, features, K, w2c, name=name, stash=stash, places=places):
                    sigma, outside = original(points, features, K, w2c)
                    call = len(stash)
                    if call == len(places):  # the first field of the step: raycast once, every field reuses it
                        with torch.no_grad():
                            behind = oracle.behind_input_surface(gt.scene, to_kitti, points.detach(), w2c.detach())
                            occupied = gt.scene.occupied(oracle.kitti_points(points.detach(), to_kitti))
                            cuboid = in_cuboid(points.detach(), w2c.detach(), to_kitti).reshape(sigma.shape)
                            occupied = occupied.reshape(sigma.shape)
                            offset = surface_offsets(occupied, model.config.num_samples)
                        places.append((points.detach(), behind.reshape(sigma.shape), occupied, cuboid, offset))
                    cached, behind, occupied, cuboid, offset = places[call]
                    assert torch.equal(cached, points.detach()), "every field must render the same samples"
                    behind, occupied = behind.to(sigma.device), occupied.to(sigma.device)
                    sigma = sigma_of(name, sigma, behind, occupied, solid_sigma, empty_sigma)
                    if not sigma.requires_grad:
                        sigma.requires_grad_()  # an exact field: a leaf of its own
                    sigma.retain_grad()
                    stash.append((sigma, behind, occupied, cuboid.to(sigma.device), offset.to(sigma.device)))
                    return sigma, outside

                net.density = density
                datamanager.next_train = next_train
                if visibility:
                    rendering.sample_view_colours = colours_with_visibility
                _, loss_dict, _ = pipeline.get_train_loss_dict(step)
                if not stash:  # a render path that bypasses net.density would leave nothing to read
                    raise RuntimeError(f"field {name}: the training loss did not call net.density")
                if loss_terms is not None and not set(loss_terms) <= set(loss_dict):
                    raise ValueError(
                        f"loss terms {sorted(set(loss_terms) - set(loss_dict))} not in {sorted(loss_dict)}"
                    )
                loss = sum(value for key, value in loss_dict.items() if loss_terms is None or key in loss_terms)
                loss.backward()
                totals[f"{name}_loss"] = totals.get(f"{name}_loss", 0.0) + float(loss.detach()) / steps
                model.zero_grad(set_to_none=True)
                for sigma, behind, occupied, cuboid, offset in stash:
                    gradient = sigma.grad.detach()
                    counted = not_forced(sigma, model.config.num_samples, model.config.terminate_last_sample)
                    split = regions(behind, occupied, counted)
                    for region, mask in split.items():
                        add_counts(totals, f"{name}_{region}", gradient[mask])
                        sigmas.setdefault(f"{name}_{region}", []).append(sigma.detach()[mask].float())
                    fisheye = sample_fisheye(drawn["batch"], fisheye_image, sigma.shape)
                    parts = hidden_empty_parts(split["hidden_empty"], behind, fisheye)
                    parts.update(offset_parts(split["hidden_empty"], offset, model.config.num_samples))
                    parts["in_cuboid"] = split["hidden_empty"] & cuboid
                    for key, mask in offset_parts(parts["in_cuboid"], offset, model.config.num_samples).items():
                        parts[f"in_cuboid_{key}"] = mask
                    for camera, chosen in zip(CAMERAS, (~fisheye, fisheye), strict=True):
                        parts[f"in_cuboid_{camera}"] = parts["in_cuboid"] & chosen
                    for part, mask in parts.items():
                        add_counts(totals, f"{name}_hidden_empty_{part}", gradient[mask])
    finally:
        net.density = original
        datamanager.next_train = original_next
        rendering.sample_view_colours = sample_view_colours
    summary: Dict[str, float] = {}
    for name in fields:
        summary[f"{name}_loss"] = totals[f"{name}_loss"]
        for region in REGIONS:
            key = f"{name}_{region}"
            n = totals.get(f"{key}_samples", 0.0)
            summary[f"{key}_samples"] = n
            summary[f"{key}_down_share"] = totals[f"{key}_down"] / n if n else float("nan")
            summary[f"{key}_up_share"] = totals[f"{key}_up"] / n if n else float("nan")
            summary[f"{key}_no_gradient_share"] = totals[f"{key}_none"] / n if n else float("nan")
            summary.update(sum_and_push(totals, key))
            values = torch.cat(sigmas[key]) if sigmas.get(key) else torch.empty(0)
            summary[f"{key}_sigma_median"] = float(values.median()) if values.numel() else float("nan")
        cuboid_parts = ["in_cuboid"] + [f"in_cuboid_{o}" for o in OFFSETS + CAMERAS]
        for part in hidden_empty_part_names() + list(OFFSETS) + cuboid_parts:
            key = f"{name}_hidden_empty_{part}"
            summary[f"{key}_samples"] = totals.get(f"{key}_samples", 0.0)
            summary.update(sum_and_push(totals, key))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a synth-kitti360 folder (the street world)")
    parser.add_argument(
        "--field", choices=FIELDS, action="append", help="a field to score (repeatable; default: the three exact)"
    )
    parser.add_argument(
        "--sigma", type=float, default=1e3, help="density (1/m) in the exact fields' solids (the oracle's 1e3)"
    )
    parser.add_argument(
        "--empty-sigma",
        type=float,
        default=1e-4,
        help="density (1/m) elsewhere in the exact fields (> 0: a gradient; small: 80 m absorb 0.8 %%)",
    )
    oracle.add_visibility_arguments(parser)
    parser.add_argument(
        "--loss-term",
        action="append",
        help="a loss dict entry to differentiate, e.g. photometric_loss or smoothness_loss (repeatable; default: "
        "all of them, the training loss)",
    )
    parser.add_argument("--steps", type=int, default=3, help="batches")
    oracle.add_frame_arguments(parser)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--rays", type=int, default=4096)
    parser.add_argument("--preset", choices=("tiny", "official"), default="official")
    parser.add_argument(
        "--checkpoint", type=Path, help="a trained run's step-*.ckpt or its folder (of --preset's model)"
    )
    parser.add_argument("--no-fisheye", action="store_true", help="frame groups without the fisheye frames")
    parser.add_argument("--no-augment", action="store_true", help="no colour jitter, no flip")
    parser.add_argument("--near", type=float, default=3.0, help="sampling start and code near plane (BTS: 3 m)")
    parser.add_argument("--num-samples", type=int, default=None, help="samples per ray (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--output-json", type=Path, default=None)
    args = parser.parse_args()
    fields = args.field or ["filled", "plus4m", "exact"]
    if "model" in fields and args.checkpoint is None:
        parser.error("--field model needs --checkpoint (a trained run)")
    for option in ("sigma", "empty_sigma", "steps", "groups", "rays", "height", "width"):
        if getattr(args, option) <= 0:
            parser.error(f"--{option.replace('_', '-')} must be positive, got {getattr(args, option)}")
    oracle.check_sampling_arguments(parser, args)
    oracle.resolve_frames(parser, args)
    args.automask, args.decoder_lr = False, None  # what build_pipeline reads besides the options above
    checkpoint = None
    if args.checkpoint is not None:  # refused before any work when it is no usable checkpoint
        checkpoint = oracle.read_checkpoint(args.checkpoint, args.near, oracle.samples_per_ray(args))
    work = args.work or Path(tempfile.mkdtemp(prefix="occl_grad_"))
    work.mkdir(parents=True, exist_ok=True)

    from bts_studio.eval.occupancy_protocol import Kitti360Calibration

    pipeline = oracle.build_pipeline(args, work, checkpoint)
    pipeline.model.train()
    calibration = Kitti360Calibration(Path(args.data), "2013_05_28_drive_0000_sync")
    gt = oracle.GroundTruth(pipeline, args.height, args.width, calibration)
    summary = density_gradients(
        pipeline,
        gt,
        calibration,
        args.steps,
        fields,
        args.sigma,
        args.empty_sigma,
        visibility=args.visibility,
        visibility_margin=args.visibility_margin,
        loss_terms=args.loss_term,
    )
    summary = {k: None if math.isnan(v) else v for k, v in summary.items()}  # JSON has no NaN: undefined is null
    print(json.dumps({k: v if v is None else float(f"{v:.6g}") for k, v in summary.items()}), flush=True)
    if args.output_json is not None:
        args.output_json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **summary}))


if __name__ == "__main__":
    main()
