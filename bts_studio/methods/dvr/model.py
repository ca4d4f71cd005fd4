"""DVR (Niemeyer, Mescheder, Oechsle, Geiger, CVPR 2020) as a nerfstudio model.

One ray batch: rays ``o + d w`` with ``w`` the pixel's direction at camera depth 1 (so ``d`` is camera
z-depth, as DVR's ``pixels_to_world``) -> proposals between the ray's entry to and exit from the padded unit
cube -> first free->occupied crossing -> secant refinement -> surface depth with the analytic gradient
(``bts_studio.core.root_finding``) -> colour at the surface point. Each ray carries its object's latent code in
``RayBundle.metadata["latent_code"]`` (set by the pipeline from the encoded input view, or here from the
camera's object for whole-image renders); an unconditioned model (``latent_dim`` 0, multi-view) has none.

Outputs: ``rgb`` (background colour where no surface), ``depth`` (distance along the unit ray; the far end of
the cube interval where no surface), ``z_depth`` (camera z, DVR's depth), ``accumulation`` (1 on hits),
``normals`` (whole images only; ``(n + 1) / 2`` of outward unit normals); in training also what the losses
need (surface points, ray geometry).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Literal, Optional, Tuple, Type

import torch
from jaxtyping import Bool, Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.scene_box import OrientedBox
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils import colormaps
from torch import Tensor
from torch.nn import Parameter

from bts_studio.core.image_quality import psnr, ssim
from bts_studio.core.root_finding import (
    first_crossing,
    proposal_depths,
    ray_box_interval,
    surface_depth,
    surface_depth_unrolled,
)
from bts_studio.methods.common.rendering import render_bundle_in_chunks
from bts_studio.methods.dvr.batch import DVRBatch
from bts_studio.methods.dvr.losses import (
    depth_l1_loss,
    finite_difference_normals,
    normal_smoothness_loss,
    occupancy_bce_loss,
    rgb_l1_loss,
)
from bts_studio.methods.dvr.networks import DVRDecoder, DVREncoder

UNIT_CUBE_HALF = 0.5
"""Objects are normalised to [-0.5, 0.5]^3 (Occupancy Networks)."""


@dataclass
class DVRModelConfig(ModelConfig):
    """Differentiable Volumetric Rendering; defaults are the official ``configs/default.yaml`` (classics.md C)."""

    _target: Type = field(default_factory=lambda: DVRModel)
    """The model class this config builds."""
    enable_collider: bool = False
    """DVR bounds rays by the padded unit cube itself; nerfstudio's collider is unused."""
    eval_num_rays_per_chunk: int = 16384
    """Rays per forward pass when rendering whole images."""
    latent_dim: int = 256
    """Width of the image code (DVR ``c_dim`` 256); 0: no encoder, one object fitted from many views."""
    hidden_size: int = 512
    """Decoder width (512; DVR's 2D-supervised NMR model ``ours_rgb`` uses 128)."""
    num_blocks: int = 5
    """Residual blocks of the decoder."""
    predict_colour: bool = True
    """Decoder outputs occupancy + RGB (``out_dim`` 4); False: occupancy only (``ours_depth``, ``out_dim`` 1)."""
    imagenet_weights: Optional[Path] = None
    """torchvision ResNet-18 ImageNet weights (``resnet18-f37072fd.pth``); None: the torch hub cache, else
    random initialisation with a warning. Nothing is downloaded."""
    cube_padding: float = 0.1
    """Proposals lie in the unit cube padded by this (DVR: 0.1, i.e. [-0.55, 0.55]^3)."""
    depth_range: Tuple[float, float] = (0.0, 2.4)
    """Depth interval (camera z) of rays that miss the padded cube (DVR ``depth_range`` for ShapeNet)."""
    proposal_schedule: Tuple[int, ...] = (50_000, 100_000, 250_000)
    """Training steps after which the number of proposals doubles (DVR ``schedule_milestones``)."""
    initial_proposals: int = 16
    """Proposals per ray before the first milestone (DVR ``init_resolution``)."""
    eval_proposals: int = 128
    """Proposals per ray outside training (DVR's default ``n_steps``)."""
    secant_steps: int = 8
    """Secant refinement steps (DVR ``n_secant_steps``)."""
    depth_gradient: Literal["analytic", "unrolled"] = "analytic"
    """``analytic``: DVR's implicit-differentiation gradient (a custom autograd Function); ``unrolled``: its
    pure-PyTorch twin that backpropagates through the secant iterations (for checks; slower)."""
    max_points_per_chunk: int = 1 << 20
    """Points per decoder call while searching for the surface (memory only; DVR ``max_points``)."""
    background_colour: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Colour of rays without a surface (ShapeNet renderings have a white background)."""
    rgb_loss_weight: float = 1.0
    """lambda_rgb (0 turns the RGB loss off)."""
    depth_loss_weight: float = 0.0
    """lambda_depth: 0 (2D supervision), 1 (``ours_depth``), 10 (``ours_combined``)."""
    freespace_loss_weight: float = 1.0
    """lambda_freespace."""
    occupancy_loss_weight: float = 1.0
    """lambda_occupancy."""
    normal_loss_weight: float = 0.05
    """lambda_normal (0.05 single-view, 0.1 multi-view)."""
    normal_jitter: float = 5e-4
    """Half-width of the uniform offset between the two points compared by the normal loss."""
    occupancy_at_depth: bool = True
    """Occupancy-loss points at the true depth where the batch has it (else uniform in the unit cube interval)."""
    default_object: int = 0
    """Training object rendered for cameras that name none."""


class DVRModel(Model):
    """DVR: an image-conditioned (or unconditioned) occupancy + texture field rendered at its surface."""

    config: DVRModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        config = self.config
        self.decoder = DVRDecoder(
            config.latent_dim, config.hidden_size, config.num_blocks, 4 if config.predict_colour else 1
        )
        self.encoder = DVREncoder(config.latent_dim) if config.latent_dim > 0 else None
        if self.encoder is not None:
            self.encoder.load_imagenet_weights(config.imagenet_weights)
        self.step = 0
        # Made once (a tensor from Python values per step is a blocking host-to-device copy on a GPU).
        background = torch.tensor(config.background_colour, dtype=torch.float32)
        self.register_buffer("background", background, persistent=False)
        # Set by the pipeline: camera -> encoder input image [1, 3, S, S] of the object it shows.
        self.input_source: Optional[Callable[[Cameras], Tensor]] = None

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        return {"fields": list(self.parameters())}

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        def set_step(step: int) -> None:
            self.step = step

        return [TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], set_step)]

    # ------------------------------------------------------------------------------------------------ parts
    def encode(self, images: Float[Tensor, "B 3 S S"]) -> Float[Tensor, "B C"]:
        """Latent codes of encoder input images in [0, 1]."""
        assert self.encoder is not None, "this DVR model is unconditioned (latent_dim 0)"
        return self.encoder(images)

    def num_proposals(self) -> int:
        """Proposals per ray: DVR's schedule by training step (16, 32, 64, 128), 128 outside training."""
        if not self.training:
            return self.config.eval_proposals
        count = self.config.initial_proposals
        for milestone in self.config.proposal_schedule:
            if self.step < milestone:
                break
            count *= 2
        return count

    def occupancy(self, points: Float[Tensor, "N S 3"], latent: Optional[Tensor]) -> Float[Tensor, "N S"]:
        return self.decoder.occupancy(points, latent)

    def _chunked_occupancy(self, points: Float[Tensor, "N S 3"], latent: Optional[Tensor]) -> Float[Tensor, "N S"]:
        rays_per_chunk = max(1, self.config.max_points_per_chunk // max(points.shape[1], 1))
        return torch.cat(
            [
                self.occupancy(
                    points[s : s + rays_per_chunk], None if latent is None else latent[s : s + rays_per_chunk]
                )
                for s in range(0, points.shape[0], rays_per_chunk)
            ]
        )

    def latent_of(self, ray_bundle: RayBundle) -> Optional[Tensor]:
        if self.encoder is None:
            return None
        latent = (ray_bundle.metadata or {}).get("latent_code")
        if latent is None:
            raise ValueError(
                "dvr: rays carry no 'latent_code' metadata; render whole cameras with get_outputs_for_camera "
                "(it encodes the camera's object's input view) or set RayBundle.metadata['latent_code']"
            )
        return latent.reshape(len(ray_bundle), -1)

    # ------------------------------------------------------------------------------------------- rendering
    def get_outputs(self, ray_bundle: RayBundle) -> Dict[str, Tensor]:
        bundle = ray_bundle.flatten() if ray_bundle.origins.dim() > 2 else ray_bundle
        origins = bundle.origins
        norm = (bundle.metadata or {}).get("directions_norm")
        norm = torch.ones_like(origins[:, :1]) if norm is None else norm.reshape(-1, 1)
        directions = bundle.directions * norm  # camera z = 1: depths along it are camera z-depths
        latent = self.latent_of(bundle)
        half = UNIT_CUBE_HALF * (1.0 + 2 * self.config.cube_padding)
        d_near, d_far, meets = ray_box_interval(origins, directions, half)
        low, high = self.config.depth_range
        d_near = torch.where(meets, d_near, torch.full_like(d_near, low))
        d_far = torch.where(meets, d_far, torch.full_like(d_far, high))

        with torch.no_grad():
            depths = proposal_depths(d_near, d_far, self.num_proposals())
            points = origins[:, None] + depths[..., None] * directions[:, None]
            bracket = first_crossing(self._chunked_occupancy(points, latent), depths)
        hit = bracket.hit
        # The step's one host sync in rendering (issue 13): the secant search, the colour and the normal loss run on
        # the hit rays only, whose number the host must know. Searching every ray instead (fixed shapes) would add
        # 8 decoder evaluations per missing ray, half as much again as the proposals themselves.
        index = hit.nonzero()[:, 0]
        find = surface_depth if self.config.depth_gradient == "analytic" else surface_depth_unrolled
        hit_latent = None if latent is None else latent[index]
        params = [p for p in self.decoder.parameters() if p.requires_grad]
        d_hit = find(
            self.occupancy,
            origins[index],
            directions[index],
            hit_latent,
            bracket.select(index),
            self.config.secant_steps,
            params,
            check_hits=False,  # selected by bracket.hit just above
        )
        surface = origins[index] + d_hit[:, None] * directions[index]
        rgb_hit = self.decoder.colour(surface[:, None], hit_latent)[:, 0]

        background = self.background.to(origins.dtype)
        rgb = background.expand(len(origins), 3).clone().index_put((index,), rgb_hit)
        z_depth = d_far.index_put((index,), d_hit)
        outputs = {
            "rgb": rgb,
            "z_depth": z_depth[:, None],
            "depth": z_depth[:, None] * norm,
            "accumulation": hit[:, None].to(rgb.dtype),
        }
        # What the losses need (whole-image renders keep only the image outputs).
        outputs.update(
            {
                "hit": hit,
                "hit_index": index,
                "surface_points": origins.detach().index_put((index,), surface),
                "ray_origins": origins,
                "ray_directions": directions,
                "cube_near": d_near,
                "cube_far": d_far,
                "cube_meets": meets,
            }
        )
        if latent is not None:
            outputs["latent_code"] = latent
        return outputs

    @torch.no_grad()
    def get_outputs_for_camera(self, camera: Cameras, obb_box: Optional[OrientedBox] = None) -> Dict[str, Tensor]:
        """Render a whole camera conditioned on the input view of the object it shows (see the datamanager)."""
        bundle = camera.generate_rays(camera_indices=0, keep_shape=True, obb_box=obb_box)
        if self.encoder is not None:
            if self.input_source is None:
                raise ValueError("dvr: no input view source attached (the DVR pipeline attaches one)")
            # One image: batch statistics are meaningless, so BatchNorm uses its running ones (as at test time).
            was_training = self.encoder.training
            self.encoder.eval()
            code = self.encode(self.input_source(camera).to(self.device))
            self.encoder.train(was_training)
            bundle.metadata["latent_code"] = code.reshape(1, 1, -1).expand(*bundle.origins.shape[:2], -1)
        return self.get_outputs_for_camera_ray_bundle(bundle)

    @torch.no_grad()
    def get_outputs_for_camera_ray_bundle(self, camera_ray_bundle: RayBundle) -> Dict[str, Tensor]:
        """Render an ``[H, W]`` bundle in chunks of ``eval_num_rays_per_chunk`` rays, with ``normals``."""
        keep = ("rgb", "z_depth", "depth", "accumulation")

        def render(chunk: RayBundle) -> Dict[str, Tensor]:
            outputs = {name: value for name, value in self.get_outputs(chunk).items() if name in keep}
            outputs["normals"] = self._normals(chunk, outputs)
            return outputs

        return render_bundle_in_chunks(render, camera_ray_bundle, self.config.eval_num_rays_per_chunk, self.device)

    def _normals(self, chunk: RayBundle, outputs: Dict[str, Tensor]) -> Tensor:
        hit = outputs["accumulation"][:, 0] > 0
        normals = torch.zeros_like(outputs["rgb"])
        if hit.any():
            points = chunk.origins[hit] + chunk.directions[hit] * outputs["depth"][hit]
            latent = self.latent_of(chunk)
            latent = None if latent is None else latent[hit]
            field = lambda p: self.occupancy(p.reshape(-1, 6, 3), None if latent is None else latent).reshape(-1)  # noqa: E731
            normals[hit] = finite_difference_normals(field, points)
        return (normals + 1) / 2 * hit[:, None]

    # ------------------------------------------------------------------------------------------------ losses
    def _logits_where(
        self, points: List[Float[Tensor, "N 3"]], latent: Optional[Tensor], valid: List[Bool[Tensor, " N"]]
    ) -> List[Tuple[Float[Tensor, " V"], Tensor]]:
        """Per term: occupancy logits of its ``points`` on the rays of its mask ``valid`` (masks disjoint; rays in
        order), and an all-true mask for them.

        Only these points enter the loss; evaluating (and backpropagating through) the others too, as a masked sum
        over every ray would, costs decoder time for nothing (most rays are valid for one of the two BCE terms
        only). The masks' sizes come to the host in one read (one host sync for all terms; ``nonzero`` per mask
        would make one each), and one stable sort by term puts every term's rays, in ray order, in a slice of one
        index. Each term keeps its own decoder call: one call for all would change the gradients' summation order
        (float rounding) and so the losses of later steps.
        """
        term = torch.full_like(valid[0], len(valid), dtype=torch.long)
        for number in reversed(range(len(valid))):
            term = torch.where(valid[number], number, term)
        counts = torch.stack([mask.sum() for mask in valid]).tolist()  # the sync: the terms' sizes
        order = torch.sort(term, stable=True).indices
        results = []
        for term_points, index in zip(points, order[: sum(counts)].split(counts), strict=True):
            code = None if latent is None else latent[index]
            logits = self.occupancy(term_points[index][:, None], code)[:, 0]
            results.append((logits, torch.ones_like(logits, dtype=torch.bool)))
        return results

    @torch.no_grad()
    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        dvr: DVRBatch = batch["dvr"]
        mask = dvr.mask.reshape(-1)
        hit = outputs["accumulation"][:, 0] > 0
        union = (hit | mask).sum().clamp_min(1)
        # Masked (fixed shapes, no host sync); 0 dB when no object ray is hit.
        on_object = psnr(outputs["rgb"][None], dvr.rgb.reshape(1, -1, 3), mask=(mask & hit)[None])
        return {"mask_iou": (hit & mask).sum() / union, "psnr_on_object": torch.nan_to_num(on_object, nan=0.0)}

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        config = self.config
        dvr: DVRBatch = batch["dvr"]
        num_images = dvr.num_images
        mask = dvr.mask.reshape(-1)
        hit = outputs["hit"]
        latent = outputs.get("latent_code")
        losses: Dict[str, Tensor] = {}
        if config.rgb_loss_weight > 0 and config.predict_colour:
            losses["rgb_loss"] = config.rgb_loss_weight * rgb_l1_loss(
                outputs["rgb"], dvr.rgb.reshape(-1, 3), hit & mask, num_images
            )
        target_depth = None if dvr.depth is None else dvr.depth.reshape(-1)
        if config.depth_loss_weight > 0:
            if target_depth is None:
                raise ValueError("dvr: depth_loss_weight > 0 needs depth maps (depth/*.exr or .npy) in the data")
            valid = hit & mask & torch.isfinite(target_depth)
            losses["depth_loss"] = config.depth_loss_weight * depth_l1_loss(
                outputs["z_depth"][:, 0], target_depth, valid, num_images
            )
        origins, directions = outputs["ray_origins"], outputs["ray_directions"]
        uniform = torch.rand_like(outputs["cube_near"])
        # One BCE point per ray at most: freespace points on background rays, occupancy points on object rays.
        terms: Dict[str, Tuple[float, bool, Tensor, Tensor]] = {}
        if config.freespace_loss_weight > 0:
            # One point per background ray: the (detached) predicted surface, else uniform in the padded cube.
            depth = outputs["cube_near"] + uniform * (outputs["cube_far"] - outputs["cube_near"])
            points = torch.where(
                hit[:, None], outputs["surface_points"].detach(), origins + depth[:, None] * directions
            )
            valid = ~mask & (outputs["cube_meets"] | hit)
            terms["freespace_loss"] = (config.freespace_loss_weight, False, points, valid)
        if config.occupancy_loss_weight > 0:
            # Object rays the model misses: a point at the true depth if known, else uniform in the unit cube.
            near, far, meets = ray_box_interval(origins, directions, UNIT_CUBE_HALF)
            depth = near + uniform * (far - near)
            if config.occupancy_at_depth and target_depth is not None:
                depth = torch.where(torch.isfinite(target_depth), target_depth, depth)
            points = origins + depth[:, None] * directions
            valid = mask & ~hit & meets
            terms["occupancy_loss"] = (config.occupancy_loss_weight, True, points, valid)
        if terms:  # the masks are disjoint: background rays / object rays
            values = list(terms.values())
            parts = self._logits_where([term[2] for term in values], latent, [term[3] for term in values])
            for (name, (weight, occupied, _, _)), (logits, kept) in zip(terms.items(), parts, strict=True):
                losses[name] = weight * occupancy_bce_loss(logits, occupied, kept, num_images)
        hit_index = outputs["hit_index"]
        if config.normal_loss_weight > 0 and len(hit_index) > 0:  # the size is known on the host: no sync
            surface = outputs["surface_points"][hit_index]
            hit_latent = None if latent is None else latent[hit_index]
            jitter = (torch.rand_like(surface) * 2 - 1) * config.normal_jitter
            field = lambda p: self.occupancy(p.reshape(-1, 6, 3), hit_latent).reshape(-1)  # noqa: E731
            losses["normal_loss"] = config.normal_loss_weight * normal_smoothness_loss(
                finite_difference_normals(field, surface),
                finite_difference_normals(field, surface + jitter),
                num_images,
            )
        return losses

    # ------------------------------------------------------------------------------------------ evaluation
    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        image = batch["image"].to(outputs["rgb"].device)[..., :3]
        rgb = outputs["rgb"]
        metrics = {"psnr": float(psnr(rgb, image)), "ssim": float(ssim(rgb, image))}
        if "mask" in batch:
            mask = batch["mask"].to(rgb.device).bool()
            hit = outputs["accumulation"][..., 0] > 0
            metrics["mask_iou"] = float((mask & hit).sum() / (mask | hit).sum().clamp_min(1))
        depth = colormaps.apply_depth_colormap(outputs["z_depth"], accumulation=outputs["accumulation"])
        images = {"img": torch.cat([image, rgb], dim=1), "depth": depth, "normals": outputs["normals"]}
        return metrics, images
