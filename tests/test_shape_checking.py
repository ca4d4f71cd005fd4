"""The suite checks jaxtyping shape annotations at run time (pyproject: ``--jaxtyping-packages``, beartype).

A wrong shape must fail loudly even where torch would broadcast it into a silently wrong result.
"""

import jaxtyping
import pytest
import torch

from bts_studio.core.geometry import ray_distance_to_z_depth


def test_a_wrong_shape_fails_the_annotation_check():
    distance = torch.ones(4, 1)
    assert ray_distance_to_z_depth(distance, torch.full((4, 1), 2.0)).shape == (4, 1)
    # torch alone would broadcast [4, 1] / [4, 3] to [4, 3]; the annotation says "*batch 1".
    with pytest.raises(jaxtyping.TypeCheckError):
        ray_distance_to_z_depth(distance, torch.ones(4, 3))


def test_a_wrong_dtype_fails_the_annotation_check():
    with pytest.raises(jaxtyping.TypeCheckError):
        ray_distance_to_z_depth(torch.ones(4, 1, dtype=torch.long), torch.ones(4, 1))
