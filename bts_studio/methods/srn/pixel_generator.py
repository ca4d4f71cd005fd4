"""SRN's pixel generator: a per-pixel MLP from phi's feature at the ray's end point to a colour.

Built as the official code builds it (``FCBlock(hidden 256, num_hidden_layers = rendering_layers - 1,
outermost_linear=True)``): with ``rendering_layers = 5`` that is **six** linear layers, five
[Linear, LayerNorm, ReLU] blocks and a linear 256 -> 3 output (the code's comment says five). The output
is linear and lives in SRN's colour space ``[-1, 1]``; ``signed_to_unit_rgb`` maps it to nerfstudio's [0, 1].
"""

from jaxtyping import Float
from torch import Tensor, nn

from bts_studio.methods.srn.mlp import LayerNormMLP


class PixelGenerator(nn.Module):
    """Feature ``[..., feature_dim]`` -> signed colour ``[..., 3]`` in (roughly) ``[-1, 1]``.

    Args:
        feature_dim: width of phi's features.
        hidden_dim: hidden width.
        rendering_layers: SRN's ``rendering_layers`` (the MLP gets ``rendering_layers - 1`` hidden layers).
    """

    def __init__(self, feature_dim: int = 256, hidden_dim: int = 256, rendering_layers: int = 5) -> None:
        super().__init__()
        assert rendering_layers >= 1, "rendering_layers must be at least 1"
        self.mlp = LayerNormMLP(
            in_features=feature_dim,
            hidden_features=hidden_dim,
            num_hidden_layers=rendering_layers - 1,
            out_features=3,
            outermost_linear=True,
        )

    def forward(self, features: Float[Tensor, "*batch F"]) -> Float[Tensor, "*batch 3"]:
        return self.mlp(features)


def signed_to_unit_rgb(signed: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 3"]:
    """SRN colour space ``[-1, 1]`` -> ``[0, 1]``, clipped (SRN clips its predictions before measuring)."""
    return ((signed + 1.0) * 0.5).clamp(0.0, 1.0)
