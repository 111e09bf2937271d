"""Training and embedding throughput, and how far each path is from what the machine can do, in one run.

    .venv/bin/python benchmarks/throughput.py [--data DATA] [--image-size 112] [--steps 10] [--note TEXT]

Writes benchmarks/results/throughput.json (atomically) and prints a table.

facelib: faces decoded once into a cached uint8 tensor, augmented per batch as tensors (one grid_sample),
  the backbone with plain swish and channels-last tensors (facelib.models).
library default: EfficientNet.from_name as it comes (memory-efficient autograd swish, NCHW tensors), fed by
  a torch DataLoader that opens, crops, resizes and augments each image with PIL / torchvision transforms.
ONNX Runtime: the bare inference network (backbone + embedding) exported by facelib.export, in float32 and
  dynamically quantised to int8 (onnxruntime.quantization.quantize_dynamic), on the same threads.

Both trainers train the same Triarchy head and losses on the same PK batches with Adam; every embedding path
embeds the same images (one forward pass per image, no mirror average). The limit: the measured float32 matmul
peak (a 2048 x 2048 product) on the same threads; each path's achieved GFLOP/s = images/s x FLOPs per image.
FLOPs of the forward pass are counted with torch's FlopCounterMode (convolutions and matmuls); training counts
3x forward (the backward computes the input and the weight gradients, each about one forward), because
FlopCounterMode over-counts the backward of grouped (depthwise) convolutions by the group count.
"""

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch
from efficientnet_pytorch import EfficientNet
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from facelib import export, layouts, losses, models, splits, synthetic
from facelib.imagecache import Augmentation, load_images, to_model_input
from facelib.io_utils import atomic_write_text
from facelib.sampler import PKSampler

BATCH = (8, 8)
EMBED_BATCH = 128
WARMUP = 2  # untimed steps first: the first passes allocate memory and pick kernels
PEAK_SIZE = 2048  # the matmul that measures the float32 peak
RESULTS = Path(__file__).parent / "results" / "throughput.json"


class LibraryDefaultTriarchy(nn.Module):
    """The Triarchy head on efficientnet_pytorch's default EfficientNet-B0 (memory-efficient swish, NCHW)."""

    def __init__(self, num_ids):
        super().__init__()
        self.backbone = EfficientNet.from_name("efficientnet-b0", include_top=False)
        self.embedding = nn.Linear(models.FEATURE_DIM, models.EMBEDDING_DIM)
        self.classifier = nn.Linear(models.EMBEDDING_DIM, num_ids)
        self.logit_bn = nn.BatchNorm1d(num_ids)

    def embed(self, images):
        return self.embedding(self.backbone(images).flatten(1))

    def forward(self, images):
        embedding = self.embed(images)
        return embedding, self.logit_bn(self.classifier(embedding))


class PILFaces(torch.utils.data.Dataset):
    """Per-sample loading, the usual way: PIL decode, centre-square crop, resize, augment, to tensor."""

    def __init__(self, images, size, train):
        self.images, self.identities = images["path"].tolist(), pd.factorize(images["identity"])[0].tolist()
        augment = (
            [
                v2.RandomHorizontalFlip(),
                v2.RandomAffine(8, translate=(0.08, 0.08), scale=(1.0, 1.18)),
                v2.ColorJitter(0.2, 0.2),
            ]
            if train
            else []
        )
        self.transform = v2.Compose(
            [
                v2.PILToTensor(),
                *augment,
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize([0.5] * 3, [0.5] * 3),
                *([v2.RandomErasing()] if train else []),
            ]
        )
        self.size = size

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        with Image.open(self.images[index]) as image:
            image = image.convert("RGB")
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            image = image.crop((left, top, left + side, top + side)).resize((self.size, self.size), Image.BILINEAR)
        return self.transform(image), self.identities[index]


def images_per_second(step, batches, warmup=WARMUP):
    """Median throughput of `step(batch)` (which returns the batch's image count) over `batches`, after `warmup`
    untimed steps. Each interval runs from the end of one step to the end of the next, so it includes fetching
    the batch. The median, not the mean, so that other processes' bursts on a shared machine do not decide it."""
    rates, last = [], time.perf_counter()
    for i, batch in enumerate(batches):
        count = step(batch)
        now = time.perf_counter()
        if i >= warmup:
            rates.append(count / (now - last))
        last = now
    return statistics.median(rates)


def optimise(model, criterion):
    optimizer = torch.optim.Adam(model.parameters(), lr=3.5e-4, weight_decay=5e-4)

    def step(images, labels):
        embedding, logits = model(images)
        total, _ = criterion(embedding, logits, labels)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        return len(labels)

    return step


def triarchy_criterion(num_ids):
    """The original's Triarchy losses (the raw triplet distance; the speed is what is measured here)."""
    return losses.TriarchyCriterion(
        identity=losses.IdentityLoss(label_smoothing=0.1),
        triplet=losses.SoftMarginTriplet("raw"),
        center=losses.CenterLoss(num_ids, models.EMBEDDING_DIM, weight=5e-4),
    )


def facelib_training(images, size, sampler, steps, compile_mode=None, last_stride=2):
    """images/s of facelib's training step; `compile_mode` wraps the model in torch.compile with that mode (the
    compilation happens in the untimed warm-up steps); `last_stride` is the backbone's (facelib.models.Backbone)."""
    faces = load_images(images, size)
    labels = torch.from_numpy(pd.factorize(images["identity"])[0])
    num_ids = int(labels.max()) + 1
    torch.manual_seed(0)
    model = models.Triarchy(num_ids, last_stride=last_stride).train()
    if compile_mode:
        model = torch.compile(model, mode=compile_mode)
    step = optimise(model, triarchy_criterion(num_ids))
    augment, generator = Augmentation(), torch.Generator().manual_seed(0)

    def run(indices):
        indices = torch.as_tensor(indices)
        batch, _ = augment(faces[indices], generator)
        return step(batch, labels[indices])

    return images_per_second(run, _take(sampler, steps + WARMUP))


def library_training(images, size, sampler, steps, workers):
    dataset = PILFaces(images, size, train=True)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=_FixedBatches(sampler, steps + WARMUP), num_workers=workers
    )
    torch.manual_seed(0)
    model = LibraryDefaultTriarchy(len(set(dataset.identities))).train()
    step = optimise(model, triarchy_criterion(model.classifier.out_features))
    return images_per_second(lambda batch: step(batch[0], batch[1]), loader)


@torch.inference_mode()
def facelib_embedding(faces):
    model = models.EmbeddingNet().eval()

    def embed(chunk):
        model(to_model_input(chunk))
        return len(chunk)

    return images_per_second(embed, faces.split(EMBED_BATCH))


def onnx_embedding(faces, size):
    """images/s of ONNX Runtime on the bare network, float32 and int8 (dynamic quantisation)."""
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rates = {}
    with tempfile.TemporaryDirectory() as folder:
        fp32, int8 = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        export.export_graph(models.EmbeddingNet().eval(), size, fp32)
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
        for name, path in [("onnxruntime_fp32", fp32), ("onnxruntime_int8", int8)]:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

            def embed(chunk):
                session.run(None, {export.INPUT_NAME: to_model_input(chunk).contiguous().numpy()})
                return len(chunk)

            rates[name] = images_per_second(embed, faces.split(EMBED_BATCH))
    return rates


@torch.inference_mode()
def library_embedding(images, size, workers):
    model = LibraryDefaultTriarchy(1).eval()
    loader = torch.utils.data.DataLoader(
        PILFaces(images, size, train=False), batch_size=EMBED_BATCH, num_workers=workers
    )

    def embed(batch):
        model.embed(batch[0])
        return len(batch[0])

    return images_per_second(embed, loader)


class _FixedBatches:
    """The first n batches of a batch sampler (so both pipelines train on exactly the same PK batches)."""

    def __init__(self, sampler, n):
        self.batches = _take(sampler, n)

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


def _take(sampler, n):
    batches = []
    epoch = 0
    while len(batches) < n:
        sampler.set_epoch(epoch)
        batches.extend(sampler)
        epoch += 1
    return batches[:n]


def forward_flops_per_image(size):
    """FLOPs (multiply and add counted apart) of one forward pass of the inference network, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    model = models.EmbeddingNet().eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size).contiguous(memory_format=torch.channels_last))
    return counter.get_total_flops()


def matmul_peak_gflops(n=PEAK_SIZE, repeats=10):
    """float32 GFLOP/s of an n x n matmul on torch's threads: the best of `repeats` (the machine's limit)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - started) / 1e9)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="dataset (default: the synthetic default set, generated if missing)")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps (after the warm-up steps)")
    parser.add_argument("--embed-images", type=int, default=1280, help="images to embed")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the library pipeline")
    parser.add_argument("--note", default="", help="how the machine was used meanwhile, stored in the JSON")
    parser.add_argument("--out", default=RESULTS, type=Path, help="JSON file to write")
    args = parser.parse_args()
    if args.embed_images <= WARMUP * EMBED_BATCH:
        parser.error(
            f"--embed-images: more than {WARMUP * EMBED_BATCH} (the untimed warm-up batches), got {args.embed_images}"
        )

    data = layouts.load(args.data or synthetic.ensure_default())
    images = splits.training_images(data)
    sampler = PKSampler(images["identity"].to_numpy(), *BATCH, seed=0)
    size = args.image_size
    threads = torch.get_num_threads()
    print(f"{len(images)} images, {size}x{size}, batch {BATCH[0]}x{BATCH[1]}, {threads} threads")

    faces = load_images(images, size)  # decode once, outside the timing (every later run starts from this cache)
    embed_faces = faces[: args.embed_images]
    training_rates = {
        "facelib": facelib_training(images, size, sampler, args.steps),
        "library_default": library_training(images, size, sampler, args.steps, args.workers),
    }
    embedding_rates = {
        "torch_eager": facelib_embedding(embed_faces),
        **onnx_embedding(embed_faces, size),
        "library_default": library_embedding(images[: args.embed_images], size, args.workers),
    }
    forward = forward_flops_per_image(size)
    peak = matmul_peak_gflops()
    flops = {"training": 3 * forward, "embedding": forward}

    def path_result(kind, rate, baseline):
        achieved = rate * flops[kind] / 1e9
        return {
            "images_per_s": round(rate, 1),
            "vs_library_default": round(rate / baseline, 2),
            "gflops_per_s": round(achieved, 1),
            "share_of_peak": round(achieved / peak, 3),
        }

    result = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
        "command": "benchmarks/throughput.py",
        "arguments": {name: value for name, value in vars(args).items() if name != "out"},
        "note": args.note,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": threads,
            "torch": torch.__version__,
            "onnxruntime": _version("onnxruntime"),
        },
        "settings": {
            "image_size": size,
            "batch": list(BATCH),
            "training_steps": args.steps,
            "embed_images": len(embed_faces),
            "embed_batch": EMBED_BATCH,
        },
        "flops_per_image": {
            "forward": forward,
            "training": 3 * forward,
            "how": "forward counted by torch.utils.flop_counter.FlopCounterMode (1 multiply-add = 2 FLOPs); "
            "training = 3 x forward (input and weight gradients about one forward each), since FlopCounterMode "
            "over-counts the backward of grouped convolutions",
        },
        "peak_gflops_per_s": {
            "float32_matmul": round(peak, 1),
            "matrix": f"{PEAK_SIZE}x{PEAK_SIZE}",
            "threads": threads,
        },
        "training": {
            name: path_result("training", rate, training_rates["library_default"])
            for name, rate in training_rates.items()
        },
        "embedding": {
            name: path_result("embedding", rate, embedding_rates["library_default"])
            for name, rate in embedding_rates.items()
        },
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")

    print(f"float32 matmul peak {peak:.1f} GFLOP/s; forward {forward / 1e9:.3f} GFLOP per image")
    print(f"{'':>10} {'path':>18} {'images/s':>9} {'vs library':>10} {'GFLOP/s':>8} {'of peak':>8}")
    for kind in ("training", "embedding"):
        for name, row in result[kind].items():
            print(
                f"{kind:>10} {name:>18} {row['images_per_s']:9.1f} {row['vs_library_default']:9.2f}x "
                f"{row['gflops_per_s']:8.1f} {row['share_of_peak']:8.1%}"
            )
    print(f"wrote {args.out}")


def _version(package):
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()
