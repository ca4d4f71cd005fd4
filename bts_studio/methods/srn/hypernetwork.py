"""SRN's hypernetwork: a latent code becomes the weights of the scene function phi.

``HyperFC`` owns one small MLP per layer of phi (``HyperLinear``), each mapping the code z (256) through
256 -> 256 -> (in * out + out) values: the weight matrix ``[out, in]`` (row-major, first ``in * out``
values) and the bias (last ``out`` values). Its last layer is Kaiming-initialised and scaled by 0.1 so the
first predicted networks are tame. The predicted phi (``PredictedMLP``) applies each layer as a batched
matmul (one weight set per code), then a LayerNorm **without** affine parameters and a ReLU, for every
layer including the last (SRN's ``outermost_linear=False``). Sources: classics.md A.1.
"""

from typing import List, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from bts_studio.methods.srn.mlp import LayerNormMLP

LAST_HYPER_LAYER_SCALE = 0.1
"""SRN's ``last_hyper_layer_init``: Kaiming-normal, then multiplied by this."""


def batch_linear(
    x: Float[Tensor, "U R I"], weight: Float[Tensor, "U O I"], bias: Float[Tensor, "U O"]
) -> Float[Tensor, "U R O"]:
    """One linear layer per group: ``x[u] @ weight[u]^T + bias[u]``."""
    assert x.ndim == 3 and weight.ndim == 3 and bias.ndim == 2, "x [U,R,I], weight [U,O,I], bias [U,O]"
    assert (
        x.shape[0] == weight.shape[0] == bias.shape[0] and x.shape[2] == weight.shape[2]
    ), f"incompatible shapes {tuple(x.shape)}, {tuple(weight.shape)}, {tuple(bias.shape)}"
    return torch.baddbmm(bias[:, None, :], x, weight.transpose(1, 2))


class PredictedMLP:
    """A scene function phi whose layers were predicted per group: ``[U, R, in] -> [U, R, out]``."""

    def __init__(self, layers: List[Tuple[Tensor, Tensor]]) -> None:
        self.layers = layers

    @property
    def num_groups(self) -> int:
        return self.layers[0][0].shape[0]

    def __call__(self, points: Float[Tensor, "U R I"]) -> Float[Tensor, "U R O"]:
        x = points
        for weight, bias in self.layers:
            x = batch_linear(x, weight, bias)
            x = F.relu(F.layer_norm(x, (x.shape[-1],)))
        return x


class HyperLinear(nn.Module):
    """Predicts one linear layer (``in_features -> out_features``) of phi from a latent code."""

    def __init__(
        self, in_features: int, out_features: int, latent_dim: int, hyper_hidden: int, hyper_num_hidden_layers: int
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.net = LayerNormMLP(
            in_features=latent_dim,
            hidden_features=hyper_hidden,
            num_hidden_layers=hyper_num_hidden_layers,
            out_features=in_features * out_features + out_features,
            outermost_linear=True,
        )
        with torch.no_grad():
            self.net.last_linear.weight.mul_(LAST_HYPER_LAYER_SCALE)

    def forward(self, codes: Float[Tensor, "U D"]) -> Tuple[Float[Tensor, "U O I"], Float[Tensor, "U O"]]:
        """Weights ``[U, out, in]`` and biases ``[U, out]`` of the layer, one set per code."""
        params = self.net(codes)
        split = self.in_features * self.out_features
        weight = params[:, :split].reshape(-1, self.out_features, self.in_features)
        bias = params[:, split:]
        return weight, bias


class HyperFC(nn.Module):
    """Hypernetwork for phi: ``in_features -> hidden x (num_hidden_layers + 1) -> out_features``.

    SRN's defaults (``phi_layers = 4``): 3 -> 256 -> 256 -> 256 -> 256, every layer LayerNorm + ReLU.

    Args:
        latent_dim: width of the latent code.
        in_features: phi's input width (3: world xyz).
        hidden_features: phi's hidden width.
        num_hidden_layers: phi's hidden->hidden layers (``phi_layers - 2``).
        out_features: phi's feature width.
        hyper_hidden: width of each hypernetwork's hidden layers.
        hyper_num_hidden_layers: hidden->hidden layers of each hypernetwork.
    """

    def __init__(
        self,
        latent_dim: int = 256,
        in_features: int = 3,
        hidden_features: int = 256,
        num_hidden_layers: int = 2,
        out_features: int = 256,
        hyper_hidden: int = 256,
        hyper_num_hidden_layers: int = 1,
    ) -> None:
        super().__init__()
        widths = [in_features] + [hidden_features] * (num_hidden_layers + 1) + [out_features]
        self.layers = nn.ModuleList(
            HyperLinear(width_in, width_out, latent_dim, hyper_hidden, hyper_num_hidden_layers)
            for width_in, width_out in zip(widths[:-1], widths[1:], strict=True)
        )

    def forward(self, codes: Float[Tensor, "U D"]) -> PredictedMLP:
        """The scene functions of ``U`` codes."""
        assert codes.ndim == 2, f"codes must be [U, D], got {tuple(codes.shape)}"
        return PredictedMLP([layer(codes) for layer in self.layers])


class SharedSceneFunction:
    """Adapts one ordinary phi module (single-scene mode) to the grouped ``[U, R, 3]`` interface."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, points: Float[Tensor, "U R I"]) -> Float[Tensor, "U R O"]:
        return self.module(points)
