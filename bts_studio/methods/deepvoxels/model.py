"""DeepVoxels (Sitzmann, Thies, Heide, Niessner, Wetzstein, Zollhoefer, CVPR 2019) as a nerfstudio model.

A persistent ``C x G^3`` feature grid (the registered buffer ``deepvoxels``, saved in every checkpoint) represents one
object. A training step (``training_outputs``): source image -> feature extractor -> lifting into the grid
(``core.voxel_grid.lift_features``) -> GRU integration with the stored grid (detached: no backpropagation across
steps) -> the result overwrites the buffer. Rendering a camera (``render_grid``; the only thing that runs at test
time): grid -> 3D inpainting U-Net -> trilinear resampling into the camera's ``h x w x P`` frustum
(``core.voxel_grid.frustum_points`` / ``sample_grid``) -> occlusion net -> softmax over depth
(``visibility_weights``) -> depth map and collapsed features -> rendering net -> ``0.5 tanh`` colours in [-0.5, 0.5].

Outputs of ``get_outputs_for_camera`` (``[H, W, C]``): ``rgb`` in [0, 1]; ``depth``: ray distance of the expected
depth under the visibility weights; ``z_depth``: the same as camera z-depth; ``accumulation``: ones (the weights of
each ray sum to one by construction). Depth is computed at the frustum resolution and upsampled bilinearly.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Type, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.scene_box import OrientedBox
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils import colormaps
from torch import Tensor
from torch.nn import Parameter

from bts_studio.core.image_quality import psnr, ssim
from bts_studio.core.voxel_grid import (
    collapse_depth,
    expected_depth,
    frustum_depths,
    frustum_points,
    grid_coordinates,
    lift_features,
    ray_distance_scale,
    sample_grid,
    visibility_weights,
    voxel_centres,
)
from bts_studio.methods.common.cameras import cameras_to_opencv
from bts_studio.methods.deepvoxels.batch import DeepVoxelsTriplet
from bts_studio.methods.deepvoxels.networks import (
    FeatureExtractor,
    IntegrationNet,
    OcclusionNet,
    PatchDiscriminator,
    RenderingNet,
    UNet,
)

GAN_EPS = 1.0e-9
"""``losses.py`` writes the BCE terms as ``-log(x + 1e-9)``."""


def crop_border(images: Float[Tensor, "*batch H W"], border: int) -> Tensor:
    """Drop ``border`` pixels on each side of the last two dimensions (DeepVoxels' ``[5:-5, 5:-5]``)."""
    if border <= 0:
        return images
    return images[..., border:-border, border:-border]


@dataclass
class DeepVoxelsModelConfig(ModelConfig):
    """DeepVoxels; defaults are the official code's (classics.md B.1, B.2)."""

    _target: Type = field(default_factory=lambda: DeepVoxelsModel)
    """The model class this config builds."""
    grid_dim: int = 32
    """Voxels per side of the persistent grid (``--grid_dim``)."""
    num_grid_feats: int = 64
    """Features per voxel (``--num_grid_feats``)."""
    nf0: int = 64
    """Outermost width of the networks (``--nf0``); the rendering U-Net starts at ``8 nf0`` (capped at
    ``max_channels``) and outputs ``4 nf0``, the upsampling blocks have ``nf0`` channels."""
    feature_side: int = 64
    """Side of the feature map that is lifted and of the frustum that is rendered (``proj_image_dims``)."""
    feature_unet_nf0: int = 256
    """Outermost width of the feature extractor's 2D U-Net."""
    max_channels: int = 512
    """Width cap of the 2D U-Nets."""
    downsampling_nf0: int = 64
    """Width of the first downsampling block (doubling per block up to 4x)."""
    inpainting_num_down: int = 2
    """Levels of the 3D inpainting U-Net (width ``num_grid_feats`` up to ``4 num_grid_feats``)."""
    occlusion_nf: int = 4
    """Width of the occlusion network's 3D U-Net (``occnet_nf``)."""
    discriminator_ndf: int = 28
    """Width of the PatchGAN discriminator's first layer."""
    l1_weight: float = 200.0
    """Weight of the L1 image loss (``--l1_weight``)."""
    gan_weight: float = 1.0
    """Weight of the generator's adversarial loss (0 disables the discriminator's loss too)."""
    loss_border: int = 5
    """Pixels ignored on each side of the images in the losses."""
    eval_crop: int = 5
    """Pixels cropped on each side before PSNR/SSIM (the paper's 502x502 test images)."""


class DeepVoxelsModel(Model):
    """DeepVoxels: a persistent feature grid with learned lifting, integration, occlusion and rendering."""

    config: DeepVoxelsModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        config = self.config
        metadata = self.kwargs.get("metadata") or {}
        missing = [key for key in ("image_side", "grid_barycentre", "grid_scale", "near_plane") if key not in metadata]
        if missing:
            raise ValueError(
                f"deepvoxels needs {missing} in the dataset metadata; use the deepvoxels-data dataparser with the "
                "deepvoxels data manager"
            )
        self.image_side = int(metadata["image_side"])
        self.voxel_size = float(metadata["grid_scale"]) / config.grid_dim
        self.near_plane = float(metadata["near_plane"])
        self.num_planes = 2 * config.grid_dim  # "the diagonal of the grid" in the official code
        c, g = config.num_grid_feats, config.grid_dim
        barycentre = torch.as_tensor(metadata["grid_barycentre"], dtype=torch.float32).reshape(3)
        self.register_buffer("grid_barycentre", barycentre.clone())
        self.register_buffer("deepvoxels", torch.zeros(1, c, g, g, g))
        self.register_buffer("coord_volume", grid_coordinates(g)[None], persistent=False)
        self.register_buffer("depth_planes", frustum_depths(self.near_plane, self.voxel_size, self.num_planes), False)

        self.feature_extractor = FeatureExtractor(
            self.image_side,
            config.feature_side,
            c,
            config.downsampling_nf0,
            config.feature_unet_nf0,
            config.max_channels,
        )
        self.integration_net = IntegrationNet(c)
        self.inpainting_net = UNet(3, c + 3, c, c, config.inpainting_num_down, 4 * c)
        self.occlusion_net = OcclusionNet(c, config.occlusion_nf, config.feature_side, self.num_planes)
        self.rendering_net = RenderingNet(
            c,
            config.feature_side,
            self.image_side,
            unet_nf0=min(8 * config.nf0, config.max_channels),
            unet_out=4 * config.nf0,
            max_channels=config.max_channels,
            up_channels=config.nf0,
        )
        self.discriminator = PatchDiscriminator(config.discriminator_ndf)

    # ----------------------------------------------------------------------------------------------
    # parameters

    def generator_modules(self) -> List[torch.nn.Module]:
        return [
            self.feature_extractor,
            self.integration_net,
            self.inpainting_net,
            self.occlusion_net,
            self.rendering_net,
        ]

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        """Generator and discriminator are separate groups with their own Adam (see docs/deepvoxels.md)."""
        generator = [parameter for module in self.generator_modules() for parameter in module.parameters()]
        return {"deepvoxels": generator, "discriminator": list(self.discriminator.parameters())}

    # ----------------------------------------------------------------------------------------------
    # lifting and integration (training only)

    def feature_intrinsics(self, K: Float[Tensor, "B 3 3"]) -> Float[Tensor, "B 3 3"]:
        """Intrinsics of the ``feature_side`` map for image intrinsics of the ``image_side`` images."""
        scale = self.config.feature_side / self.image_side
        K = K.clone()
        K[:, :2] = K[:, :2] * scale
        return K

    def integrate(
        self, image: Float[Tensor, "1 3 H W"], K: Float[Tensor, "1 3 3"], w2c_opencv: Float[Tensor, "1 3 4"]
    ) -> Float[Tensor, "1 C G G G"]:
        """Lift the source view's features and fuse them into the stored grid; the buffer takes the new state
        (detached) and the returned grid keeps its graph for this step's losses."""
        features = self.feature_extractor(image - 0.5)
        centres = voxel_centres(self.config.grid_dim, self.voxel_size, self.grid_barycentre)
        observation, _ = lift_features(features, self.feature_intrinsics(K), w2c_opencv, centres)
        grid = self.integration_net(observation, self.deepvoxels.detach(), self.coord_volume)
        # A new tensor, not an in-place copy: the old state is saved for this step's backward.
        self.deepvoxels = grid.detach()
        return grid

    # ----------------------------------------------------------------------------------------------
    # rendering (training and test)

    def render_grid(
        self, grid: Float[Tensor, "1 C G G G"], K: Float[Tensor, "B 3 3"], c2w_opencv: Float[Tensor, "B 3 4"]
    ) -> Dict[str, Tensor]:
        """Render cameras (intrinsics of ``image_side`` square images) from a grid.

        Returns:
            ``rgb_signed`` ``[B, 3, S, S]`` in [-0.5, 0.5]; ``z_depth`` ``[B, 1, h, w]``;
            ``weights`` ``[B, 1, P, h, w]``.
        """
        b = K.shape[0]
        side = self.config.feature_side
        inpainted = self.inpainting_net(torch.cat([grid, self.coord_volume], dim=1))
        points = frustum_points(self.feature_intrinsics(K), c2w_opencv, self.depth_planes, side, side)
        frustum = sample_grid(inpainted.expand(b, -1, -1, -1, -1), points, self.grid_barycentre, self.voxel_size)
        weights = visibility_weights(self.occlusion_net(frustum))
        features = collapse_depth(frustum, weights)
        return {
            "rgb_signed": 0.5 * self.rendering_net(features),
            "z_depth": expected_depth(weights, self.depth_planes),
            "weights": weights,
        }

    def training_outputs(self, triplet: DeepVoxelsTriplet) -> Dict[str, Tensor]:
        """One DeepVoxels training forward: integrate the source, render the targets from the new grid."""
        grid = self.integrate(triplet.source_image, triplet.source_K, triplet.source_w2c)
        return self.render_grid(grid, triplet.target_K, triplet.target_c2w)

    @torch.no_grad()
    def render_camera(self, camera: Cameras) -> Dict[str, Tensor]:
        """Render one camera of any size from the stored grid; outputs ``[H, W, C]``.

        The camera's pixel grid is mapped affinely onto the model's ``image_side`` square (an exact change of pixel
        units), rendered there, and resized back to ``H x W`` (bilinear; identity for the training resolution).
        """
        K, c2w = cameras_to_opencv(camera[0:1] if camera.shape else camera)
        K, c2w = K.float().to(self.device), c2w[:, :3].float().to(self.device)
        height, width = int(camera.height.reshape(-1)[0]), int(camera.width.reshape(-1)[0])
        square = K.clone()
        square[:, 0] *= self.image_side / width
        square[:, 1] *= self.image_side / height
        rendered = self.render_grid(self.deepvoxels, square, c2w)
        rgb = (rendered["rgb_signed"] + 0.5).clamp(0.0, 1.0)
        side = self.config.feature_side
        feature_K = self.feature_intrinsics(square)
        distance = rendered["z_depth"] * ray_distance_scale(feature_K, side, side)[:, None]
        maps = {"rgb": rgb, "depth": distance, "z_depth": rendered["z_depth"]}
        outputs = {}
        for name, value in maps.items():
            if value.shape[-2:] != (height, width):
                value = F.interpolate(value, size=(height, width), mode="bilinear", align_corners=False)
            outputs[name] = value[0].permute(1, 2, 0)
        outputs["accumulation"] = torch.ones_like(outputs["depth"])
        return outputs

    def get_outputs(self, ray_bundle: Union[RayBundle, Cameras]) -> Dict[str, Union[torch.Tensor, List]]:
        """Whole-image rendering of the first camera of ``Cameras`` (DeepVoxels has no per-ray renderer)."""
        if not isinstance(ray_bundle, Cameras):
            raise TypeError("deepvoxels renders whole cameras from its grid, not ray bundles; pass Cameras")
        return dict(self.render_camera(ray_bundle))

    @torch.no_grad()
    def get_outputs_for_camera(self, camera: Cameras, obb_box: Optional[OrientedBox] = None) -> Dict[str, Tensor]:
        return self.render_camera(camera)

    # ----------------------------------------------------------------------------------------------
    # losses and metrics

    def generator_losses(self, outputs: Dict[str, Tensor], targets: Float[Tensor, "T 3 H W"]) -> Dict[str, Tensor]:
        """``l1_weight * L1`` and ``gan_weight * -log D(fake)``, averaged over the targets, both on the images with
        ``loss_border`` pixels dropped per side and in DeepVoxels' [-0.5, 0.5] colours (``run_deepvoxels.py``).

        The adversarial term runs the discriminator with DETACHED parameters (``torch.func.functional_call``): its
        gradient reaches the generator only, so one backward of the summed losses updates each network with its own
        objective (docs/deepvoxels.md, "GAN updates").
        """
        border = self.config.loss_border
        fake = crop_border(outputs["rgb_signed"], border)
        real = crop_border(targets - 0.5, border)
        losses = {"l1_loss": self.config.l1_weight * (fake - real).abs().mean()}
        if self.config.gan_weight > 0:
            frozen = {name: parameter.detach() for name, parameter in self.discriminator.named_parameters()}
            score = torch.func.functional_call(self.discriminator, frozen, (fake,))
            losses["gan_loss"] = self.config.gan_weight * -torch.log(score + GAN_EPS).mean()
        return losses

    def discriminator_loss(self, outputs: Dict[str, Tensor], targets: Float[Tensor, "T 3 H W"]) -> Tensor:
        """``0.5 (-log(1 - D(fake)) - log D(real))`` on DETACHED fakes: reaches the discriminator only. Same crop and
        colour space as :meth:`generator_losses`."""
        border = self.config.loss_border
        fake = self.discriminator(crop_border(outputs["rgb_signed"].detach(), border))
        real = self.discriminator(crop_border(targets - 0.5, border))
        return 0.5 * (-torch.log(1.0 - fake + GAN_EPS).mean() - torch.log(real + GAN_EPS).mean())

    def training_losses(self, outputs: Dict[str, Tensor], triplet: DeepVoxelsTriplet) -> Dict[str, Tensor]:
        """Every loss term of a training step; the trainer sums them into one backward."""
        losses = self.generator_losses(outputs, triplet.target_images)
        if self.config.gan_weight > 0:
            losses["discriminator_loss"] = self.discriminator_loss(outputs, triplet.target_images)
        return losses

    def get_metrics_dict(self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        prediction = outputs["rgb_signed"].detach() + 0.5
        target = batch["image"].to(prediction)
        mse = ((prediction - target) ** 2).mean().clamp_min(1e-10)
        return {"psnr": -10.0 * torch.log10(mse), "grid_norm": self.deepvoxels.norm()}

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        return self.generator_losses(outputs, batch["image"].to(outputs["rgb_signed"]))

    def image_metrics(self, prediction: Float[Tensor, "H W 3"], target: Float[Tensor, "H W 3"]) -> Dict[str, float]:
        """PSNR and SSIM (scikit-image's definitions) after cropping ``eval_crop`` pixels per side."""
        crop = self.config.eval_crop
        p = crop_border(prediction.permute(2, 0, 1), crop).permute(1, 2, 0)
        t = crop_border(target.to(prediction).permute(2, 0, 1), crop).permute(1, 2, 0)
        return {"psnr": float(psnr(p, t)), "ssim": float(ssim(p, t))}

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        prediction = outputs["rgb"]
        target = batch["image"][..., :3].to(prediction)
        images = {
            "img": torch.cat([target, prediction], dim=1),
            "depth": colormaps.apply_depth_colormap(outputs["depth"]),
        }
        return self.image_metrics(prediction, target), images
