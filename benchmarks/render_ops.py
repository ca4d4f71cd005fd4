"""CPU proxies of bts-density's per-image inference cost (issue 17): aten ops, host syncs and wall time per image.

On the GPU every aten op is (at least) one kernel launch and every ``.item()`` / ``nonzero`` / ``bool(tensor)`` is a
host-device sync, so counting them on the CPU with ``torch.profiler`` shows how launch-bound one image is without a
GPU. Measures ``model.encode_view`` (once per image) and ``model.render_camera`` (the full frame, the path of
``bts-studio bench``, ``depth_map``, ns-render and the viewer) on random weights and a random image, and prints one
JSON line per chunk size.

    python benchmarks/render_ops.py                                   # ResNet-18, 64x160, chunks 2560 and whole frame
    python benchmarks/render_ops.py --height 192 --width 640 --chunks 32768 0 --device cuda   # GPU: same counts
"""

import argparse
import json
import time

import torch

from bts_studio.bench import BenchConfig, build_model, camera_rig
from bts_studio.utils.profiling import count_ops, cuda_sync_sites


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resnet-layers", type=int, default=18)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument("--chunks", type=int, nargs="+", default=[2560, 0], help="rays per pass; 0: whole frame")
    parser.add_argument("--repeats", type=int, default=5, help="timed renders per chunk size (after one warm-up)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = BenchConfig(
        device=args.device,
        resnet_layers=args.resnet_layers,
        height=args.height,
        width=args.width,
        num_samples=args.num_samples,
        render_views=0,
    )
    model = build_model(config, device).eval()
    K, c2w, cameras = camera_rig(config, device)
    image = torch.rand(3, args.height, args.width, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    reference = None
    for chunk in args.chunks:
        model.config.eval_num_rays_per_chunk = chunk or args.height * args.width
        model.config.eval_chunk_memory_fraction = 0.0  # exactly the chunk asked for
        num_chunks = -(-args.height * args.width // model.config.eval_num_rays_per_chunk)
        with torch.no_grad():
            source = model.encode_view(image, K, c2w[0])
            model.render_camera(cameras[0:1], source)  # warm-up
            cuda = device.type == "cuda"
            encode = count_ops(lambda: model.encode_view(image, K, c2w[0]), cuda)
            render = count_ops(lambda source=source: model.render_camera(cameras[0:1], source), cuda)
            if cuda:  # the syncs the CPU cannot show (.tolist() of a GPU tensor), with the lines that made them
                render["cuda_sync_sites"] = cuda_sync_sites(
                    lambda source=source: model.render_camera(cameras[0:1], source)
                )
            times = []
            for _ in range(args.repeats):
                sync()
                start = time.perf_counter()
                depth = model.render_camera(cameras[0:1], source)["z_depth"]
                sync()
                times.append(time.perf_counter() - start)
            sync()
            start = time.perf_counter()
            for _ in range(args.repeats):
                model.encode_view(image, K, c2w[0])
            sync()
            encode_ms = 1000 * (time.perf_counter() - start) / args.repeats
        if reference is None:
            reference = depth
        row = {
            "shape": f"ResNet-{args.resnet_layers} {args.height}x{args.width}x{args.num_samples}",
            "chunk": model.config.eval_num_rays_per_chunk,
            "chunks_per_image": num_chunks,
            "render_aten_ops": render["aten_ops"],
            "render_aten_ops_top_level": render["aten_ops_top_level"],
            "render_top_level_ops_per_chunk": round(render["aten_ops_top_level"] / num_chunks, 1),
            "render_sync_ops": render["sync_ops"],
            "render_sync_by_op": render["sync_by_op"],
            **{
                f"render_{key}": render[key]
                for key in ("cuda_kernel_launches", "cuda_sync_calls", "cuda_sync_sites")
                if key in render
            },
            "encode_aten_ops": encode["aten_ops"],
            "encode_sync_ops": encode["sync_ops"],
            "render_ms_median": round(1000 * sorted(times)[len(times) // 2], 2),
            "render_ms_min": round(1000 * min(times), 2),
            "encode_ms": round(encode_ms, 2),
            "depth_max_abs_diff_vs_first_chunk_size": float((depth - reference).abs().max()),
        }
        print(json.dumps(row))


if __name__ == "__main__":
    main()
