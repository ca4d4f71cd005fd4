"""SRN's fully connected block: Linear -> LayerNorm -> ReLU layers, optionally a linear last layer.

This is the building block of the official code (``pytorch_prototyping.FCBlock``): the hypernetworks,
the single-scene scene function and the pixel generator are all made of it. Its LayerNorms have affine
parameters and its linear weights are Kaiming-normal (fan-in, ReLU gain); biases keep PyTorch's default.
"""

from torch import Tensor, nn


def kaiming_relu_init(module: nn.Module) -> None:
    """Kaiming-normal (fan-in, ReLU) weights for every ``nn.Linear`` in ``module``."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight, a=0.0, nonlinearity="relu", mode="fan_in")


class LayerNormMLP(nn.Module):
    """``1 + num_hidden_layers`` blocks of [Linear, LayerNorm, ReLU], then one more block or a plain Linear.

    Args:
        in_features: input width.
        hidden_features: width of every hidden layer.
        num_hidden_layers: hidden->hidden blocks between the first and the last layer.
        out_features: output width.
        outermost_linear: whether the last layer is a plain Linear (else a full block ending in ReLU).
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        num_hidden_layers: int,
        out_features: int,
        outermost_linear: bool = False,
    ) -> None:
        super().__init__()
        widths = [in_features] + [hidden_features] * (num_hidden_layers + 1)
        layers: list[nn.Module] = []
        for width_in, width_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(width_in, width_out), nn.LayerNorm(width_out), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(hidden_features, out_features))
        if not outermost_linear:
            layers += [nn.LayerNorm(out_features), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers)
        kaiming_relu_init(self)

    @property
    def last_linear(self) -> nn.Linear:
        """The last linear layer (the hypernetworks re-initialise it)."""
        return [layer for layer in self.net if isinstance(layer, nn.Linear)][-1]

    def forward(self, x: Tensor) -> Tensor:
        """Apply to the last dimension of ``x`` ``[..., in_features]``."""
        return self.net(x)
