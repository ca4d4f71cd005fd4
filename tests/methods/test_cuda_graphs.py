"""Tier 1: CUDA-graph replay of bts-density's encoder and render passes (``utils/cuda_graphs.py``), eager twins."""

import warnings

import pytest
import torch

from bts_studio.methods.bts.density_field import BTSDensityField
from bts_studio.utils.cuda_graphs import GraphedInference, GraphedTraining

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
        assert torch.equal(_field(cuda_graphs=False).encode(image), expected)
    field.train()
    assert not field.graphed_encoder.applies(image)
    assert field.encode(image).requires_grad  # training keeps autograd: never a graph


def test_a_failing_capture_warns_once_and_runs_eagerly_from_then_on(monkeypatch):
    module = torch.nn.Conv2d(3, 4, 3).eval()
    graphed = GraphedInference(module, module)
    monkeypatch.setattr(GraphedInference, "applies", lambda self, *tensors: self.error is None)
    monkeypatch.setattr(GraphedInference, "_capture", lambda self, x: (_ for _ in ()).throw(RuntimeError("capture")))
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad(), pytest.warns(UserWarning, match="CUDA graph capture failed"):
        out = graphed(x)
    assert isinstance(graphed.error, RuntimeError)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        again = graphed(x)
    assert torch.equal(out, module(x)) and torch.equal(again, out)


def test_the_graph_key_sees_every_way_a_parameter_or_buffer_moves():
    """``_addresses`` caches the submodule list (the H200 host spent 0.58 ms per pass walking the parameters), so it
    must still change when a tensor is re-created (``_apply`` with torch's overwrite flag, assignment, a new
    BatchNorm buffer), when a submodule is added or a parameter is set in place of another, and stay put otherwise."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).eval()
    graphed = GraphedInference(model, model)
    first = graphed._addresses()
    assert graphed._addresses() == first and len(first) == 2 + 5  # conv weight, bias; BN weight, bias, 3 buffers
    with torch.no_grad():
        model[0].weight.add_(1.0)  # in place: same memory, the graph sees the new values
    assert graphed._addresses() == first
    model[0]._parameters["weight"] = torch.nn.Parameter(model[0].weight.detach().clone())  # as _apply's overwrite
    second = graphed._addresses()
    assert second != first
    model[1].running_mean = torch.zeros(4)
    third = graphed._addresses()
    assert third != second
    model.append(torch.nn.Conv2d(4, 4, 1))
    assert len(graphed._addresses()) == len(third) + 2


def test_render_passes_padded_for_the_graph_give_the_eager_frame(bts_model, monkeypatch):
    """The graph branch of ``render_camera`` (passes of the configured size, the last one padded with copies of its
    last ray, outputs sliced back) on the CPU: ``GraphedInference`` is told it applies and calls the eager pass, so
    only the padding and slicing are under test here (the replay itself: the CUDA test below)."""
    model, source, camera = bts_model
    model.config.eval_num_rays_per_chunk = 1000  # 64 x 96 = 6144 rays: 7 passes of 1000, the last one 144 + 856 pads
    model.net.cuda_graphs = False
    eager = model.render_camera(camera, source)
    model.net.cuda_graphs = True
    shapes = []
    monkeypatch.setattr(GraphedInference, "applies", lambda self, *tensors: True)
    monkeypatch.setattr(GraphedInference, "__call__", lambda self, *t: shapes.append(t[0].shape) or self.fn(*t))
    graphed = model.render_camera(camera, source)
    assert set(shapes) == {torch.Size([1, 1000, 3])} and len(shapes) == 7
    assert set(graphed) == set(eager)
    for name, value in eager.items():  # equal up to the BLAS's blocking of a 1000- vs 144-row last pass
        torch.testing.assert_close(graphed[name], value, rtol=1e-6, atol=1e-7, msg=name)
    model.config.eval_num_rays_per_chunk = 32768  # a frame smaller than a pass pads to a power of two only
    shapes.clear()
    small = model.render_camera(camera, source)
    assert shapes == [torch.Size([1, 8192, 3])]
    torch.testing.assert_close(small["depth"], eager["depth"], rtol=1e-6, atol=1e-7)


@pytest.fixture
def bts_model():
    from nerfstudio.data.scene_box import SceneBox

    from bts_studio.methods.bts.inference import encode_source
    from bts_studio.methods.bts.model import BTSModelConfig
    from bts_studio.methods.common.cameras import opencv_to_cameras

    torch.manual_seed(0)
    config = BTSModelConfig(resnet_layers=18, num_samples=8, search_torch_hub_cache=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights on purpose
        model = config.setup(scene_box=SceneBox(torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=0).eval()
    K = torch.tensor([[60.0, 0.0, 48.0], [0.0, 50.0, 32.0], [0.0, 0.0, 1.0]])
    c2w = torch.eye(4)
    source = encode_source(model, torch.rand(3, H, W), K, c2w)
    return model, source, opencv_to_cameras(K[None], c2w[None, :3], width=W, height=H)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_a_graphed_full_frame_render_equals_the_eager_one(bts_model):
    model, source, camera = bts_model
    from bts_studio.methods.bts.inference import encode_source

    model.cuda()
    source = encode_source(model, source.image.cuda(), source.K, source.c2w)
    model.config.eval_num_rays_per_chunk = 1000
    model.net.cuda_graphs = False
    eager = model.render_camera(camera.to("cuda"), source)
    model.net.cuda_graphs = True
    for _ in range(2):  # capture, then replay
        graphed = model.render_camera(camera.to("cuda"), source)
        for name, value in eager.items():
            torch.testing.assert_close(graphed[name], value, rtol=1e-5, atol=1e-5, msg=name)
    model.config.eval_num_rays_per_chunk = 2500  # another pass size: a second graph
    model.render_camera(camera.to("cuda"), source)
    assert model.graphed_render_pass.error is None and len(model.graphed_render_pass._graphs) == 2


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


def test_encoding_an_image_mid_training_keeps_batchnorm_statistics_and_the_training_mode(bts_model):
    """``encode_view`` switches to eval mode only when the model trains (it skips the module walk otherwise)."""
    model, _, _ = bts_model
    image, K, c2w = torch.rand(3, H, W), torch.eye(3), torch.eye(4)
    statistics = {name: b.clone() for name, b in model.net.named_buffers() if "running" in name}
    model.train()
    model.encode_view(image, K, c2w)
    assert model.net.training and all(m.training for m in model.net.modules())
    for name, buffer in model.net.named_buffers():
        if name in statistics:
            assert torch.equal(buffer, statistics[name]), name
    model.eval()
    model.encode_view(image, K, c2w)
    assert not any(m.training for m in model.net.modules())


def _bn_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).train()


def test_training_graphs_run_the_function_itself_off_cuda_and_after_a_failed_capture(monkeypatch):
    net = _bn_net()
    graphed = GraphedTraining(net, net)
    x = torch.rand(2, 3, 8, 8)
    assert not graphed.applies(x)  # CPU
    assert torch.equal(graphed(x), _bn_net()(x))
    monkeypatch.setattr(GraphedTraining, "applies", lambda self, *tensors, **options: self.error is None)
    monkeypatch.setattr(GraphedTraining, "_capture", lambda self, t: (_ for _ in ()).throw(RuntimeError("capture")))
    with pytest.warns(UserWarning, match="CUDA graph capture of the training step failed"):
        out = graphed(x)
    assert isinstance(graphed.error, RuntimeError)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # eager from then on, no second warning
        out.sum().backward()
        graphed(x)
    assert net[0].weight.grad is not None


def test_a_training_capture_leaves_batchnorm_statistics_as_they_were(monkeypatch):
    """The capture's warm-up runs the step several times; the running statistics must come out untouched, so that
    each real step updates them once, as the eager step does."""
    net = _bn_net()
    before = {name: b.clone() for name, b in net.named_buffers()}

    def warm_up_like_torch(module, samples):
        for _ in range(3):
            module(*samples)
        return module

    monkeypatch.setattr(torch.cuda, "make_graphed_callables", warm_up_like_torch)
    GraphedTraining(net, net)._capture((torch.rand(2, 3, 8, 8),))
    assert int(net[1].num_batches_tracked) == 0
    for name, buffer in net.named_buffers():
        assert torch.equal(buffer, before[name]), name


def test_training_graphs_step_aside_while_a_parameter_holds_a_gradient():
    """A replayed backward's gradients are the graph's own buffers; accumulating into them (zero_grad without
    set_to_none, gradient accumulation) would double them, so those steps run eagerly."""

    class OnCuda(torch.Tensor):  # applies() reads only .is_cuda of its inputs
        @property
        def is_cuda(self) -> bool:
            return True

    net = _bn_net()
    graphed = GraphedTraining(net, net)
    on_cuda = torch.zeros(1).as_subclass(OnCuda)
    assert graphed.applies(on_cuda)
    net[0].weight.grad = torch.zeros_like(net[0].weight)
    assert not graphed.applies(on_cuda)
    net[0].weight.grad = None
    net.eval()
    assert not graphed.applies(on_cuda)
    net.train()
    with torch.no_grad():
        assert not graphed.applies(on_cuda)


def test_the_model_config_reaches_the_field():
    from nerfstudio.data.scene_box import SceneBox

    from bts_studio.methods.bts.model import BTSModelConfig

    assert BTSModelConfig().cuda_graphs_training is True  # on by default since the twelfth session's GPU checks
    for graphs in (True, False):
        config = BTSModelConfig(
            resnet_layers=18, num_samples=8, search_torch_hub_cache=False, cuda_graphs_training=graphs
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # random weights on purpose
            model = config.setup(scene_box=SceneBox(torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=0)
        assert (
            model.net.cuda_graphs_training is graphs and model.net.graphed_training_encoder.module is model.net.encoder
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_graphed_training_steps_equal_eager_ones_in_features_gradients_and_statistics():
    """The twin check of ``cuda_graphs_training``: three Adam steps of the bf16 encoder with and without graphs."""
    runs = {}
    for graphs in (False, True):
        field = BTSDensityField(
            num_layers=18, feature_dim=16, hidden_dim=16, fast_path="triton", cuda_graphs_training=graphs
        )
        torch.manual_seed(0)
        field.load_state_dict(_field().state_dict())
        field = field.cuda().train()
        # Adam: a step of at most ~lr per weight whatever the gradient's scale. With SGD at 1e-2 on an unnormalised
        # sum the third step's difference was NaN, most likely the objective diverging (device call, twelfth
        # session); the eager reference is now checked to be finite.
        optimizer = torch.optim.Adam(field.encoder.parameters(), lr=1e-3)
        torch.manual_seed(1)
        features, grads = [], []
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            out = field.encode(torch.rand(2, 3, H, W, device="cuda"))
            (out * torch.linspace(0.5, 1.5, out.numel(), device="cuda").view_as(out)).mean().backward()
            features.append(out.detach().clone())
            grads.append(torch.cat([p.grad.flatten() for p in field.encoder.parameters()]))
            optimizer.step()
        runs[graphs] = (features, {n: t.detach().clone() for n, t in field.state_dict().items()}, grads)
        if graphs:
            assert field.graphed_training_encoder.error is None and field.graphed_training_encoder._graphed is not None

    def relative(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))

    # bf16 activations: a capture may pick other cuDNN algorithms than the eager call (some are not capturable), so
    # the two differ by bf16 rounding (~4e-3 per value), not bit for bit.
    differences = [relative(replayed, eager) for eager, replayed in zip(runs[False][0], runs[True][0], strict=True)]
    states = {name: relative(runs[True][1][name], value) for name, value in runs[False][1].items()}
    gradients = [relative(replayed, eager) for eager, replayed in zip(runs[False][2], runs[True][2], strict=True)]
    print("features", differences, "gradients", gradients, "state", max(states.values()), max(states, key=states.get))
    eager_values = runs[False][0] + runs[False][2] + list(runs[False][1].values())
    assert all(bool(torch.isfinite(value.float()).all()) for value in eager_values), "the eager reference diverged"
    assert max(differences) < 2e-2, differences
    assert max(gradients) < 2e-2, gradients
    assert max(states.values()) < 1e-2, states
