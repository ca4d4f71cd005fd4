"""Group rays by an integer key (an object instance) into a padded ``[groups, rays]`` layout.

Auto-decoder models such as SRN evaluate a different network per instance. Evaluating that network
once per group of rays, as one batched matmul, needs the rays of each instance side by side:
``to_padded`` builds that layout from an arbitrary ray order and ``from_padded`` undoes it.
Framework-free torch.
"""

from typing import NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["RayGroups", "from_padded", "group_by_key", "to_padded"]


class RayGroups(NamedTuple):
    """Where each ray goes in the padded layout."""

    keys: Int[Tensor, " U"]
    """The distinct keys, sorted; group ``g`` holds the rays whose key is ``keys[g]``."""
    group: Int[Tensor, " N"]
    """Group of each ray, in ``[0, U)``."""
    slot: Int[Tensor, " N"]
    """Position of each ray inside its group, in ``[0, max_count)``."""
    first: Int[Tensor, " U"]
    """Index of one ray of each group; padding slots repeat it, so they stay finite."""
    max_count: int
    """Rays in the largest group (the padded width)."""


def group_by_key(keys: Int[Tensor, " N"]) -> RayGroups:
    """Assign every ray a (group, slot) position; rays keep their relative order inside a group.

    Args:
        keys: one integer key per ray (e.g. the instance index).

    Returns:
        The grouping; ``U = len(unique(keys))``.
    """
    assert keys.ndim == 1 and keys.numel() > 0, f"keys must be a non-empty [N] tensor, got {tuple(keys.shape)}"
    unique_keys, group, counts = torch.unique(keys, sorted=True, return_inverse=True, return_counts=True)
    order = torch.argsort(group, stable=True)
    starts = torch.cumsum(counts, dim=0) - counts
    slot = torch.empty_like(group)
    slot[order] = torch.arange(keys.numel(), device=keys.device) - starts[group[order]]
    first = order[starts]
    return RayGroups(unique_keys, group, slot, first, int(counts.max().item()))


def to_padded(values: Float[Tensor, "N C"], groups: RayGroups) -> Float[Tensor, "U R C"]:
    """Scatter per-ray values into ``[U, max_count, C]``; padding slots copy the group's first ray."""
    assert (
        values.ndim == 2 and values.shape[0] == groups.group.shape[0]
    ), f"values must be [N, C] with N = {groups.group.shape[0]}, got {tuple(values.shape)}"
    padded = values[groups.first][:, None, :].expand(-1, groups.max_count, -1).clone()
    padded[groups.group, groups.slot] = values
    return padded


def from_padded(padded: Float[Tensor, "U R C"], groups: RayGroups) -> Float[Tensor, "N C"]:
    """Gather the per-ray values back from the padded layout (the inverse of :func:`to_padded`)."""
    assert padded.ndim == 3 and padded.shape[:2] == (
        groups.keys.shape[0],
        groups.max_count,
    ), f"padded must be [{groups.keys.shape[0]}, {groups.max_count}, C], got {tuple(padded.shape)}"
    return padded[groups.group, groups.slot]
