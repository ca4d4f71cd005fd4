"""Shared pytest configuration: everything runs on the CPU, with small synthetic data."""

import os

import pytest

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CI has no GPU; make local runs match it


@pytest.fixture(autouse=True)
def _seed_everything():
    import torch

    torch.manual_seed(0)
    yield
