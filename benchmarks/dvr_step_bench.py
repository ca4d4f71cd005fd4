"""Time DVR training steps and count their host syncs (issue 13: the fixed per-step overhead of ``dvr``).

Builds nerfstudio's trainer for a DVR preset (``dvr-combined`` by default) on a generated cars class, exactly as
``ns-train`` would (seeded with ``machine.seed``), and measures in steady state:

- ``train_iteration``: the whole step (``next_train``, encoder, rendering, losses, backward, Adam, the plugin
  trainer's non-finite check), ms per step;
- ``next_train``: the data manager's batch alone;
- ``model``: forward (encoder + ``get_outputs``) + ``get_loss_dict`` + backward on one fixed batch (no optimiser);
- host syncs per step: aten ops that make the host wait (``utils.profiling.SYNC_OPS``, counted on any device) and,
  on CUDA, the runtime's synchronising calls and the Python lines that made them (``cuda_sync_sites``).

GPU (one H200, < 2 minutes; the shapes of ``benchmarks/gpu_dvr.sh``'s dvr-combined run)::

    TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 python benchmarks/dvr_step_bench.py --out /tmp/dvr_step.json

CPU smoke test (tiny)::

    python benchmarks/dvr_step_bench.py --device cpu --instances 4 --resolution 32 --views 4 --images 4 \\
        --rays 64 --hidden 32 --latent 16 --input-size 32 --steps 3 --warmup 1

Times on CUDA come from CUDA events around ``steps`` iterations (after ``warmup``), on the CPU from the wall clock.
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch


def generate(work: Path, args) -> Path:
    out = work / "dvr_bench_data"
    if not (out / "dvr").is_dir():
        from bts_studio.data.synthetic.shapenet_cli import main as synth

        synth(
            [str(out), "--classes", "cars", "--instances", str(args.instances), "--val-instances", "1"]
            + ["--test-instances", "1", "--format", "dvr", "--resolution", str(args.resolution)]
            + ["--dvr-views", str(args.views), "--pointcloud-points", "1000", "--dvr-input-views", str(args.views)]
            + ["--dvr-input-resolution", "64", "--overwrite"]
        )
    return out / "dvr"


def build_trainer(args, data: Path, work: Path):
    from nerfstudio.scripts.train import _set_random_seed

    from bts_studio.methods.dvr import method_config

    builders = {
        "dvr": method_config.dvr_trainer_config,
        "dvr-depth": method_config.dvr_depth_trainer_config,
        "dvr-combined": method_config.dvr_combined_trainer_config,
        "dvr-tiny": method_config.dvr_tiny_trainer_config,
    }
    config = builders[args.preset]()
    datamanager, model = config.pipeline.datamanager, config.pipeline.model
    datamanager.data = data
    datamanager.images_per_batch, datamanager.rays_per_image = args.images, args.rays
    if args.input_size is not None:
        datamanager.input_image_size = args.input_size
    fields = {"hidden": "hidden_size", "latent": "latent_dim", "blocks": "num_blocks", "proposals": "initial_proposals"}
    for name, key in fields.items():
        if getattr(args, name) is not None:
            setattr(model, key, getattr(args, name))
    config.set_timestamp()
    config.machine.device_type = args.device
    config.vis = "tensorboard"
    config.output_dir = work / "runs"
    config.max_num_iterations = 1_000_000
    config.viewer.quit_on_train_completion = True
    _set_random_seed(config.machine.seed)
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


class Clock:
    """Elapsed milliseconds of ``repeat`` calls: CUDA events on a GPU, else the wall clock."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda

    def __call__(self, fn: Callable[[int], object], repeat: int, first: int = 0) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for index in range(repeat):
                fn(first + index)
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / repeat
        begin = time.perf_counter()
        for index in range(repeat):
            fn(first + index)
        return (time.perf_counter() - begin) * 1000 / repeat


def kernel_ms(fn: Callable[[], object]) -> Tuple[float, str]:
    """The GPU's busy time during ``fn()`` in ms (the union of its kernels' and copies' intervals, torch.profiler),
    and a table of the ops that took the most GPU time."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    spans = sorted(
        (event.time_range.start, event.time_range.end)
        for event in prof.events()
        if event.device_type == DeviceType.CUDA
    )
    busy, end = 0.0, float("-inf")
    for start, stop in spans:
        if stop > end:
            busy += stop - max(start, end)
            end = stop
    table = prof.key_averages().table(sort_by="self_device_time_total", row_limit=15, max_name_column_width=60)
    return busy / 1000.0, table


def main(argv: Optional[list] = None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="dvr-combined", choices=["dvr", "dvr-depth", "dvr-combined", "dvr-tiny"])
    parser.add_argument("--data", type=Path, default=None, help="a DVR class root (default: generated in --work)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--instances", type=int, default=32, help="generated training cars")
    parser.add_argument("--resolution", type=int, default=128, help="generated image side (px)")
    parser.add_argument("--views", type=int, default=16, help="generated views (and input views) per car")
    parser.add_argument("--images", type=int, default=64, help="images per batch")
    parser.add_argument("--rays", type=int, default=768, help="rays per image")
    parser.add_argument("--hidden", type=int, default=None, help="decoder width (preset's: 512 for dvr-combined)")
    parser.add_argument("--latent", type=int, default=None, help="latent code width (preset's: 256)")
    parser.add_argument("--blocks", type=int, default=None, help="decoder blocks (preset's: 5)")
    parser.add_argument("--proposals", type=int, default=None, help="initial proposals per ray (preset's: 16)")
    parser.add_argument("--input-size", type=int, default=None, help="encoder input side (preset's: 224)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    if args.device == "cpu":
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    from bts_studio.utils.profiling import count_host_reads, count_ops, cuda_sync_sites

    work = args.work or Path(tempfile.mkdtemp(prefix="dvr_step_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    begin = time.perf_counter()
    data = args.data or generate(work, args)
    generated_s = time.perf_counter() - begin
    trainer = build_trainer(args, data, work)
    pipeline, model = trainer.pipeline, trainer.pipeline.model
    cuda = str(model.device).startswith("cuda")
    clock = Clock(cuda)
    step = 0
    for step in range(args.warmup):
        trainer.train_iteration(step)
    step = args.warmup
    results: Dict[str, object] = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "preset": args.preset,
        "images_per_batch": args.images,
        "rays_per_image": args.rays,
        "hidden_size": model.config.hidden_size,
        "latent_dim": model.config.latent_dim,
        "proposals": model.num_proposals(),
        "tf32": torch.backends.cuda.matmul.allow_tf32 or os.environ.get("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE") == "1",
        "data_generation_s": round(generated_s, 1),
    }
    # 1. whole training steps
    results["train_iteration_ms"] = clock(trainer.train_iteration, args.steps, step)
    step += args.steps
    # 2. the batch alone
    datamanager = pipeline.datamanager
    results["next_train_ms"] = clock(datamanager.next_train, args.steps, step)
    # 3. model only: forward + losses + backward of one fixed batch
    ray_bundle, batch = datamanager.next_train(step)

    def model_step(_: int) -> None:
        outputs = pipeline._model(pipeline._with_codes(ray_bundle, batch))  # re-encodes: codes are per step
        loss_dict = model.get_loss_dict(outputs, batch, model.get_metrics_dict(outputs, batch))
        sum(loss_dict.values()).backward()

    model_step(0)
    results["model_step_ms"] = clock(model_step, args.steps)
    trainer.optimizers.zero_grad_all()
    # 4. host syncs of one step of each kind
    steps = iter(range(step, step + 10))
    for name, fn in (
        ("train_iteration", lambda: trainer.train_iteration(next(steps))),
        ("next_train", lambda: datamanager.next_train(step)),
        ("model_step", lambda: model_step(0)),
    ):
        counts = count_ops(fn, cuda=cuda)
        results[f"{name}_syncs"] = {k: v for k, v in counts.items() if k.startswith(("sync", "cuda_sync"))}
        results[f"{name}_syncs"]["host_reads"] = count_host_reads(fn)  # .tolist()/.item()/bool() from Python
        results[f"{name}_aten_ops"] = counts["aten_ops_top_level"]
    if cuda:
        sites = cuda_sync_sites(lambda: trainer.train_iteration(next(steps)))
        results["train_iteration_sync_sites"] = dict(list(sites.items())[:20])
        busy, table = kernel_ms(lambda: trainer.train_iteration(next(steps)))
        results["train_iteration_kernel_ms"], results["train_iteration_gpu_ops"] = busy, table
    per_step = [results["train_iteration_ms"], results["next_train_ms"], results["model_step_ms"]]
    print(
        "dvr step bench: {} on {}, {} images x {} rays, hidden {}, {} proposals".format(
            args.preset, results["device"], args.images, args.rays, results["hidden_size"], results["proposals"]
        )
    )
    print("  ms/step: train_iteration {:.2f}, next_train {:.2f}, model (fwd+loss+bwd) {:.2f}".format(*per_step))
    if cuda:
        print(
            f"  GPU kernel time of one train_iteration: {results['train_iteration_kernel_ms']:.2f} ms (the rest of "
            "the step is the GPU waiting for the host)"
        )
    for name in ("train_iteration", "next_train", "model_step"):
        syncs, ops = results[f"{name}_syncs"], results[f"{name}_aten_ops"]
        print(f"  {name}: host-sync aten ops {syncs}, top-level aten ops {ops}")
    if cuda:
        print("  sync sites (file:line -> count) of one train_iteration:")
        for site, count in results["train_iteration_sync_sites"].items():
            print(f"    {count:4d}  {site}")
        print("  GPU time by op in one train_iteration:")
        print(results["train_iteration_gpu_ops"])
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
