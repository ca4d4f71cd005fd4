"""Where does a DDP step's extra time go? Probes of the collective layer alone, for benchmarks/gpu_ddp.sh.

    python benchmarks/ddp_probe.py OUT.json [--cpu] [--params N] [--batch B] [--height H] [--width W] [--steps S]

Two processes (NCCL on GPUs 0 and 1 of CUDA_VISIBLE_DEVICES; gloo with --cpu) measure:

- ``allreduce_ms``: one all-reduce of ``N`` float32 values (default 26M, the size of bts-density's ResNet-50
  gradients), median of S calls, each synchronised: the cost DDP cannot overlap with the backward pass. Over
  NVLink it should be ~1 ms; ~10-20 ms means NCCL fell back to a slower transport (see ``NCCL_DEBUG=INFO``'s
  "via P2P/..." or "via SHM" lines in the log).
- ``small_allreduce_ms``: an all-reduce of 8 float64 values plus the host read-back: what the per-step
  ``StepAgreement`` costs.
- ``resnet50``: a torchvision ResNet-50 forward+backward+Adam step at ``[B, 3, H, W]``, 1 process without DDP
  vs 2 processes with DDP (as ``wrap_ddp`` builds it), median ms per step: DDP's own overhead on this machine,
  without our datamanager, model or trainer.

Writes one JSON file. Not a test; the numbers depend on the machine.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(function, device: torch.device, steps: int, warmup: int = 3) -> float:
    """Median milliseconds of ``function()`` (synchronised before and after each call)."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        function()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _resnet_step_ms(args, device: torch.device, ddp: bool) -> float:
    import torchvision

    from bts_studio.methods.common.distributed import wrap_ddp

    torch.manual_seed(0)
    model = torchvision.models.resnet50().to(device)
    trained = wrap_ddp(model, device, find_unused_parameters=False) if ddp else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.rand(args.batch, 3, args.height, args.width, device=device)

    def step() -> None:
        optimizer.zero_grad()
        trained(images).float().square().mean().backward()
        optimizer.step()

    return _timed(step, device, args.steps)


def _worker(rank: int, args, url: str, results) -> None:
    device = torch.device("cpu") if args.cpu else torch.device("cuda", rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("gloo" if args.cpu else "nccl", init_method=url, rank=rank, world_size=2)
    try:
        grads = torch.ones(args.params, device=device)
        small = torch.ones(8, dtype=torch.float64, device=device)
        allreduce = _timed(lambda: dist.all_reduce(grads), device, args.steps)
        small_ms = _timed(lambda: (dist.all_reduce(small), small.cpu().tolist()), device, args.steps)
        ddp_ms = _resnet_step_ms(args, device, ddp=True)
        if rank == 0:
            results.put({"allreduce_ms": allreduce, "small_allreduce_ms": small_ms, "resnet50_2proc_ddp_ms": ddp_ms})
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--cpu", action="store_true", help="gloo on the CPU (a smoke test)")
    parser.add_argument("--params", type=int, default=26_000_000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    if not args.cpu and torch.cuda.device_count() < 2:
        sys.exit("ddp_probe: needs 2 visible GPUs (or --cpu)")
    device = torch.device("cpu") if args.cpu else torch.device("cuda", 0)
    one = _resnet_step_ms(args, device, ddp=False)
    from nerfstudio.scripts.train import _find_free_port

    context = mp.get_context("spawn")
    results = context.Queue()
    url = f"tcp://127.0.0.1:{_find_free_port()}"
    mp.spawn(_worker, args=(args, url, results), nprocs=2, join=True)
    report = {**vars(args), "out": str(args.out), "resnet50_1proc_ms": one, **results.get()}
    report["resnet50_ddp_overhead_ms"] = report["resnet50_2proc_ddp_ms"] - one
    report["nccl_env"] = {k: v for k, v in os.environ.items() if k.startswith("NCCL_")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
