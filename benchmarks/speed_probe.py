"""Where bts-density's GPU time goes, part by part, and which candidate fast paths win (issue 17).

One JSON line per measurement (flushed, so a run cut short by its deadline keeps what it measured):

* ``profile``: the top CUDA kernels (self time) of one full-frame render and of one training step of the twin.
* ``density``: each density path (twin, twin with TF32 GEMMs, projected, the Triton kernels, ``torch.compile`` of the
  twin and of the projected path) forward and forward+backward at the training shape (``groups`` maps,
  ``rays x samples`` points each) and forward at a render pass (one map, 32,768 rays x 64 samples), with the
  largest relative difference of ``sigma`` to the fp32 twin.
* ``triton``: the Triton kernels over launch settings (``TritonLaunch``: block, warps, backward split, ``tl.dot``
  precision), forward at a render pass and forward+backward at the training shape.
* ``encoder``: ResNet + decoder at batch 1 (inference) and the training batch (forward + backward): fp32 NCHW,
  fp32 channels-last, bf16 channels-last, each with ``cudnn.benchmark`` off and on, and a CUDA graph of the batch-1
  forward.
* ``encoder_compile``: the training batch's encoder forward + backward: its top kernels, then ``torch.compile``.
* ``encoder_breakdown``: the bf16 channels-last training encoder taken apart (ResNet forward, forward + backward,
  BatchNorm in eval mode, the whole) and its copy ops by input shape.
* ``optimizer``: one Adam step over the model's parameters, torch's default (foreach) and fused.
* ``render_profile``: the top kernels of one eager full-frame render (CUDA graphs off).
* ``render_sweep``: full-frame renders over the render kernel's settings (``TritonLaunch``), depth vs the fp32 twin.
* ``image_timeline``: where the wall time of one image (``encode_view`` + ``render_camera``, the bench's figure)
  goes with the model defaults: host time of each step (synced), the GPU's busy time inside the image's span
  (kernels of a profiled image, overlaps merged), its kernels, and the image's Chrome trace (``--trace-dir``).
* ``render``: a full 192x640 frame with the model's chunking, in one pass, and with ``torch.compile`` of the pass.

Every time is the median of CUDA-event-timed repeats after warm-up. Random weights at BTS's shapes.

    python benchmarks/speed_probe.py --parts profile density triton encoder render --deadline 420 > probe.jsonl
    python benchmarks/speed_probe.py --device cpu --height 32 --width 96 --groups 2 --rays 64 --resnet-layers 18 \\
        --parts density encoder render --repeats 1     # CPU smoke test (compile works on the CPU too)
"""

import argparse
import itertools
import json
import statistics
import time
import traceback
from typing import Callable, Dict

import torch

from bts_studio.bench import BenchConfig, build_model, camera_rig, training_batch
from bts_studio.utils.optimizers import FusedAdamOptimizerConfig

START = time.perf_counter()


def emit(record: Dict) -> None:
    record["t_s"] = round(time.perf_counter() - START, 1)
    print(json.dumps(record), flush=True)


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median milliseconds of ``fn`` (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            begin = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - begin))
    return statistics.median(times)


def peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def device_time_us(event) -> float:
    """An averaged profiler event's own GPU time in us (the attribute's name changed across torch versions)."""
    return getattr(event, "self_device_time_total", 0) or getattr(event, "self_cuda_time_total", 0)


def top_kernels(prof, n: int = 15) -> list:
    rows = []
    for event in prof.key_averages():
        cuda = device_time_us(event)
        if cuda > 0:
            rows.append((cuda, event.key[:90], event.count))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    return [{"ms": round(r[0] / 1000, 3), "calls": r[2], "kernel": r[1]} for r in rows[:n]] + [
        {"total_ms": round(total / 1000, 3)}
    ]


def profile_once(fn: Callable[[], object], device: torch.device, record_shapes: bool = False):
    """torch.profiler around one call of ``fn`` (CPU and, on CUDA, GPU activity), synced before it closes."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=record_shapes) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return prof


def part_profile(args, device, model, config) -> None:
    K, c2w, cameras = camera_rig(config, device)
    image = torch.rand(3, config.height, config.width, device=device)
    model.eval()
    with torch.no_grad():
        source = model.encode_view(image, K, c2w[0])
        model.render_camera(cameras[0:1], source)
        prof = profile_once(lambda: model.render_camera(cameras[0:1], model.encode_view(image, K, c2w[0])), device)
    emit({"part": "profile", "what": "encode + full-frame render (model defaults)", "top": top_kernels(prof)})
    model.train()
    optimizer = FusedAdamOptimizerConfig(lr=1e-4, eps=1e-8).setup(model.parameters())  # as ns-train's

    def step():
        batch = training_batch(config, K, c2w, cameras, device)
        optimizer.zero_grad(set_to_none=True)
        outputs = model(batch)
        sum(model.get_loss_dict(outputs, batch).values()).backward()
        optimizer.step()

    step()
    step()
    record: Dict = {"part": "profile", "what": "training step (model defaults)"}
    record["step_ms"] = timed(step, device, args.repeats)
    enqueue = []  # host time to issue one step from an idle GPU: about step_ms when the host is the bottleneck
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        begin = time.perf_counter()
        step()
        enqueue.append(1000 * (time.perf_counter() - begin))
    record["enqueue_ms"] = statistics.median(enqueue)
    prof = profile_once(step, device, record_shapes=True)
    record.update(gpu_busy_ms(prof))
    record.update(top=top_kernels(prof, 25), copies=copies_by_shape(prof))
    emit(record)


def density_inputs(device, b: int, n: int, h: int, w: int, seed: int = 0):
    from bts_studio.methods.bts.triton_density import random_density_inputs

    inputs = random_density_inputs(device, torch.float32, b=b, c=64, h=h, w=w, n=n, hidden=64, seed=seed)
    inputs[1] = inputs[1] / 1.6  # mostly inside the image, as samples are
    return inputs


def density_paths(args) -> Dict[str, Callable]:
    from bts_studio.core.fused_density import density_projected, density_unfused
    from bts_studio.methods.bts.triton_density import density_triton

    paths: Dict[str, Callable] = {"twin": density_unfused, "projected": density_projected}
    if args.device_type == "cuda":
        paths["triton"] = density_triton
    if args.compile:
        paths["compiled-twin"] = torch.compile(density_unfused, dynamic=False)
        paths["compiled-projected"] = torch.compile(density_projected, dynamic=False)
    return paths


def measure_density(name, fn, device, args, train_inputs, render_inputs, reference, **labels) -> Dict:
    """Times and agreement of one density path; emitted as one record (``labels`` added to it)."""
    record: Dict = {"part": "density", "path": name, **labels}
    try:
        leaves = [t.clone().requires_grad_(i in (0, 3, 4, 5, 6)) for i, t in enumerate(train_inputs)]
        reset_peak(device)
        record["train_fwd_bwd_ms"] = timed(lambda: fn(*leaves, 6, 1.5).sum().backward(), device, args.repeats)
        record["train_fwd_bwd_gib"] = peak_gib(device)
        with torch.no_grad():
            record["train_fwd_ms"] = timed(lambda: fn(*train_inputs, 6, 1.5), device, args.repeats)
            reset_peak(device)
            record["render_pass_fwd_ms"] = timed(lambda: fn(*render_inputs, 6, 1.5), device, args.repeats)
            record["render_pass_gib"] = peak_gib(device)
            sigma = fn(*render_inputs, 6, 1.5)
        record["sigma_max_rel"] = float((sigma - reference).abs().max() / reference.abs().max())
        record["sigma_mean_rel"] = float(((sigma - reference).abs() / reference.abs().clamp_min(1e-6)).mean())
    except Exception as error:  # noqa: BLE001 - reported, the probe goes on
        traceback.print_exc()
        record["error"] = repr(error)[:400]
    emit(record)
    return record


def part_density(args, device, config) -> None:
    from bts_studio.core.fused_density import density_unfused

    n_train = config.rays_per_group * config.num_samples
    train_inputs = density_inputs(device, config.groups, n_train, config.height, config.width)
    render_inputs = density_inputs(device, 1, args.render_rays * config.num_samples, config.height, config.width, 1)
    torch.backends.cuda.matmul.allow_tf32 = False
    with torch.no_grad():
        reference = density_unfused(*render_inputs, 6, 1.5)
    for name, fn in density_paths(args).items():
        if time.perf_counter() - START > args.deadline:
            break
        measure_density(name, fn, device, args, train_inputs, render_inputs, reference)
    torch.backends.cuda.matmul.allow_tf32 = True
    measure_density("twin-tf32-matmul", density_unfused, device, args, train_inputs, render_inputs, reference)
    measure_density("projected-tf32-matmul", density_paths(args)["projected"], device, args, train_inputs,
                    render_inputs, reference)  # fmt: skip
    torch.backends.cuda.matmul.allow_tf32 = False


def part_triton(args, device, config) -> None:
    from bts_studio.core.fused_density import density_unfused
    from bts_studio.methods.bts import triton_density
    from bts_studio.methods.bts.triton_density import TritonLaunch, density_triton

    if device.type != "cuda":
        return
    n_train = config.rays_per_group * config.num_samples
    train_inputs = density_inputs(device, config.groups, n_train, config.height, config.width)
    render_inputs = density_inputs(device, 1, args.render_rays * config.num_samples, config.height, config.width, 1)
    with torch.no_grad():
        reference = density_unfused(*render_inputs, 6, 1.5)
    default = triton_density.TRITON_LAUNCH
    settings = [
        TritonLaunch(block, split, warps, dot)
        for dot, block, warps, split in itertools.product(("ieee", "tf32"), (32, 64, 128), (2, 4, 8), (32,))
    ] + [TritonLaunch(64, split, 4, "tf32") for split in (4, 8, 128)]
    for launch in settings:
        if time.perf_counter() - START > args.deadline:
            break
        triton_density.TRITON_LAUNCH = launch
        labels = {"part": "triton-sweep", "launch": vars(launch)}
        measure_density("triton", density_triton, device, args, train_inputs, render_inputs, reference, **labels)
    triton_density.TRITON_LAUNCH = default


def part_encoder(args, device, model, config) -> None:
    encoder = model.net.encoder
    for layout, precision, benchmark in itertools.product(("nchw", "nhwc"), ("fp32", "bf16"), (False, True)):
        if time.perf_counter() - START > args.deadline:
            break
        if layout == "nchw" and precision == "bf16":
            continue
        record: Dict = {"part": "encoder", "layout": layout, "precision": precision, "cudnn_benchmark": benchmark}
        try:
            torch.backends.cudnn.benchmark = benchmark
            fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
            encoder.to(memory_format=fmt)
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            one = torch.rand(1, 3, config.height, config.width, device=device).contiguous(memory_format=fmt)
            many = torch.rand(config.groups, 3, config.height, config.width, device=device).contiguous(
                memory_format=fmt
            )

            def run(images, dtype=dtype, bf16=precision == "bf16"):
                with torch.autocast(device.type, dtype=dtype, enabled=bf16):
                    return encoder(images).float()

            encoder.eval()
            with torch.no_grad():
                record["batch1_fwd_ms"] = timed(lambda one=one: run(one), device, args.repeats, warmup=3)
                reference = run(one)
            encoder.train()
            record["train_fwd_bwd_ms"] = timed(
                lambda many=many: run(many).sum().backward(), device, args.repeats, warmup=2
            )
            encoder.eval()
            if device.type == "cuda":
                static_in = one.clone()
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream), torch.no_grad():
                    for _ in range(3):
                        run(static_in)
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph), torch.no_grad():
                    static_out = run(static_in)
                record["batch1_fwd_cuda_graph_ms"] = timed(graph.replay, device, args.repeats, warmup=3)
                record["graph_max_abs_diff"] = float((static_out - reference).abs().max())
        except Exception as error:  # noqa: BLE001
            traceback.print_exc()
            record["error"] = repr(error)[:400]
        emit(record)
    encoder.to(memory_format=torch.contiguous_format)
    torch.backends.cudnn.benchmark = False


def part_encoder_compile(args, device, model, config) -> None:
    """The training batch's encoder forward + backward: kernel profile, then under ``torch.compile``."""

    encoder = model.net.encoder.train()
    many = torch.rand(config.groups, 3, config.height, config.width, device=device)
    for precision in ("fp32", "bf16"):  # bf16: autocast + channels-last, the opt-in encoder_precision
        fmt = torch.channels_last if precision == "bf16" else torch.contiguous_format
        encoder.to(memory_format=fmt)
        images = many.contiguous(memory_format=fmt)

        def step(images=images, bf16=precision == "bf16"):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                features = encoder(images)
            features.float().sum().backward()

        step()
        prof = profile_once(step, device)
        what = f"encoder train fwd+bwd, batch groups, {precision}"
        emit({"part": "encoder-profile", "what": what, "top": top_kernels(prof, 25)})
    encoder.to(memory_format=torch.contiguous_format)
    for mode in ("default", "max-autotune-no-cudagraphs") if args.compile else ():
        if time.perf_counter() - START > args.deadline - 120:
            break
        record: Dict = {"part": "encoder-compile", "mode": mode}
        try:
            compiled = torch.compile(encoder, mode=mode)
            begin = time.perf_counter()
            compiled(many).sum().backward()
            record["compile_s"] = time.perf_counter() - begin
            record["train_fwd_bwd_ms"] = timed(lambda c=compiled: c(many).sum().backward(), device, args.repeats)
            record["eager_train_fwd_bwd_ms"] = timed(lambda: encoder(many).sum().backward(), device, args.repeats)
        except Exception as error:  # noqa: BLE001
            traceback.print_exc()
            record["error"] = repr(error)[:400]
        emit(record)


def reflect_pad_by_slices(x: torch.Tensor) -> torch.Tensor:
    """``ReflectionPad2d(1)`` as two concatenations of edge slices (backward: slice adds, no reflection kernel)."""
    x = torch.cat([x[..., 1:2, :], x, x[..., -2:-1, :]], dim=-2)
    return torch.cat([x[..., 1:2], x, x[..., -2:-1]], dim=-1)


def encoder_step(module: torch.nn.Module, inputs, bf16: bool) -> None:
    """Forward ``module`` (the encoder, its ResNet or its decoder) under bf16 autocast or not, then backward the sum
    of its output(s) in fp32: the encoder's share of a training step."""
    with torch.autocast(next(module.parameters()).device.type, dtype=torch.bfloat16, enabled=bf16):
        outputs = module(inputs)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    sum(o.float().sum() for o in outputs).backward()


def part_encoder_variants(args, device, model, config) -> None:
    """The training batch's encoder forward + backward by layout, precision and reflection-pad implementation, the
    ResNet and the decoder timed apart; the top kernels of the bf16 channels-last case."""

    from bts_studio.methods.bts import encoder as encoder_module

    encoder = model.net.encoder.train()
    many = torch.rand(config.groups, 3, config.height, config.width, device=device)
    original_forward = encoder_module.Conv3x3.forward
    for precision, pad in itertools.product(("fp32", "bf16"), ("reflection_pad2d", "slices")):
        if time.perf_counter() - START > args.deadline:
            break
        record: Dict = {"part": "encoder-variants", "precision": precision, "pad": pad}
        fmt = torch.channels_last if precision == "bf16" else torch.contiguous_format
        encoder.to(memory_format=fmt)
        images = many.contiguous(memory_format=fmt)
        if pad == "slices":
            encoder_module.Conv3x3.forward = lambda self, x: self.conv(reflect_pad_by_slices(x))
        try:
            bf16 = precision == "bf16"

            def whole(images=images, bf16=bf16):
                encoder_step(encoder, images, bf16)

            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                pyramid = [f.detach() for f in encoder.encoder(images)]
            for f in pyramid:
                f.requires_grad_(True)

            def resnet(images=images, bf16=bf16):
                encoder_step(encoder.encoder, images, bf16)

            def decoder(pyramid=pyramid, bf16=bf16):
                encoder_step(encoder.decoder, pyramid, bf16)

            record["train_fwd_bwd_ms"] = timed(whole, device, args.repeats)
            record["resnet_fwd_bwd_ms"] = timed(resnet, device, args.repeats)
            record["decoder_fwd_bwd_ms"] = timed(decoder, device, args.repeats)
            if bf16:
                record["top"] = top_kernels(profile_once(whole, device), 20)
        except Exception as error:  # noqa: BLE001
            traceback.print_exc()
            record["error"] = repr(error)[:400]
        finally:
            encoder_module.Conv3x3.forward = original_forward
        emit(record)
    if args.compile and time.perf_counter() - START < args.deadline - 150:  # bf16 channels-last under torch.compile
        record = {"part": "encoder-variants", "precision": "bf16", "pad": "reflection_pad2d", "compiled": True}
        encoder.to(memory_format=torch.channels_last)
        images = many.contiguous(memory_format=torch.channels_last)
        try:
            compiled = torch.compile(encoder)

            def compiled_step(images=images):
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    features = compiled(images)
                features.float().sum().backward()

            begin = time.perf_counter()
            compiled_step()
            record["compile_s"] = time.perf_counter() - begin
            record["train_fwd_bwd_ms"] = timed(compiled_step, device, args.repeats)
        except Exception as error:  # noqa: BLE001
            traceback.print_exc()
            record["error"] = repr(error)[:400]
        emit(record)
    encoder.to(memory_format=torch.contiguous_format)


COPY_OPS = ("aten::copy_", "aten::_to_copy", "aten::to", "aten::contiguous", "aten::clone", "aten::cat")
"""CPU-side ops whose GPU work is a copy: ``encoder_breakdown`` lists them by input shape."""


def copies_by_shape(prof, n: int = 20) -> list:
    """The copy-like ops of a profile (``record_shapes``) grouped by op and input shapes, by GPU time (ms)."""
    rows = []
    for event in prof.key_averages(group_by_input_shape=True):
        if event.key in COPY_OPS:
            total = getattr(event, "device_time_total", 0) or getattr(event, "cuda_time_total", 0)
            rows.append((total, event.key, str(event.input_shapes)[:160], event.count))
    rows.sort(reverse=True)
    return [{"ms": round(r[0] / 1000, 3), "op": r[1], "shapes": r[2], "calls": r[3]} for r in rows[:n]]


def part_encoder_breakdown(args, device, model, config) -> None:
    """The bf16 channels-last encoder of the training batch taken apart: forward alone and forward + backward of
    the ResNet with BatchNorm in training and in eval mode, the decoder, and the whole; then the copy ops of one
    forward + backward by input shape (which tensors autocast or a layout change copies)."""
    encoder = model.net.encoder.train()
    images = torch.rand(config.groups, 3, config.height, config.width, device=device)
    images = images.contiguous(memory_format=torch.channels_last)
    bf16 = dict(device_type=device.type, dtype=torch.bfloat16)

    def resnet_fwd():
        with torch.no_grad(), torch.autocast(**bf16):
            encoder.encoder(images)

    def resnet_fwd_bwd():
        encoder_step(encoder.encoder, images, True)

    def whole_fwd_bwd():
        encoder_step(encoder, images, True)

    # The model keeps its fp32 weights NCHW (cuDNN converts autocast's bf16 copies); channels_last converts them.
    for weights in ("channels_last", "nchw"):
        record: Dict = {"part": "encoder-breakdown", "precision": "bf16", "input": "channels_last", "weights": weights}
        encoder.to(memory_format=torch.channels_last if weights == "channels_last" else torch.contiguous_format)
        try:
            record["resnet_fwd_ms"] = timed(resnet_fwd, device, args.repeats)
            record["resnet_fwd_bwd_ms"] = timed(resnet_fwd_bwd, device, args.repeats)
            encoder.encoder.eval()  # BatchNorm with running statistics: what the batch statistics cost
            try:
                record["resnet_bn_eval_fwd_bwd_ms"] = timed(resnet_fwd_bwd, device, args.repeats)
            finally:
                encoder.encoder.train()
            record["whole_fwd_bwd_ms"] = timed(whole_fwd_bwd, device, args.repeats)
            if weights == "nchw":
                prof = profile_once(whole_fwd_bwd, device, record_shapes=True)
                record["copies"] = copies_by_shape(prof)
                record["top"] = top_kernels(prof, 25)
        except Exception as error:  # noqa: BLE001
            traceback.print_exc()
            record["error"] = repr(error)[:400]
        emit(record)
    encoder.to(memory_format=torch.contiguous_format)


def part_optimizer(args, device, model, config) -> None:
    """One Adam step over the model's parameters (random gradients): torch's default (foreach on CUDA) and fused."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    for name, kwargs in (("foreach", {}), ("fused", {"fused": True})):
        record: Dict = {"part": "optimizer", "adam": name, "parameters": sum(p.numel() for p in params)}
        try:
            optimizer = torch.optim.Adam(params, lr=1e-8, **kwargs)
            record["step_ms"] = timed(optimizer.step, device, args.repeats)
        except Exception as error:  # noqa: BLE001
            traceback.print_exc()
            record["error"] = repr(error)[:400]
        emit(record)
    for p in params:
        p.grad = None


def part_render_profile(args, device, model, config) -> None:
    """The top kernels of one eager full-frame render (CUDA graphs off, so that every kernel is listed)."""

    K, c2w, cameras = camera_rig(config, device)
    image = torch.rand(3, config.height, config.width, device=device)
    model.eval()
    graphs, model.net.cuda_graphs = model.net.cuda_graphs, False
    try:
        with torch.no_grad():
            source = model.encode_view(image, K, c2w[0])
            model.render_camera(cameras[0:1], source)
            prof = profile_once(lambda: model.render_camera(cameras[0:1], source), device)
        emit({"part": "render-profile", "what": "eager full-frame render", "top": top_kernels(prof, 30)})
    finally:
        model.net.cuda_graphs = graphs


def kernel_ms(fn: Callable[[], object], device: torch.device, name: str = "density_rays_kernel") -> float:
    """GPU time of the kernels called ``name`` in one call of ``fn`` (torch.profiler), ms; NaN off CUDA."""
    if device.type != "cuda":
        return float("nan")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize(device)
    return sum(device_time_us(e) / 1000 for e in prof.key_averages() if e.key == name)


def part_render_sweep(args, device, model, config) -> None:
    """Full-frame renders (model defaults: the fused render kernels, CUDA graphs) over their settings: density
    block and warps; frame time, the density kernel's own time, depth against the fp32 twin."""
    from bts_studio.methods.bts import triton_density
    from bts_studio.methods.bts.rendering import RENDER_KERNEL_ERRORS
    from bts_studio.methods.bts.triton_density import TritonLaunch

    K, c2w, cameras = camera_rig(config, device)
    image = torch.rand(3, config.height, config.width, device=device)
    model.eval()
    saved = (model.net.fast_path, model.net.cuda_graphs, torch.backends.cuda.matmul.allow_tf32)
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    default = triton_density.TRITON_LAUNCH
    with torch.no_grad():
        model.net.fast_path, model.net.cuda_graphs = "twin", False
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, False
        source = model.encode_view(image, K, c2w[0])
        reference = model.render_camera(cameras[0:1], source)["depth"]
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
        model.net.fast_path, model.net.cuda_graphs = saved[0], saved[1]
        torch.backends.cuda.matmul.allow_tf32 = saved[2]
        # The eighth session swept the read-once case and fp16 maps (no gain that repeats); this one block and warps
        # again after the kernel's positional encoding became one sine per column.
        settings = [
            dict(block=block, num_warps=warps) for block, warps in ((32, 4), (16, 4), (16, 2), (32, 8), (64, 8))
        ]
        chunk = model.config.eval_num_rays_per_chunk
        one_pass = config.height * config.width
        runs = [(False, settings[0], chunk), (True, settings[0], one_pass)] + [(True, s, chunk) for s in settings]
        for graphs, setting, rays_per_pass in runs:
            if time.perf_counter() - START > args.deadline:
                break
            record = {"part": "render-sweep", "cuda_graphs": graphs, "rays_per_pass": rays_per_pass, **setting}
            try:
                triton_density.TRITON_LAUNCH = TritonLaunch(**{**vars(default), **setting})
                model.net.cuda_graphs = graphs
                model.config.eval_num_rays_per_chunk = rays_per_pass
                model.graphed_render_pass.clear()
                reset_peak(device)
                record["ms"] = timed(lambda: model.render_camera(cameras[0:1], source), device, args.repeats)
                record["gib"] = peak_gib(device)
                record["density_kernel_ms"] = kernel_ms(lambda: model.render_camera(cameras[0:1], source), device)
                depth = model.render_camera(cameras[0:1], source)["depth"]
                rel = ((depth - reference).abs() / reference.abs().clamp_min(1e-6)).flatten()
                record.update(depth_rel_mean=float(rel.mean()), depth_rel_p99=float(torch.quantile(rel, 0.99)))
                if RENDER_KERNEL_ERRORS:
                    record["render_kernel_error"] = repr(RENDER_KERNEL_ERRORS[0])[-300:]
                    RENDER_KERNEL_ERRORS.clear()
            except Exception as error:  # noqa: BLE001
                traceback.print_exc()
                record["error"] = repr(error)[:400]
            emit(record)
    triton_density.TRITON_LAUNCH = default
    model.net.cuda_graphs = saved[1]
    model.config.eval_num_rays_per_chunk = chunk
    model.graphed_render_pass.clear()


def gpu_busy_ms(prof) -> Dict[str, float]:
    """The profiled span's GPU kernel time with overlaps merged, and the span from first kernel start to last end."""
    spans = sorted(
        (e.time_range.start, e.time_range.end)
        for e in prof.events()
        if getattr(e, "device_type", None) is not None and str(e.device_type).endswith("CUDA") and e.time_range.end > 0
    )
    busy, cursor = 0.0, float("-inf")
    for start, end in spans:
        if end > cursor:
            busy += end - max(start, cursor)
            cursor = end
    first = spans[0][0] if spans else 0.0
    return {"gpu_busy_ms": busy / 1000, "gpu_span_ms": (cursor - first) / 1000 if spans else 0.0}


def part_image_timeline(args, device, model, config) -> None:
    """Host time of each step of one image (synced after each), then one profiled image with the GPU's busy time."""
    from torch.profiler import ProfilerActivity, profile

    from bts_studio.methods.common.cameras import camera_rays

    K, c2w, cameras = camera_rig(config, device)
    image = torch.rand(3, config.height, config.width, device=device)
    model.eval()
    camera = cameras[0:1]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def wall(fn: Callable[[], object], repeats: int = args.repeats) -> float:
        fn()
        sync()
        times = []
        for _ in range(repeats):
            begin = time.perf_counter()
            fn()
            sync()
            times.append(1000 * (time.perf_counter() - begin))
        return statistics.median(times)

    with torch.no_grad():
        source = model.encode_view(image, K, c2w[0])
        model.render_camera(camera, source)
        record = {"part": "image-timeline"}
        record["encode_view_wall_ms"] = wall(lambda: model.encode_view(image, K, c2w[0]))
        record["encode_graph_replay_wall_ms"] = wall(lambda: model.net.graphed_encoder(image[None]))
        record["encode_graph_events_ms"] = timed(lambda: model.net.graphed_encoder(image[None]), device, args.repeats)
        record["graph_key_host_ms"] = wall(lambda: model.graphed_render_pass._addresses(), 20)
        record["camera_rays_wall_ms"] = wall(lambda: camera_rays(camera))
        record["render_camera_wall_ms"] = wall(lambda: model.render_camera(camera, source))
        record["render_camera_events_ms"] = timed(lambda: model.render_camera(camera, source), device, args.repeats)
        record["image_wall_ms"] = wall(lambda: model.render_camera(camera, model.encode_view(image, K, c2w[0])))
        rays = camera_rays(camera)
        n = min(config.chunk, config.height * config.width)
        pass_inputs = (
            rays.origins.reshape(1, -1, 3)[:, :n].contiguous(),
            rays.directions.reshape(1, -1, 3)[:, :n].contiguous(),
            rays.directions_norm.reshape(1, -1, 1)[:, :n].contiguous(),
        )
        conditioning = source.as_conditioning()
        tensors = (conditioning.features, conditioning.source_K, conditioning.source_w2c)
        tensors += (conditioning.colour_images, conditioning.colour_K, conditioning.colour_w2c)
        record["pass_graph_wall_ms"] = wall(lambda: model.graphed_render_pass(*pass_inputs, *tensors))
        record["pass_graph_events_ms"] = timed(lambda: model.graphed_render_pass(*pass_inputs, *tensors), device, 10)
        record["pass_eager_events_ms"] = timed(lambda: model._render_pass(*pass_inputs, *tensors), device, 10)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        for label, graphs in (("graphs", True), ("eager", False)):
            saved = model.net.cuda_graphs
            model.net.cuda_graphs = graphs
            try:
                model.render_camera(camera, model.encode_view(image, K, c2w[0]))
                sync()
                with profile(activities=activities) as prof:
                    begin = time.perf_counter()
                    model.render_camera(camera, model.encode_view(image, K, c2w[0]))
                    sync()
                    record[f"profiled_{label}_wall_ms"] = 1000 * (time.perf_counter() - begin)
                record.update({f"{label}_{k}": v for k, v in gpu_busy_ms(prof).items()})
                record[f"{label}_top"] = top_kernels(prof, 25)
                cpu = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:20]
                record[f"{label}_top_cpu"] = [
                    {"op": e.key[:80], "self_cpu_ms": round(e.self_cpu_time_total / 1000, 3), "calls": e.count}
                    for e in cpu
                ]
                if args.trace_dir:
                    prof.export_chrome_trace(f"{args.trace_dir}/image_{label}.json")
            finally:
                model.net.cuda_graphs = saved
    emit(record)


def part_render(args, device, model, config) -> None:
    K, c2w, cameras = camera_rig(config, device)
    image = torch.rand(3, config.height, config.width, device=device)
    model.eval()
    num_rays = config.height * config.width
    results = {}
    with torch.no_grad():
        source = model.encode_view(image, K, c2w[0])
        for name, chunk in (("chunked", config.chunk), ("one-pass", num_rays)):
            model.config.eval_num_rays_per_chunk = chunk
            reset_peak(device)
            ms = timed(lambda: model.render_camera(cameras[0:1], source), device, args.repeats)
            results[name] = model.render_camera(cameras[0:1], source)["depth"]
            emit({"part": "render", "mode": name, "chunk": chunk, "ms": ms, "gib": peak_gib(device)})
        if not args.compile:
            return
        eager = model.render_ray_tensors
        model.config.eval_num_rays_per_chunk = config.chunk
        try:
            model.render_ray_tensors = torch.compile(eager, dynamic=False)
            begin = time.perf_counter()
            model.render_camera(cameras[0:1], source)
            compile_s = time.perf_counter() - begin
            reset_peak(device)
            ms = timed(lambda: model.render_camera(cameras[0:1], source), device, args.repeats)
            depth = model.render_camera(cameras[0:1], source)["depth"]
            rel = ((depth - results["chunked"]).abs() / results["chunked"].abs().clamp_min(1e-6)).flatten()
            record = {"part": "render", "mode": "compiled-chunked", "ms": ms, "gib": peak_gib(device)}
            record.update(compile_s=compile_s, depth_rel_mean=float(rel.mean()), depth_rel_max=float(rel.max()))
            emit(record)
        except Exception as error:  # noqa: BLE001
            traceback.print_exc()
            emit({"part": "render", "mode": "compiled-chunked", "error": repr(error)[:400]})
        finally:
            model.render_ray_tensors = eager


PARTS: Dict[str, Callable] = {
    "profile": part_profile,
    "density": lambda args, device, model, config: part_density(args, device, config),
    "triton": lambda args, device, model, config: part_triton(args, device, config),
    "encoder": part_encoder,
    "encoder_compile": part_encoder_compile,
    "encoder_variants": part_encoder_variants,
    "encoder_breakdown": part_encoder_breakdown,
    "optimizer": part_optimizer,
    "render_profile": part_render_profile,
    "render_sweep": part_render_sweep,
    "image_timeline": part_image_timeline,
    "render": part_render,
}
"""``--parts`` names -> ``part_*(args, device, model, config)``."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--parts", nargs="+", choices=sorted(PARTS), default=["profile", "density", "triton", "encoder", "render"]
    )
    parser.add_argument("--resnet-layers", type=int, default=50)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--groups", type=int, default=16)
    parser.add_argument("--rays", type=int, default=4096, help="rays per group in training")
    parser.add_argument("--render-rays", type=int, default=32768, help="rays of one render pass")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile cases")
    parser.add_argument("--deadline", type=float, default=420, help="seconds; later parts are skipped")
    parser.add_argument("--trace-dir", default="", help="image_timeline: write Chrome traces here")
    parser.add_argument(
        "--encoder-precision", choices=("auto", "fp32", "bf16"), default="auto", help="the model's encoder_precision"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    args.device_type = device.type
    torch.manual_seed(0)
    config = BenchConfig(
        device=args.device,
        resnet_layers=args.resnet_layers,
        height=args.height,
        width=args.width,
        groups=args.groups,
        rays_per_group=args.rays,
        chunk=args.render_rays,
    )
    model = build_model(config, device)
    model.net.encoder_precision = args.encoder_precision
    emit({"part": "setup", "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
          "torch": torch.__version__, "args": {k: v for k, v in vars(args).items() if k != "parts"}})  # fmt: skip
    for part in args.parts:
        if time.perf_counter() - START > args.deadline:
            emit({"part": part, "skipped": "deadline"})
            continue
        try:
            PARTS[part](args, device, model, config)
        except Exception as error:  # noqa: BLE001
            traceback.print_exc()
            emit({"part": part, "error": repr(error)[:400]})
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
