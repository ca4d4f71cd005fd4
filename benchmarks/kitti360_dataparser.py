"""Time the ``kitti360-data`` dataparser: first parse (building the image, fisheye and lidar caches) vs cached.

Usage::

    bts-studio synth-kitti360 /tmp/kitti360_default          # generator defaults
    python benchmarks/kitti360_dataparser.py /tmp/kitti360_default

The cache goes to a fresh temporary folder (``--cache-dir`` semantics), so the data folder is never changed
and every run measures a cold first parse. The numbers belong in docs/benchmarks.md.
"""

import argparse
import tempfile
import time
from pathlib import Path

from bts_studio.data.kitti360.dataparser import Kitti360DataParserConfig

SPLITS = ("train", "val", "test")


def parse_all(config: Kitti360DataParserConfig) -> dict:
    """Parse every split with a fresh parser (as ns-train / ns-eval do) and count images."""
    parser = config.setup()
    return {split: len(parser.get_dataparser_outputs(split).image_filenames) for split in SPLITS}


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("data", type=Path, help="KITTI-360 (or synthetic KITTI-360) root")
    arguments.add_argument("--height", type=int, default=192)
    arguments.add_argument("--width", type=int, default=640)
    options = arguments.parse_args()
    with tempfile.TemporaryDirectory(prefix="kitti360_cache_") as cache:
        config = Kitti360DataParserConfig(
            data=options.data, target_height=options.height, target_width=options.width, cache_dir=Path(cache)
        )
        for label in ("first (cold cache)", "cached"):
            started = time.perf_counter()
            counts = parse_all(config)
            elapsed = time.perf_counter() - started
            images = "/".join(str(counts[split]) for split in SPLITS)
            print(f"{label}: {elapsed:.2f} s for train/val/test = {images} images")


if __name__ == "__main__":
    main()
