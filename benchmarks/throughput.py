"""Training and embedding throughput: facelib's pipeline against efficientnet_pytorch's defaults, in one run.

    .venv/bin/python benchmarks/throughput.py [--data DATA] [--image-size 112] [--steps 6] [--workers 0]

facelib: faces decoded once into a cached uint8 tensor, augmented per batch as tensors (one grid_sample),
  the backbone with plain swish and channels-last tensors (facelib.models).
library default: EfficientNet.from_name as it comes (memory-efficient autograd swish, NCHW tensors), fed by
  a torch DataLoader that opens, crops, resizes and augments each image with PIL / torchvision transforms.

Both train the same Triarchy head and losses on the same PK batches with Adam, and embed the same images.
Not a test: it prints images/s and the ratios (the goal is >= 3x for training on 2 CPU cores at 112 px).
"""

import argparse
import statistics
import time

import pandas as pd
import torch
from efficientnet_pytorch import EfficientNet
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from facelib import layouts, losses, models, synthetic, training
from facelib.imagecache import Augmentation, load_images, to_model_input
from facelib.sampler import PKSampler

BATCH = (8, 8)
EMBED_BATCH = 128
WARMUP = 2  # untimed steps first: the first passes allocate memory and pick kernels


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


def facelib_training(images, size, sampler, steps):
    faces = load_images(images, size)
    labels = torch.from_numpy(pd.factorize(images["identity"])[0])
    torch.manual_seed(0)
    model = models.Triarchy(int(labels.max()) + 1).train()
    step = optimise(model, losses.TriarchyCriterion(model.classifier.out_features))
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
    step = optimise(model, losses.TriarchyCriterion(model.classifier.out_features))
    return images_per_second(lambda batch: step(batch[0], batch[1]), loader)


@torch.inference_mode()
def facelib_embedding(images, size, count):
    model = models.EmbeddingNet().eval()
    faces = load_images(images, size)[:count]  # a cache hit, as in every run after the first

    def embed(chunk):
        model(to_model_input(chunk))
        return len(chunk)

    return images_per_second(embed, faces.split(EMBED_BATCH))


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="dataset (default: the synthetic default set, generated if missing)")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps (after the warm-up steps)")
    parser.add_argument("--embed-images", type=int, default=1280, help="images to embed")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the library pipeline")
    args = parser.parse_args()

    data = layouts.load(args.data or synthetic.ensure_default())
    images = training.training_images(data)
    sampler = PKSampler(images["identity"].to_numpy(), *BATCH, seed=0)
    size = args.image_size
    print(f"{len(images)} images, {size}x{size}, batch {BATCH[0]}x{BATCH[1]}, {torch.get_num_threads()} threads")

    load_images(images, size)  # decode once, outside the timing (every later run starts from this cache)
    results = {
        "training": (
            facelib_training(images, size, sampler, args.steps),
            library_training(images, size, sampler, args.steps, args.workers),
        ),
        "embedding": (
            facelib_embedding(images, size, args.embed_images),
            library_embedding(images[: args.embed_images], size, args.workers),
        ),
    }
    print(f"{'':>10} {'facelib':>10} {'library':>10} {'ratio':>7}   (images/s)")
    for name, (ours, theirs) in results.items():
        print(f"{name:>10} {ours:10.1f} {theirs:10.1f} {ours / theirs:6.2f}x")


if __name__ == "__main__":
    main()
