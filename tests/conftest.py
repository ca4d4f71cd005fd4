"""Shared pytest configuration: everything runs on the CPU, with small synthetic data."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CI has no GPU; make local runs match it


@pytest.fixture(autouse=True)
def _seed_everything():
    import torch

    torch.manual_seed(0)
    yield


ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


@pytest.fixture(scope="session")
def run_in_triton_interpreter():
    """``run(code, marker)``: ``code`` in a fresh Python under Triton's interpreter (``TRITON_INTERPRET=1`` is read
    when the kernels are defined, hence a new process); asserts it exits 0 having printed ``marker``."""

    def run(code: str, marker: str, timeout: int = 300) -> str:
        env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
        )
        assert result.returncode == 0 and marker in result.stdout, result.stdout + result.stderr
        return result.stdout

    return run


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark("name")``: the module of ``benchmarks/name.py`` (a script, not a package: loaded by path)."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def synth_tiny_dvr():
    """``synth_tiny_dvr(out, instances=, views=, input_views=, extra=())``: a tiny generated cars class in DVR's
    layout (24 px, 2,000-point clouds, one val and one test car) under ``out``; returns ``out``."""

    def make(out: Path, *, instances: int, views: int, input_views: int, extra=()) -> Path:
        from bts_studio.data.synthetic.shapenet_cli import main as synth

        synth(
            ["--classes", "cars", "--instances", str(instances), "--val-instances", "1", "--test-instances", "1",
             "--format", "dvr", "--resolution", "24", "--dvr-views", str(views), "--pointcloud-points", "2000",
             "--dvr-input-views", str(input_views), "--dvr-input-resolution", "24", *extra, str(out)]
        )  # fmt: skip
        return out

    return make
