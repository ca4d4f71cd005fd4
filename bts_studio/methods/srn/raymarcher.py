"""SRN's differentiable ray marcher: an LSTM reads phi's feature and predicts the next step length.

Every ray starts at a camera-space z-depth drawn from N(0.05, 5e-4^2) while training (0.05 exactly otherwise)
and takes ``num_steps`` signed steps along its unit direction. Because every point stays on its ray, the
marcher tracks the signed ray distance ``t``; the z-depth SRN regularises is ``t / directions_norm``
(docs/conventions.md, "Depth"), identical to SRN's ``depth_from_world`` of the final point.

Initialisation as in the official ``custom_layers.Raymarcher``: LSTM input weights Kaiming-normal, hidden
weights orthogonal, biases zero except the forget-gate slice (one); the gradient flowing into the hidden
state is clamped to [-10, 10] at every step.
"""

from typing import Callable, Optional, Tuple

import torch
from jaxtyping import Float
from torch import Tensor, nn

SceneFunction = Callable[[Float[Tensor, "U R 3"]], Float[Tensor, "U R F"]]


def init_lstm_like_srn(lstm: nn.LSTMCell) -> None:
    """SRN's recurrent init: Kaiming input weights, orthogonal hidden weights, forget-gate bias 1, other biases 0."""
    hidden = lstm.hidden_size
    with torch.no_grad():
        nn.init.kaiming_normal_(lstm.weight_ih)
        nn.init.orthogonal_(lstm.weight_hh)
        for bias in (lstm.bias_ih, lstm.bias_hh):
            bias.zero_()
            bias[hidden : 2 * hidden] = 1.0  # PyTorch gate order: input, forget, cell, output


class LSTMRayMarcher(nn.Module):
    """Marches rays through a scene function with a learned step length.

    Args:
        feature_dim: width of phi's features (the LSTM input).
        hidden_dim: LSTM hidden size (SRN: 16).
        num_steps: marching steps (SRN: 10).
        initial_z_mean: mean of the initial camera-space z-depth (SRN: 0.05).
        initial_z_std: its standard deviation during training (SRN: 5e-4).
        hidden_grad_clamp: bound of the gradient on the hidden state (SRN: 10).
    """

    def __init__(
        self,
        feature_dim: int = 256,
        hidden_dim: int = 16,
        num_steps: int = 10,
        initial_z_mean: float = 0.05,
        initial_z_std: float = 5.0e-4,
        hidden_grad_clamp: float = 10.0,
    ) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.num_steps = num_steps
        self.initial_z_mean = initial_z_mean
        self.initial_z_std = initial_z_std
        self.hidden_grad_clamp = hidden_grad_clamp
        self.lstm = nn.LSTMCell(input_size=feature_dim, hidden_size=hidden_dim)
        init_lstm_like_srn(self.lstm)
        self.step_head = nn.Linear(hidden_dim, 1)

    def initial_distance(self, directions_norm: Float[Tensor, "U R 1"], jitter: bool) -> Float[Tensor, "U R 1"]:
        """Ray distance of the starting points (random z-depth with ``jitter``, else its mean)."""
        z = torch.full_like(directions_norm, self.initial_z_mean)
        if jitter and self.initial_z_std > 0:
            z = z + self.initial_z_std * torch.randn_like(z)
        return z * directions_norm

    def forward(
        self,
        phi: SceneFunction,
        origins: Float[Tensor, "U R 3"],
        directions: Float[Tensor, "U R 3"],
        directions_norm: Float[Tensor, "U R 1"],
        jitter: Optional[bool] = None,
    ) -> Tuple[Float[Tensor, "U R 3"], Float[Tensor, "U R 1"]]:
        """March all rays.

        Args:
            phi: scene function of the ray groups, ``[U, R, 3] -> [U, R, feature_dim]``.
            origins: ray origins (world).
            directions: unit ray directions (world).
            directions_norm: length of the camera-space direction with unit z (nerfstudio's
                ``metadata["directions_norm"]``); converts z-depth to ray distance.
            jitter: draw the start depth at random (default: while training).

        Returns:
            The final points and their signed ray distances ``t`` (``points = origins + t * directions``).
        """
        assert (
            origins.shape == directions.shape and origins.ndim == 3 and origins.shape[-1] == 3
        ), f"origins/directions must be [U, R, 3], got {tuple(origins.shape)} and {tuple(directions.shape)}"
        assert directions_norm.shape == origins.shape[:2] + (1,), f"directions_norm {tuple(directions_norm.shape)}"
        distance = self.initial_distance(directions_norm, self.training if jitter is None else jitter)
        state = None
        for _ in range(self.num_steps):
            features = phi(origins + directions * distance)
            hidden, cell = self.lstm(features.reshape(-1, self.feature_dim), state)
            if hidden.requires_grad:
                hidden.register_hook(lambda grad, bound=self.hidden_grad_clamp: grad.clamp(min=-bound, max=bound))
            state = (hidden, cell)
            distance = distance + self.step_head(hidden).reshape(distance.shape)
        return origins + directions * distance, distance
