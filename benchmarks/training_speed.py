"""Training speed: what thread, allocator, batch, torch.compile and last-stride settings give facelib's training step.

    .venv/bin/python benchmarks/training_speed.py [--data DATA] [--image-size 112] [--steps 10] [--note TEXT]

Run by hand on an otherwise idle machine. Writes benchmarks/results/training_speed.json and training_speed.md
(atomically) and prints a table.

Every variant times the same step as benchmarks/throughput.py (facelib's Triarchy training step on PK batches
of the same images, Adam; median images/s after untimed warm-up steps, which is also where torch.compile
compiles) and changes one setting of the reference: 2 threads, glibc malloc, batch 8 x 8, eager mode, the
backbone's own last stride (2). Each variant runs in a fresh process, because the thread count and the allocator
are fixed when a process starts (the allocator by LD_PRELOAD of Debian's libjemalloc2 / libtcmalloc-minimal4; a
variant whose library is not installed is recorded as skipped). The library default (efficientnet_pytorch as it
comes, per-sample PIL loading) is timed the same way, so every row also reads as a multiple of it: issue 13's 3x
goal.
"""

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from facelib.io_utils import atomic_write_text

RESULTS = Path(__file__).parent / "results"
ALLOCATORS = {
    "jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "tcmalloc": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
}
# name -> the settings it changes from the reference (threads 2, batch 8 x 8, no allocator, eager)
VARIANTS = {
    "library default": dict(pipeline="library"),
    "facelib (reference)": {},
    "1 thread": dict(threads=1),
    "threads bound to cores (OMP_PROC_BIND=close, OMP_PLACES=cores)": dict(
        env={"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"}
    ),
    "jemalloc": dict(allocator="jemalloc"),
    "tcmalloc": dict(allocator="tcmalloc"),
    "batch 16 x 8 (twice the images per step)": dict(batch=(16, 8)),
    "batch 8 x 16 (twice the images per step)": dict(batch=(8, 16)),
    "batch 32 x 8 (four times the images per step)": dict(batch=(32, 8)),
    "torch.compile, mode default": dict(compile="default"),
    "torch.compile, mode max-autotune-no-cudagraphs": dict(compile="max-autotune-no-cudagraphs"),
    "torch.compile, mode reduce-overhead": dict(compile="reduce-overhead"),
    "last stride 1 (a 7 x 7 last feature map at 112 px instead of 3 x 3)": dict(last_stride=1),
}
REFERENCE = dict(pipeline="facelib", threads=2, batch=(8, 8), allocator=None, compile=None, env={}, last_stride=2)
TIMEOUT_S = 900  # a compile mode that takes longer than this is recorded as timed out


def measure(settings, data, size, steps):
    """images/s of one variant, in this process (called in the child)."""
    import throughput

    from facelib import layouts, splits, synthetic
    from facelib.sampler import PKSampler

    torch.set_num_threads(settings["threads"])
    images = splits.training_images(layouts.load(data or synthetic.ensure_default()))
    sampler = PKSampler(images["identity"].to_numpy(), *settings["batch"], seed=0)
    if settings["pipeline"] == "library":
        return throughput.library_training(images, size, sampler, steps, workers=0)
    return throughput.facelib_training(
        images, size, sampler, steps, compile_mode=settings["compile"], last_stride=settings["last_stride"]
    )


def run_variant(name, args):
    """Runs one variant in a child process with its threads, allocator and environment; returns its row."""
    settings = {**REFERENCE, **VARIANTS[name]}
    env = {**os.environ, **settings["env"], "OMP_NUM_THREADS": str(settings["threads"])}
    if settings["allocator"]:
        library = ALLOCATORS[settings["allocator"]]
        if not Path(library).exists():
            return {**_row(name, settings), "skipped": f"{library} is not installed"}
        env["LD_PRELOAD"] = library
    command = [sys.executable, __file__, "--child", name, "--image-size", str(args.image_size)]
    command += ["--steps", str(args.steps), *(["--data", args.data] if args.data else [])]
    try:
        child = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {**_row(name, settings), "skipped": f"did not finish in {TIMEOUT_S} s"}
    if child.returncode != 0:
        return {**_row(name, settings), "skipped": "failed: " + child.stderr.strip().splitlines()[-1]}
    return {**_row(name, settings), "images_per_s": round(json.loads(child.stdout.splitlines()[-1]), 1)}


def _row(name, settings):
    return {"variant": name, "settings": {key: value for key, value in settings.items() if value not in ({}, None)}}


def markdown(result):
    rates = {row["variant"]: row.get("images_per_s") for row in result["rows"]}
    reference, library = rates.get("facelib (reference)"), rates.get("library default")
    lines = [
        "# Training speed: settings tried on facelib's training step (benchmarks/training_speed.py)",
        "",
        f"{result['date']}, {result['settings']['image_size']} px, {result['settings']['steps']} timed steps, "
        f"{result['machine']['cpu_count']} cores, torch {result['machine']['torch']}. {result['note']}",
        "",
        "| variant | images/s | vs facelib reference | vs library default |",
        "| --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        if "images_per_s" in row:
            rate = row["images_per_s"]
            ratios = [f"{rate / base:.2f}x" if base else "–" for base in (reference, library)]
            lines.append(f"| {row['variant']} | {rate:.1f} | {' | '.join(ratios)} |")
        else:
            lines.append(f"| {row['variant']} | – ({row['skipped']}) | | |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="dataset (default: the synthetic default set, generated if missing)")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per variant")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--note", default="", help="how the machine was used meanwhile, stored with the results")
    parser.add_argument("--out", default=RESULTS, type=Path, help="folder for training_speed.json / .md")
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        settings = {**REFERENCE, **VARIANTS[args.child]}
        print(json.dumps(measure(settings, args.data, args.image_size, args.steps)))
        return

    rows = []
    for name in args.variants:
        rows.append(run_variant(name, args))
        print(rows[-1], flush=True)
    result = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
        "command": "benchmarks/training_speed.py",
        "note": args.note,
        "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__},
        "settings": {"image_size": args.image_size, "steps": args.steps, "reference": REFERENCE},
        "rows": rows,
    }
    atomic_write_text(args.out / "training_speed.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(args.out / "training_speed.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
