"""The BTS density field: encoder features at a point's projection + positional encoding -> tiny MLP -> softplus.

Mirrors ``BTSNet`` of the official code (``models/bts/model/models_bts.py``) with ``code_mode: z``,
``inv_z: true``, ``learn_empty: false``, ``empty_empty: false``, ``sample_color: true`` and ``mlp_coarse`` a
``ResnetFC`` with zero blocks: ``lin_in`` (103 -> 64), ReLU, ``lin_out`` (64 -> 1). The MLP input is
``[feature (64), PE(x, y, z_code) (39)]`` in that order. Points outside the input frustum read border features
and keep their density (BTS does not zero it); they are flagged as invalid for the loss.

Speed (docs/benchmarks.md, issue 17): ``fast_path`` picks how the MLP meets the gathered features
(``methods/bts/triton_density.py``: the unfused twin, the exact projected-map fusion, or the fused Triton kernel)
and ``encoder_precision`` whether the ResNet encoder runs under bf16 autocast in channels-last layout (CUDA only;
auto: training steps only; its output features are fp32 either way). ``cuda_graphs`` replays the fp32 encoder's
inference forward (CUDA, no grad, eval mode) as a CUDA graph: the same kernels without the per-layer launch cost;
``cuda_graphs_training`` replays the bf16 encoder's training forward and backward the same way.
"""

import warnings
from typing import Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from bts_studio.core.feature_sampling import inverse_depth_code, outside_frustum, project_to_views
from bts_studio.core.fused_density import density_projected, density_unfused
from bts_studio.core.positional_encoding import encoding_width
from bts_studio.methods.bts.encoder import BTSEncoder
from bts_studio.methods.bts.triton_density import FAST_PATHS, density_triton, resolve_fast_path
from bts_studio.utils.cuda_graphs import GraphedInference, GraphedTraining

EncoderPrecision = Literal["auto", "fp32", "bf16"]


class DensityMLP(nn.Module):
    """``lin_out(relu(lin_in(x)))`` with Kaiming-normal (fan-in) weights and zero biases, as ``ResnetFC``."""

    def __init__(self, in_dim: int, hidden_dim: int = 64) -> None:
        super().__init__()
        self.lin_in = nn.Linear(in_dim, hidden_dim)
        self.lin_out = nn.Linear(hidden_dim, 1)
        for layer in (self.lin_in, self.lin_out):
            nn.init.kaiming_normal_(layer.weight, a=0, mode="fan_in")
            nn.init.zeros_(layer.bias)

    def forward(self, x: Float[Tensor, "*batch D"]) -> Float[Tensor, "*batch 1"]:
        return self.lin_out(torch.relu(self.lin_in(x)))


class BTSDensityField(nn.Module):
    """Encoder plus density MLP. ``encode`` once per input image, then query ``density`` at any points."""

    def __init__(
        self,
        num_layers: int = 50,
        feature_dim: int = 64,
        decoder_channels: tuple = (32, 32, 64, 128, 256),
        hidden_dim: int = 64,
        num_freqs: int = 6,
        freq_factor: float = 1.5,
        code_near: float = 3.0,
        code_far: float = 80.0,
        fast_path: str = "auto",
        encoder_precision: EncoderPrecision = "auto",
        cuda_graphs: bool = True,
        cuda_graphs_training: bool = True,
    ) -> None:
        super().__init__()
        if fast_path not in FAST_PATHS:
            raise ValueError(f"fast_path must be one of {FAST_PATHS}, got {fast_path!r}")
        if encoder_precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"encoder_precision must be auto, fp32 or bf16, got {encoder_precision!r}")
        self.fast_path = fast_path
        self.encoder_precision = encoder_precision
        self.triton_error: Exception | None = None
        """Set when the Triton kernel failed once (e.g. did not compile); later calls use the projected path."""
        self.encoder = BTSEncoder(num_layers, feature_dim, decoder_channels)
        self.cuda_graphs = cuda_graphs
        self.graphed_encoder = GraphedInference(self.encoder, self.encoder)
        """The fp32 encoder's inference forward replayed as a CUDA graph (``utils/cuda_graphs.py``)."""
        self.cuda_graphs_training = cuda_graphs_training
        self.graphed_training_encoder = GraphedTraining(self._bf16_channels_last_encoder, self.encoder)
        """The bf16 encoder's training forward and backward replayed as CUDA graphs (``cuda_graphs_training``)."""
        self.num_freqs = num_freqs
        self.freq_factor = freq_factor
        self.code_near = code_near
        self.code_far = code_far
        self.mlp_coarse = DensityMLP(feature_dim + encoding_width(3, num_freqs), hidden_dim)

    def encode(self, images: Float[Tensor, "B 3 H W"], flip: bool = False) -> Float[Tensor, "B C H W"]:
        """Feature maps of images in [0, 1]. ``flip`` encodes the mirrored image and mirrors the features back
        (BTS's flip augmentation: ray geometry is untouched)."""
        if flip:
            return torch.flip(self._run_encoder(torch.flip(images, dims=(-1,))), dims=(-1,))
        return self._run_encoder(images)

    def uses_bf16_encoder(self, device: torch.device) -> bool:
        """Whether this encoder call runs under bf16 autocast in channels-last layout.

        ``encoder_precision`` bf16: always on CUDA; fp32: never; auto: on CUDA for training steps (module in
        training mode, gradients on) unless the density runs the twin (``fast_path`` twin, or auto without Triton).
        Inference under auto stays fp32 (replayed as a CUDA graph), inside the depth-agreement bar with the fp32
        twin. The CPU always runs fp32, so CPU results do not depend on this setting. Why auto trains in bf16: the
        training batch's encoder forward + backward took 52.5 ms fp32 and 29.7 ms bf16 on an H200 once the padding
        kept the channels-last layout (docs/benchmarks.md, eleventh session)."""
        if device.type != "cuda" or self.encoder_precision == "fp32":
            return False
        if self.encoder_precision == "bf16":
            return True
        if not (self.training and torch.is_grad_enabled()):
            return False
        return resolve_fast_path(self.fast_path, device) is not density_unfused

    def _run_encoder(self, images: Tensor) -> Tensor:
        if not self.uses_bf16_encoder(images.device):
            # Inference on CUDA (no grad, eval mode) replays a CUDA graph; anything else runs the module itself.
            return self.graphed_encoder(images) if self.cuda_graphs else self.encoder(images)
        if self.cuda_graphs_training:
            return self.graphed_training_encoder(images)
        return self._bf16_channels_last_encoder(images)

    def _bf16_channels_last_encoder(self, images: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B C H W"]:
        """The encoder under bf16 autocast on a channels-last input; fp32 channels-last features."""
        # A channels-last input makes every convolution channels-last (cuDNN's bf16 kernels are NHWC; NCHW would
        # cost a conversion per layer); the fp32 weights keep their layout, so that the fp32 inference path and its
        # CUDA graph stay as they are, and cuDNN converts the small bf16 weight copies that autocast makes anyway.
        # No cast cache: a CUDA-graph capture needs it off, and no weight is used twice, so nothing changes.
        with torch.autocast(images.device.type, dtype=torch.bfloat16, cache_enabled=False):
            features = self.encoder(images.contiguous(memory_format=torch.channels_last))
        # fp32 and still channels-last: the Triton path's projected map and its backward read that layout in place
        # (an NCHW copy here and back cost ~3 ms per training step on an H200).
        return features.float()

    def density(
        self,
        points: Float[Tensor, "B N 3"],
        features: Float[Tensor, "B C H W"],
        K: Float[Tensor, "B 3 3"],
        w2c_opencv: Float[Tensor, "B 3 4"],
    ) -> tuple[Float[Tensor, "B N"], Bool[Tensor, "B N"]]:
        """Density at world points, conditioned on the encoded input view of each batch element.

        Args:
            points: world points (nerfstudio world, metres for KITTI-360).
            features: ``encode`` output; its size is the input image size that ``K`` refers to.
            K: input-view intrinsics in nerfstudio pixel units.
            w2c_opencv: input-view world-to-camera pose, OpenCV axes.

        Returns:
            ``sigma >= 0`` (softplus) and ``outside``: the point is outside the input view's frustum.
        """
        height, width = features.shape[-2:]
        xy, z = project_to_views(points, K[:, None], w2c_opencv[:, None], height, width)
        xy, z = xy[:, 0], z[:, 0]
        code = torch.cat([xy, inverse_depth_code(z, self.code_near, self.code_far)[..., None]], dim=-1)
        mlp = self.mlp_coarse
        density_fn = resolve_fast_path(self.fast_path, features.device)
        if density_fn is density_triton and self.triton_error is not None:
            density_fn = density_projected
        args = (features, xy, code, mlp.lin_in.weight, mlp.lin_in.bias, mlp.lin_out.weight, mlp.lin_out.bias)
        try:
            sigma = density_fn(*args, self.num_freqs, self.freq_factor)
        except Exception as error:  # a kernel that does not compile on this GPU/driver must not end a run
            if density_fn is not density_triton:
                raise
            self.triton_error = error
            warnings.warn(
                f"bts-density: the Triton density kernel failed ({error!r}); using the projected path", stacklevel=2
            )
            sigma = density_projected(*args, self.num_freqs, self.freq_factor)
        return sigma, outside_frustum(xy, z)
