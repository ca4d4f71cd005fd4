"""``bts-density``: Behind the Scenes (Wimbauer et al., CVPR 2023) as a nerfstudio model.

A single input image is encoded into a pixel-aligned feature map; the density of any 3D point comes from its
feature at the point's projection plus a positional encoding of its position in the input frustum
(``density_field.py``). There is no colour head: a sample's colour is read from other posed frames
("render frames" in training, the input image itself at inference) and the photometric loss compares the
volume-rendered colours with "loss frames" (``methods.bts.losses``).

Outputs (per ray): ``rgb`` (colours read from the first colour view; outside an image they take its border
value, as BTS's ``grid_sample(padding_mode="border")``), ``depth`` (expected distance along the unit ray),
``z_depth``, ``outside_source`` (weight mass outside the input frustum: where the render is guessed),
``occupancy_behind_surface`` (share of the 4 m behind the first surface with density > 0.5: what the field knows
beyond depth) and ``accumulation`` (1: the last sample terminates every ray). Which image conditions a render is
decided by ``methods/common/conditioning_rules.py``. Training adds ``rgb_views`` and ``invalid_mass`` per render frame,
and each ray's compositing ``weights`` and ``sample_distances`` (per sample).
"""

import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Type, Union

import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.scene_box import OrientedBox
from nerfstudio.model_components.renderers import RGBRenderer
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils import colormaps
from torch import Tensor
from torch.nn import Parameter

from bts_studio.core.depth_metrics import depth_metrics
from bts_studio.core.geometry import ray_distance_to_z_depth
from bts_studio.core.image_quality import psnr, ssim
from bts_studio.methods.bts.batch import BTSBatch
from bts_studio.methods.bts.conditioning import BTSConditioning
from bts_studio.methods.bts.density_field import BTSDensityField
from bts_studio.methods.bts.losses import (
    AUTOMASK_TIE_NOISE,
    automask_from_errors,
    automasked_pixels,
    discarded_pixels,
    identity_patches,
    invalid_views,
    masked_smoothness_loss,
    min_view_errors,
    min_view_photometric_loss,
    photometric_loss_from_errors,
    ray_distortion_loss,
)
from bts_studio.methods.bts.rendering import resolve_render_path
from bts_studio.methods.bts.sampler import DisparityLinearPointSampler
from bts_studio.methods.bts.sources import SourceBank, SourceView
from bts_studio.methods.common import deferred_warnings
from bts_studio.methods.common.cameras import camera_rays
from bts_studio.methods.common.conditioning_rules import choose_source
from bts_studio.methods.common.rendering import frame_chunk_size, render_in_chunks
from bts_studio.methods.common.source_selector import SCENE_KINDS, SourceSelector
from bts_studio.utils.cuda_graphs import GraphedInference

SOURCE_CACHE_SIZE = 4
"""Encoded source views kept for rendering (the viewer and ns-render re-use one source for many frames)."""


@dataclass
class BTSModelConfig(ModelConfig):
    """Behind the Scenes density field. Defaults are the official KITTI-360 configuration."""

    _target: Type = field(default_factory=lambda: BTSModel)
    enable_collider: bool = False
    """BTS samples between fixed near and far distances; nerfstudio's collider is not used."""
    eval_num_rays_per_chunk: int = 16384
    """Rays rendered per forward pass in get_outputs_for_camera (a full frame is rendered in chunks); on CUDA the
    least, see eval_chunk_memory_fraction."""
    eval_chunk_memory_fraction: float = 0.0
    """On CUDA, a full-frame render takes as many rays per pass as fit in this share of the free GPU memory (at
    RENDER_BYTES_PER_SAMPLE, methods/common/rendering.py): a 192x640 frame at 64 samples needs ~11 GiB and renders in
    one pass on a large GPU (fewer launches). 0 (default, until a GPU run measures the gain; a render during
    training would take memory from it) keeps eval_num_rays_per_chunk. Results do not depend on it (issue 17)."""
    resnet_layers: Literal[18, 34, 50] = 50
    """ResNet depth of the encoder (BTS: 50)."""
    feature_dim: int = 64
    """Channels of the pixel-aligned feature map (BTS KITTI-360: 64)."""
    decoder_channels: Tuple[int, ...] = (32, 32, 64, 128, 256)
    """Monodepth2 decoder widths per scale, each raised to at least feature_dim."""
    mlp_hidden_dim: int = 64
    """Hidden width of the density MLP (BTS: 64)."""
    num_freqs: int = 6
    """Positional-encoding frequencies (BTS: 6)."""
    freq_factor: float = 1.5
    """Lowest positional-encoding frequency; frequency k is freq_factor * 2^k (BTS: 1.5)."""
    near: float = 3.0
    """Sampling start along the unit ray and near plane of the inverse-depth code, metres (BTS: 3)."""
    far: float = 80.0
    """Sampling end along the unit ray and far plane of the inverse-depth code, metres (BTS: 80)."""
    num_samples: int = 64
    """Samples per ray, stratified and linear in disparity (BTS: 64; no fine pass)."""
    eval_stratified: bool = False
    """Jitter samples at evaluation too (BTS does). Off renders deterministically at bin centres."""
    terminate_last_sample: bool = True
    """Force the last sample's alpha to 1 so every ray ends by the far plane (BTS's hard_alpha_cap)."""
    flip_augmentation: bool = True
    """Encode the mirrored input image with probability 0.5 while training, mirroring the features back (BTS)."""
    photometric_weight: float = 2.0
    """Weight of the min-over-render-frames photometric loss. The official code adds its coarse loss and an identical
    'fine' copy (lambda 1 each), so 2 reproduces its objective exactly."""
    smoothness_weight: float = 1e-3
    """Weight of the edge-aware disparity smoothness (BTS: 1e-3, i.e. 5e-4 relative to one photometric term)."""
    distortion_weight: float = 0.0
    """Weight of mip-NeRF 360's distortion loss on the loss rays' compositing weights (``losses.ray_distortion_loss``,
    in BTS's disparity-linear sample space); 0 is BTS (no such term). Issue 18's opt-in: at trained models the loss
    rays that cross a car's translucent body pull density into the space behind it (docs/bts-density.md,
    "Occupancy behind occluders"); a compact weight distribution per ray opposes that. Mip-NeRF 360 uses 0.01. The term
    averages over every loss ray, discarded pixels included. Memory: nerfstudio's form builds ``[rays, S, S]``
    tensors, about 2.3 GiB more at the default 16 x 4096 rays x 64 samples. Raises ValueError if negative."""
    invalid_threshold: float = 0.9
    """A pixel is dropped from the loss when more than this share of its weight is invalid in every render frame;
    with ``valid_view_minimum`` a frame above it is also left out of that pixel's minimum."""
    valid_view_minimum: bool = False
    """Take each pixel's minimum photometric error only over the render frames where at most ``invalid_threshold``
    of its weight is invalid (``losses.invalid_views``). BTS lets every frame compete (its colours outside an image
    are border values). A deviation, off by default (issue 18, docs/benchmarks.md, thirteenth session): in the
    oracle it ranks the exact scene above a filled shadow behind the car on the one-car world, where BTS's rule
    ranks it below; on the street set it raised exact IE_rec (0.221 to 0.367, one seed) and lowered exact O_rec
    (0.839 to 0.666). The smoothness term and ``discarded_ratio`` keep BTS's discard rule; with ``automask`` the
    rendered minimum runs over the valid frames, the identity minimum over all of them."""
    automask: bool = False
    """Monodepth2's auto-masking (Godard et al. 2019, Sec. 3.3) on BTS's min over render frames: a pixel whose best
    un-warped render frame explains it at least as well as every rendered reprojection is dropped from the
    photometric loss (losses.automasked_pixels; the smoothness term keeps it, as in monodepth2). Off: as BTS's
    released configs (use_automasking false); on is a deviation (docs/bts-density.md, issue 18)."""
    decoder_param_group: bool = False
    """Train the Monodepth2 decoder in its own optimizer group "decoder" (learning rate and schedule from
    --optimizers.decoder) instead of in the "encoder" group with the ResNet; the density MLP has its own group
    "density_mlp" either way. Off (default): the groups of every earlier run, so their checkpoints resume
    unchanged; a checkpoint resumes only into a run with the same groups (issue 18: the decoder's and the MLP's
    learning rate is what a short run lacks, docs/benchmarks.md)."""
    imagenet_weights: Optional[Path] = None
    """torchvision ImageNet ResNet weights (.pth). Without it the torch hub cache is searched; else from scratch."""
    search_torch_hub_cache: bool = True
    """Look for torchvision's ImageNet weights in the torch hub cache (never downloads)."""
    default_source_index: int = 0
    """Train image that conditions renders whose camera names no source (ns-render without --camera-idx)."""
    depth_eval_crop: Literal["none", "garg", "eigen"] = "none"
    """Crop for the depth metrics (BTS's KITTI-360 evaluation uses none; KITTI Eigen uses garg)."""
    depth_eval_max: float = 80.0
    """Depth cap of the depth metrics, metres (KITTI protocol: 80)."""
    image_eval_border_crop: float = 0.05
    """Share of the image cut from each side before PSNR/SSIM (BTS's novel-view evaluation: 5%)."""
    fast_path: Literal["auto", "twin", "projected", "triton"] = "auto"
    """How the density MLP meets the gathered features (docs/benchmarks.md). twin: BTS's computation as written
    (gather 64 channels per sample, concatenate the positional encoding, 103->64->1 MLP). projected: exactly equal
    algebra, the first layer's feature part applied to the feature map once (1x1) and that map gathered. triton:
    fused GPU kernels for forward (gather + encoding + MLP + softplus) and backward (a kernel that fails warns once and
    falls back). auto: triton on CUDA (2.3x faster than the twin per training step's density on an H200, 5x per render
    pass), the twin on the CPU."""
    encoder_precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Encoder arithmetic on CUDA: bf16 runs the ResNet and decoder under bf16 autocast in channels-last layout
    (features come out fp32); fp32 follows torch's TF32 flags. auto: bf16 for training steps, fp32 for inference
    (the depth-agreement bar with the fp32 twin), and fp32 throughout when the density runs the twin (fast_path twin,
    or auto without Triton). The training batch's encoder took 52.5 ms fp32 and 29.7 ms bf16 on an H200
    (docs/benchmarks.md). The CPU always runs fp32."""
    cuda_graphs: bool = True
    """On CUDA, replay inference (no gradients, eval mode) as CUDA graphs: the fp32 encoder's forward and each
    render pass of a full frame (the last pass padded to the pass size, so one graph serves every frame size). The
    same kernels without Python's launch cost (issue 17: the encoder 8.5 -> 1.9 ms per 192x640 image on an H200).
    Training and the CPU run eagerly."""
    cuda_graphs_training: bool = True
    """On CUDA, replay the bf16 encoder's forward and backward of each training step as CUDA graphs
    (``utils/cuda_graphs.GraphedTraining``; the same kernels, captured on the first step and again when a shape or
    a parameter's memory changes; BatchNorm's statistics are updated once per step as without graphs). The bf16
    training step is bound by the host issuing ~1,000 ops (issue 17): on an H200 the step took 40.4-45.7 ms with
    the graphs against 46.5-56.9 ms without, and three Adam steps with and without them gave bit-identical features,
    gradients and weights (docs/benchmarks.md, twelfth session). Eager under several GPUs, while a parameter holds
    a gradient, and for the fp32 encoder (``encoder_precision`` fp32, or the twin density)."""
    cudnn_benchmark: bool = False
    """Set torch.backends.cudnn.benchmark (importing nerfstudio's train script turns it on). Off: autotuning costs
    ~30 s on the first step and every new chunk shape, and raised inference memory to ~10 GiB (issue 17)."""


class BTSModel(Model):
    """Single-view density field conditioned on an encoded input image."""

    config: BTSModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        cfg = self.config
        if cfg.distortion_weight < 0:  # a negative weight would reward spreading weight along the rays
            raise ValueError(f"distortion_weight must be 0 (off, BTS) or positive, got {cfg.distortion_weight}")
        self.net = BTSDensityField(
            num_layers=cfg.resnet_layers,
            feature_dim=cfg.feature_dim,
            decoder_channels=tuple(cfg.decoder_channels),
            hidden_dim=cfg.mlp_hidden_dim,
            num_freqs=cfg.num_freqs,
            freq_factor=cfg.freq_factor,
            code_near=cfg.near,
            code_far=cfg.far,
            fast_path=cfg.fast_path,
            encoder_precision=cfg.encoder_precision,
            cuda_graphs=cfg.cuda_graphs,
            cuda_graphs_training=cfg.cuda_graphs_training,
        )
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark  # deliberately, whatever was imported before
        # "training from scratch" is only true for ns-train; viewing and rendering load a checkpoint afterwards.
        self._training_warnings: List[warnings.WarningMessage] = []
        with deferred_warnings.collect(self._training_warnings):
            self.net.encoder.load_imagenet_weights(cfg.imagenet_weights, cfg.search_torch_hub_cache)
        self.source_selector: Optional[SourceSelector] = None
        self.graphed_render_pass = GraphedInference(self._render_pass, self, max_graphs=4)
        """A full frame's render passes replayed as a CUDA graph (``cuda_graphs``; eager on the CPU)."""
        self.sampler = DisparityLinearPointSampler(
            cfg.num_samples, cfg.near, cfg.far, eval_stratified=cfg.eval_stratified
        )
        # Kept for nerfstudio's get_rgba_image; every ray is opaque, so the background never shows.
        self.renderer_rgb = RGBRenderer(background_color="black")
        self._source_bank: Optional[SourceBank] = None
        self._source_cache: "OrderedDict[Tuple[str, int], SourceView]" = OrderedDict()
        self._source_lock = threading.Lock()

    # ----------------------------------------------------------------------------------------------- parameters
    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        """``encoder`` (ResNet and decoder, BTS's single group) and ``density_mlp``; with ``decoder_param_group`` the
        decoder moves from ``encoder`` to its own ``decoder`` group."""
        deferred_warnings.emit(self._training_warnings)  # only the trainer asks for parameter groups
        encoder = self.net.encoder
        if not self.config.decoder_param_group:
            return {"encoder": list(encoder.parameters()), "density_mlp": list(self.net.mlp_coarse.parameters())}
        return {
            "encoder": list(encoder.encoder.parameters()),
            "decoder": list(encoder.decoder.parameters()),
            "density_mlp": list(self.net.mlp_coarse.parameters()),
        }

    # ------------------------------------------------------------------------------------------------- sources
    def attach_source_bank(self, bank: SourceBank) -> None:
        """Give the model read access to dataset images (not saved in checkpoints)."""
        self._source_bank = bank
        self.source_selector = SourceSelector("bts-density", bank.datasets, **SCENE_KINDS["street"])
        self.forget_sources()

    def forget_sources(self) -> None:
        """Drop cached encodings; call whenever the weights change."""
        with self._source_lock:
            self._source_cache.clear()

    def encode_view(self, image: Tensor, K: Tensor, c2w_opencv: Tensor) -> SourceView:
        """Encode one image ``[3, H, W]`` in [0, 1] with pixel ``K`` and OpenCV ``c2w`` ``[4, 4]``."""
        assert image.dim() == 3 and image.shape[0] == 3, f"image must be [3, H, W], got {tuple(image.shape)}"
        image = image.to(self.device, torch.float32)
        was_training = self.net.training
        if was_training:  # walking the modules costs ~0.5 ms of host time per image: only when the mode changes
            self.net.eval()  # a single image must never update BatchNorm statistics (the viewer renders mid-training)
        with torch.no_grad():
            features = self.net.encode(image[None])[0]
        if was_training:
            self.net.train()
        return SourceView(
            features=features,
            image=image,
            K=K.to(self.device, torch.float32),
            c2w=c2w_opencv.to(self.device, torch.float32),
            height=int(image.shape[-2]),
            width=int(image.shape[-1]),
        )

    def source_view(self, split: str, index: int) -> SourceView:
        """The encoded image ``index`` of ``split`` (``"train"`` or ``"test"``), cached."""
        key = (split, int(index))
        with self._source_lock:
            if key in self._source_cache:
                self._source_cache.move_to_end(key)
                return self._source_cache[key]
        if self._source_bank is None:
            raise RuntimeError(
                "bts-density renders condition on a dataset image, but this model has no source bank; "
                "build it through the pipeline (BTSPipeline attaches one) or call render_camera(camera, source)"
            )
        source = self.encode_view(*self._source_bank.view_inputs(split, int(index)))
        with self._source_lock:
            self._source_cache[key] = source
            while len(self._source_cache) > SOURCE_CACHE_SIZE:
                self._source_cache.popitem(last=False)
        return source

    def resolve_source(self, camera: Union[Cameras, RayBundle]) -> Tuple[str, int]:
        """Which dataset image conditions a render of ``camera`` or of a ray bundle generated from one (nerfstudio
        copies camera metadata onto its rays): the rules of ``methods/common/conditioning_rules.py``."""
        if self.source_selector is None:  # a bare model without datasets: no nearest-image rule, the config's default
            choice = choose_source(
                camera.metadata, None, None, nearest=False, default_index=self.config.default_source_index
            )
        else:
            choice = self.source_selector.choose(camera)
        return choice.split, choice.index

    # ----------------------------------------------------------------------------------------------- rendering
    def condition_on_groups(self, batch: BTSBatch) -> BTSConditioning:
        """Encode the input frame of every frame group of a batch (see ``BTSDataManager.next_train``)."""
        flip = self.training and self.config.flip_augmentation and bool(torch.rand(()) < 0.5)
        return BTSConditioning(
            features=self.net.encode(batch.input_image, flip=flip),
            source_K=batch.input_K,
            source_w2c=batch.input_w2c,
            colour_images=batch.render_images,
            colour_K=batch.render_K,
            colour_w2c=batch.render_w2c,
            colour_missing=batch.render_missing,
            with_loss_outputs=True,
        )

    def get_outputs(self, ray_bundle: Union[RayBundle, Cameras, BTSBatch]) -> Dict[str, Union[Tensor, List]]:
        """Render a :class:`BTSBatch` (training and eval losses: its input frames are encoded here, inside forward,
        so that DistributedDataParallel sees the encoder's use), or a ray bundle / camera conditioned on the dataset
        image its metadata names (``resolve_source``)."""
        if isinstance(ray_bundle, BTSBatch):
            return self.render_rays(ray_bundle.rays, self.condition_on_groups(ray_bundle))
        if isinstance(ray_bundle, Cameras):
            return self.get_outputs_for_camera(ray_bundle)
        return self.render_rays_from_source(ray_bundle, self.source_view(*self.resolve_source(ray_bundle)))

    def render_rays(self, ray_bundle: RayBundle, conditioning: BTSConditioning) -> Dict[str, Tensor]:
        """Render rays ``[B, ...]`` whose leading dimension indexes ``conditioning``'s elements; every output is
        ``[B, ..., C]`` (``render_ray_tensors`` on the bundle's origins, directions and ``directions_norm``)."""
        shape = tuple(ray_bundle.shape)
        batch = conditioning.batch_size
        assert shape[0] == batch, f"rays {shape} must lead with the {batch} conditioning elements"
        norms = ray_bundle.metadata.get("directions_norm")
        outputs = self.render_ray_tensors(
            ray_bundle.origins.reshape(batch, -1, 3),
            ray_bundle.directions.reshape(batch, -1, 3),
            conditioning,
            None if norms is None else norms.reshape(batch, -1, 1),
        )
        return {name: value.reshape(*shape, *value.shape[2:]) for name, value in outputs.items()}

    def render_ray_tensors(
        self,
        origins: Float[Tensor, "B R 3"],
        directions: Float[Tensor, "B R 3"],
        conditioning: BTSConditioning,
        directions_norm: Optional[Float[Tensor, "B R 1"]] = None,
    ) -> Dict[str, Tensor]:
        """Render ``R`` rays per conditioning element from plain tensors (unit ``directions``, world frame); every
        output is ``[B, R, C]``. ``z_depth`` needs ``directions_norm`` (nerfstudio's camera-z norm of each ray).

        The whole render (sampler, field, colours, compositing) without nerfstudio's ``RayBundle`` / ``RaySamples``
        bookkeeping, whose per-call slicing and expansion of every field were most of a chunk's ops (issue 17,
        docs/benchmarks.md). Sample points are ``origin + direction * t`` as ``Frustums.get_start_positions``
        computes them, so results are bit-identical to rendering through ``RaySamples``.
        """
        assert origins.dim() == 3 and origins.shape[-1] == 3, f"origins must be [B, R, 3], got {tuple(origins.shape)}"
        assert directions.shape == origins.shape, f"directions {tuple(directions.shape)} vs {tuple(origins.shape)}"
        batch, rays_per_element = origins.shape[:2]
        assert batch == conditioning.batch_size, f"{batch} ray sets for {conditioning.batch_size} conditionings"
        num_rays = batch * rays_per_element
        origins, directions = origins.reshape(num_rays, 3), directions.reshape(num_rays, 3)
        _, distances = self.sampler.sample_distances(num_rays, origins.device, origins.dtype)  # [B * R, S]
        render = resolve_render_path(self.net, origins.device)  # the fused kernels on CUDA at inference
        outputs = render(self.net, origins, directions, distances, conditioning, self.config.terminate_last_sample)
        if directions_norm is not None:
            outputs["z_depth"] = ray_distance_to_z_depth(outputs["depth"], directions_norm.reshape(num_rays, 1))
        return {name: value.reshape(batch, rays_per_element, *value.shape[1:]) for name, value in outputs.items()}

    def _render_pass(
        self,
        origins: Tensor,
        directions: Tensor,
        directions_norm: Tensor,
        features: Tensor,
        source_K: Tensor,
        source_w2c: Tensor,
        colour_images: Tensor,
        colour_K: Tensor,
        colour_w2c: Tensor,
    ) -> Dict[str, Tensor]:
        """``render_ray_tensors`` with the conditioning as plain tensors (what a CUDA graph captures)."""
        conditioning = BTSConditioning(features, source_K, source_w2c, colour_images, colour_K, colour_w2c)
        return self.render_ray_tensors(origins, directions, conditioning, directions_norm)

    def render_rays_from_source(self, ray_bundle: RayBundle, source: SourceView) -> Dict[str, Tensor]:
        """Render rays of any shape conditioned on one source view; outputs have the bundle's shape."""
        shape = tuple(ray_bundle.shape)
        outputs = self.render_rays(ray_bundle.reshape((1, -1)), source.as_conditioning())
        return {name: value[0].reshape(*shape, *value.shape[2:]) for name, value in outputs.items()}

    @torch.no_grad()
    def get_outputs_for_camera(self, camera: Cameras, obb_box: Optional[OrientedBox] = None) -> Dict[str, Tensor]:
        """Render a camera conditioned on the dataset image its metadata names (``resolve_source``)."""
        return self.render_camera(camera, self.source_view(*self.resolve_source(camera)), obb_box)

    @torch.no_grad()
    def render_camera(
        self, camera: Cameras, source: SourceView, obb_box: Optional[OrientedBox] = None
    ) -> Dict[str, Tensor]:
        """Render one camera's full image conditioned on ``source``; outputs ``[H, W, C]`` on the camera's device.

        The frame's rays are generated once (``camera_rays``: on the camera's device, one host sync for the image
        size) and moved to the model's device as plain tensors, the conditioning is built once, and
        ``render_ray_tensors`` runs per chunk of ``frame_chunk_size`` rays (the whole frame in one pass when the GPU
        has the memory): issue 17's launch-bound inference path (docs/benchmarks.md). On CUDA with ``cuda_graphs``
        each pass replays one CUDA graph of ``_render_pass`` (the same kernels; the last pass is padded with copies
        of its last ray, so frames of every size share the graph; frames smaller than one pass pad to a power of
        two). ``obb_box`` does not crop: BTS samples between fixed near and far distances.
        """
        rays = camera_rays(camera, obb_box)
        height, width = rays.origins.shape[:2]
        num_rays = height * width
        origins = rays.origins.reshape(1, num_rays, 3).to(self.device)
        directions = rays.directions.reshape(1, num_rays, 3).to(self.device)
        norms = rays.directions_norm.reshape(1, num_rays, 1).to(self.device)
        conditioning = source.as_conditioning()
        chunk = frame_chunk_size(
            self.config.eval_num_rays_per_chunk,
            num_rays,
            self.config.num_samples,
            self.device,
            self.config.eval_chunk_memory_fraction,
        )
        tensors = (conditioning.features, conditioning.source_K, conditioning.source_w2c)
        tensors += (conditioning.colour_images, conditioning.colour_K, conditioning.colour_w2c)
        graphs = self.net.cuda_graphs and conditioning.colour_missing is None  # the one flag, set from the config
        graphs = graphs and self.graphed_render_pass.applies(origins, *tensors)

        def render(start: int, end: int) -> Dict[str, Tensor]:
            rays_in_pass = (origins[:, start:end], directions[:, start:end], norms[:, start:end])
            if not graphs:
                outputs = self.render_ray_tensors(*rays_in_pass[:2], conditioning, rays_in_pass[2])
                return {name: value[0] for name, value in outputs.items()}
            # Repeat the last ray so that passes of any frame size (the viewer changes it as the camera moves) share
            # one captured shape; a frame smaller than a pass pads only to a power of two >= 4096 rays.
            pad = min(chunk, max(4096, 1 << (num_rays - 1).bit_length())) - (end - start)
            if pad:
                rays_in_pass = tuple(torch.cat([t, t[:, -1:].expand(-1, pad, -1)], dim=1) for t in rays_in_pass)
            outputs = self.graphed_render_pass(*rays_in_pass, *tensors)
            return {name: value[0, : end - start] for name, value in outputs.items()}

        outputs = render_in_chunks(render, num_rays, chunk, rays.origins.device)
        return {name: value.view(height, width, -1) for name, value in outputs.items()}

    # ---------------------------------------------------------------------------------------------------- loss
    def _patches(self, outputs: Dict[str, Tensor], batch: BTSBatch):
        """Rendered and target patches ``[G * P, ...]`` in the layout of ``methods.bts.losses``."""
        g, num_patches, p = batch.num_groups, batch.num_patches, batch.patch_size
        rgb_views = outputs["rgb_views"]  # [G, P, p, p, V, 3]
        num_views = rgb_views.shape[-2]
        rendered = rgb_views.reshape(g * num_patches, p, p, num_views, 3).permute(0, 3, 4, 1, 2)
        target = batch.image.reshape(g * num_patches, p, p, 3).permute(0, 3, 1, 2)
        masses = outputs["invalid_mass"].reshape(g * num_patches, p, p, num_views).permute(0, 3, 1, 2)
        distance = outputs["depth"].reshape(g * num_patches, p, p)
        view_missing = None
        if batch.render_missing is not None:
            view_missing = batch.render_missing[:, None].expand(g, num_patches, num_views).reshape(-1, num_views)
        return rendered, target, masses, distance, view_missing

    def _identity_patches(self, batch: BTSBatch, rendered: Tensor) -> Tensor:
        """The render frames read un-warped at the loss pixels, in ``rendered``'s layout (``automask`` on)."""
        if batch.patch_pixels is None:
            raise ValueError("automask needs the batch's patch_pixels (BTSDataManager fills them); this batch has none")
        return identity_patches(batch.render_images, batch.patch_pixels).reshape(rendered.shape)

    def get_metrics_dict(self, outputs, batch: BTSBatch) -> Dict[str, Tensor]:
        if "invalid_mass" not in outputs:
            return {}
        rendered, target, masses, distance, view_missing = self._patches(outputs, batch)
        metrics = {
            "discarded_ratio": discarded_pixels(masses, self.config.invalid_threshold).float().mean(),
            "mean_depth": distance.mean(),
        }
        if self.config.automask:  # without the tie noise: the metric draws no random numbers
            with torch.no_grad():
                identity = self._identity_patches(batch, rendered)
                automasked = automasked_pixels(
                    rendered, identity, target, view_missing, tie_noise=0.0, view_invalid=self._view_invalid(masses)
                )
                metrics["automasked_ratio"] = automasked.float().mean()
        return metrics

    def _view_invalid(self, masses: Tensor) -> Optional[Tensor]:
        """``[P, V, h, w]`` views excluded from each pixel's minimum (``valid_view_minimum``), else None (BTS)."""
        return invalid_views(masses, self.config.invalid_threshold) if self.config.valid_view_minimum else None

    def get_loss_dict(self, outputs, batch: BTSBatch, metrics_dict=None) -> Dict[str, Tensor]:
        rendered, target, masses, distance, view_missing = self._patches(outputs, batch)
        discard = discarded_pixels(masses, self.config.invalid_threshold)
        view_invalid = self._view_invalid(masses)
        if self.config.automask:  # monodepth2 masks the photometric term only, not the smoothness
            # A pixel without a valid view has the largest float as its best error, so the mask always drops it.
            best = min_view_errors(rendered, target, view_missing, view_invalid)  # the mask and the loss read it
            best_identity = min_view_errors(self._identity_patches(batch, rendered), target, view_missing)
            automasked = automask_from_errors(best, best_identity, view_missing, AUTOMASK_TIE_NOISE)
            photometric = photometric_loss_from_errors(best, discard | automasked, view_missing)
        else:
            photometric = min_view_photometric_loss(rendered, target, discard, view_missing, view_invalid)
        smoothness = masked_smoothness_loss(target, distance, discard)
        losses = {
            "photometric_loss": self.config.photometric_weight * photometric,
            "smoothness_loss": self.config.smoothness_weight * smoothness,
        }
        if self.config.distortion_weight > 0:  # not BTS: issue 18's opt-in
            weights, distances = outputs["weights"], outputs["sample_distances"]
            num_samples = weights.shape[-1]
            losses["distortion_loss"] = self.config.distortion_weight * ray_distortion_loss(
                weights.reshape(-1, num_samples), distances.reshape(-1, num_samples), self.config.near, self.config.far
            )
        return losses

    # ------------------------------------------------------------------------------------------------- metrics
    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Any]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """PSNR/SSIM (scikit-image definitions, border-cropped) of ``rgb`` against ``batch["image"]`` and, when the
        batch holds ``lidar_depth``, the KITTI depth metrics of ``z_depth``."""
        image = batch["image"][..., :3].to(outputs["rgb"].device)
        rgb = outputs["rgb"]
        height, width = rgb.shape[:2]
        dy, dx = (
            int(round(height * self.config.image_eval_border_crop)),
            int(round(width * self.config.image_eval_border_crop)),
        )
        crop = (slice(dy, height - dy), slice(dx, width - dx))
        metrics: Dict[str, float] = {
            "psnr": float(psnr(rgb[crop], image[crop])),
            "ssim": float(ssim(rgb[crop], image[crop])),
        }
        z_depth = outputs.get("z_depth", outputs["depth"])
        if "lidar_depth" in batch:
            depth = depth_metrics(
                z_depth[..., 0],
                batch["lidar_depth"].to(z_depth.device).reshape(height, width),
                max_depth=self.config.depth_eval_max,
                crop=self.config.depth_eval_crop,
            )
            metrics.update(depth or {})
        # Coloured by inverse depth between near and far (as BTS's figures): near structure stays readable.
        disparity = (1.0 / z_depth.clamp_min(1e-3) - 1.0 / self.config.far) / (
            1.0 / self.config.near - 1.0 / self.config.far
        )
        depth_image = colormaps.apply_colormap(disparity.clamp(0, 1), colormaps.ColormapOptions(colormap="turbo"))
        images = {
            "img": torch.cat([image, rgb], dim=1),
            "depth": depth_image,
            "accumulation": colormaps.apply_colormap(outputs["accumulation"]),
        }
        return metrics, images
