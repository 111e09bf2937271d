"""How fast faces are decoded into the image cache (facelib.imagecache.load_images), per face size.

    .venv/bin/python benchmarks/decode.py [--data DATA] [--repeat 10]

Without --data it renders a small synthetic set at 112 px (6 identities) into a temporary folder. Every image is
listed `--repeat` times, so the timed decoding is long enough to measure; each size decodes into a fresh cache.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from facelib import imagecache, layouts, synthetic


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="dataset (default: a small synthetic set at 112 px, made in a temporary folder)")
    parser.add_argument("--repeat", type=int, default=10, help="times each image is listed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        data = args.data or synthetic.generate(Path(work) / "data", identities=6, size=112)
        images = pd.concat([layouts.load(data).images] * args.repeat, ignore_index=True)
        for size in (64, 112):
            cache = Path(work) / f"cache-{size}"
            start = time.perf_counter()
            imagecache.load_images(images, size, cache_dir=cache, progress=False)
            seconds = time.perf_counter() - start
            print(
                f"{size} px: {len(images)} faces in {seconds:.1f} s, {len(images) / seconds:.0f} faces/s "
                f"({os.cpu_count()} decoding threads)"
            )


if __name__ == "__main__":
    main()
