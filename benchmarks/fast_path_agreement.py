"""Depth of bts-density's fast paths against the fp32 twin on a trained checkpoint (issue 17's acceptance).

For the first ``--images`` test images, the z-depth of each image's own view (``inference.depth_map``) is rendered
with every variant of ``bts_studio.bench.VARIANTS`` named in ``--variants`` and compared with the ``twin-fp32``
reference (unfused density, fp32 encoder, every TF32 flag off): mean and 99th percentile of the per-pixel relative
difference over all pixels of all images. A failing variant is reported, the others still run::

    python benchmarks/fast_path_agreement.py --load-config outputs/.../config.yml --output agreement.json
"""

import argparse
import json
import traceback
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--load-config", type=Path, required=True, help="config.yml of a bts-density run")
    parser.add_argument("--output", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--images", type=int, default=8, help="test images to compare (default 8)")
    parser.add_argument("--variants", nargs="+", default=["twin", "triton", "default", "fast"])
    args = parser.parse_args()

    from nerfstudio.utils.eval_utils import eval_setup

    import bts_studio  # noqa: F401  (checkpoint globals, registry)
    from bts_studio.bench import VARIANTS, apply_variant, depth_agreement
    from bts_studio.methods.bts.inference import depth_map, source_from_dataset

    _, pipeline, checkpoint, step = eval_setup(args.load_config, test_mode="test")
    model = pipeline.model
    count = min(args.images, len(pipeline.datamanager.eval_dataset))
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)

    def depths(name: str) -> torch.Tensor:
        apply_variant(model, VARIANTS[name])
        model.forget_sources()  # sources hold encoder features, which depend on the encoder precision
        with torch.no_grad():
            maps = [depth_map(model, source_from_dataset(pipeline, "test", index)) for index in range(count)]
        if model.net.triton_error is not None:
            results.setdefault("notes", []).append(f"{name}: Triton failed, projected used: {model.net.triton_error!r}")
        return torch.stack(maps)

    results: dict = {"checkpoint": str(checkpoint), "step": int(step), "images": count, "variants": {}}
    reference = depths("twin-fp32")
    results["reference_depth_mean_m"] = float(reference.mean())
    for name in args.variants:
        try:
            results["variants"][name] = depth_agreement(depths(name), reference)
        except Exception as error:  # noqa: BLE001 - reported; the other variants still run
            traceback.print_exc()
            results["variants"][name] = {"error": repr(error)[:1000]}
        print(name, results["variants"][name], flush=True)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = flags
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(args.output)


if __name__ == "__main__":
    main()
