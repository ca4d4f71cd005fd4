"""Tier 1: the CUDA-graph replay of bts-density's encoder (``utils/cuda_graphs.py``) and its eager twin."""

import warnings

import pytest
import torch

from bts_studio.methods.bts.density_field import BTSDensityField
from bts_studio.utils.cuda_graphs import GraphedInference

H, W = 64, 96


def _field(**kwargs) -> BTSDensityField:
    torch.manual_seed(0)
    return BTSDensityField(num_layers=18, feature_dim=16, hidden_dim=16, **kwargs).eval()


def test_the_cpu_and_training_run_the_module_itself_bit_for_bit():
    field = _field()
    image = torch.rand(1, 3, H, W)
    assert not field.graphed_encoder.applies(image)  # CPU
    with torch.no_grad():
        expected = field.encoder(image)
        assert torch.equal(field.encode(image), expected)
        assert torch.equal(_field(cuda_graph_encoder=False).encode(image), expected)
    field.train()
    assert not field.graphed_encoder.applies(image)
    assert field.encode(image).requires_grad  # training keeps autograd: never a graph


def test_a_failing_capture_warns_once_and_runs_eagerly_from_then_on(monkeypatch):
    module = torch.nn.Conv2d(3, 4, 3).eval()
    graphed = GraphedInference(module)
    monkeypatch.setattr(GraphedInference, "applies", lambda self, x: self.error is None)
    monkeypatch.setattr(GraphedInference, "_capture", lambda self, x: (_ for _ in ()).throw(RuntimeError("capture")))
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad(), pytest.warns(UserWarning, match="CUDA graph capture failed"):
        out = graphed(x)
    assert isinstance(graphed.error, RuntimeError)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        again = graphed(x)
    assert torch.equal(out, module(x)) and torch.equal(again, out)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_the_replayed_graph_equals_the_module_follows_in_place_weight_changes_and_keeps_two_shapes():
    field = _field().cuda()
    image = torch.rand(1, 3, H, W, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(field.encode(image), field.encoder(image), rtol=1e-5, atol=1e-5)
        for p in field.encoder.parameters():
            p.mul_(0.9)  # an optimiser step: same addresses
        torch.testing.assert_close(field.encode(image), field.encoder(image), rtol=1e-5, atol=1e-5)
        for size in ((1, 3, H, W + 32), (2, 3, H, W), (1, 3, H, W)):
            torch.testing.assert_close(field.encode(torch.rand(size, device="cuda")).shape[0], size[0])
    assert len(field.graphed_encoder._graphs) == 2 and field.graphed_encoder.error is None
