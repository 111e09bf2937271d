"""Training: the pretext model and the identity models (Triarchy / Baseline), on CPU, GPU or under torchrun.

Both trainers share one loop (`_fit`): the training faces are decoded once into a cached uint8 tensor
(facelib.imagecache), PK batches are drawn by facelib.sampler.PKSampler and augmented as whole tensors,
and after every epoch a checkpoint holding everything needed to continue (model, optimisers, scheduler,
epoch, every rank's RNG states, metrics history, config) is written atomically. `resume=True` restores it
and reaches the same weights as an uninterrupted run: PK batches are a pure function of (seed, epoch,
rank) and all other randomness comes from the restored RNG states.

A run's settings are one config (facelib.recipe: PretextConfig, IdentityConfig), stored with every checkpoint.
The pretext and identity tasks share one interface (`TASKS`), so the loop never asks which one it runs.

Run files (RUN = `out`):
    pretext: pretext.pt (resumable checkpoint; its backbone initialises `train_identity(init=...)`),
             pretext_metrics.csv, pretext_config.json, pretext.log
    identity: model.pt (best validation accuracy, with its threshold under "verification"; the last epoch
             where there are no validation pairs, then without a threshold),
             last.pt (resumable checkpoint), metrics.csv, config.json (+ inference_parameters), train.log
    With a weight average (IdentityConfig.ema) validation scores the average and model.pt holds it; last.pt keeps
    the trained weights under "model" (what `init` and a resume read), the average under "average" and the
    average's inference network under "embedder" (what `evaluate` reads).

Under `torchrun --nproc_per_node=N` the same functions use DistributedDataParallel (gloo on CPU, nccl on
GPU); every rank draws its own PK batches and only rank 0 writes files.
"""

import json
import logging
import math
import os
import random
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from facelib import embedding, imagecache, layouts, losses, metrics, models, options, poses, splits
from facelib.errors import FacelibError
from facelib.imagecache import Augmentation, load_images
from facelib.io_utils import atomic_save, atomic_write_text, remove_stale_temporaries
from facelib.losses import IGNORE
from facelib.recipe import IdentityConfig, PretextConfig
from facelib.sampler import PKSampler

VERIFICATION_METRIC = "cosine"  # the score whose threshold model.pt stores
CENTRE_SAMPLE = 512  # training faces whose mean embedding is the centre: ~2 s at 64 px on 2 CPU cores
MIRROR_YAW_TOLERANCE = 5.0  # degrees: a camera code mirrors another when their yaws are opposite within this

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- public API


def train_pretext(config, out, *, resume=False, overwrite=False, cache_dir=None, progress=True):
    """Train the pretext model of `config` (a facelib.recipe.PretextConfig) and return RUN/pretext.pt.

    It learns camera angle + expression (K-Face) or view + facing (CFP) on the training images (facelib.splits).
    Horizontal flips mirror the direction labels: facing left <-> right, and a camera code to the code of
    opposite yaw; a camera code without a known mirror is never flipped.
    resume: continue from RUN/pretext.pt with the config stored in it (it wins over this call's: a warning names
    any setting that differs). overwrite: replace the pretext run RUN holds; without it, or resume, such a run
    is kept and the call refused.
    """
    return _run(config, out, resume, overwrite, cache_dir, progress)


def train_identity(config, out, *, resume=False, overwrite=False, cache_dir=None, progress=True):
    """Train the identity model of `config` (a facelib.recipe.IdentityConfig: Triarchy or the Baseline); return
    RUN/model.pt, the best model by validation accuracy (facelib.splits's validation pairs).

    The run's config is stored with it, so evaluation, export and notebooks embed faces the way the model trained
    (models.load_embedder sets `.align`). resume, overwrite: as in `train_pretext`; a resumed run reaches the same
    final weights as an uninterrupted one.
    """
    p, k = config.batch
    if p < 2 or k < 2:
        warnings.warn(
            f"--batch {p} {k}: the triplet loss needs P >= 2 identities and K >= 2 images of each per batch; "
            "with this batch its anchors lack a positive or a negative"
        )
    return _run(config, out, resume, overwrite, cache_dir, progress)


def finished(checkpoint_path, **settings):
    """Whether the checkpoint at `checkpoint_path` (pretext.pt, last.pt) is of a run that trained all its epochs,
    with each of `settings` (config fields) where given; False where there is no checkpoint yet. For a finished
    run a caller skips making what only training needs (a synthetic start's set): training would return it as is.
    """
    if not Path(checkpoint_path).is_file():
        return False
    checkpoint = models.read_checkpoint(checkpoint_path)
    stored = checkpoint["config"]["settings"]
    asked = json.loads(json.dumps(settings))  # as a checkpoint stores them: a tuple (the batch) is a list
    return _trained_all_epochs(checkpoint) and all(stored.get(name) == value for name, value in asked.items())


def _trained_all_epochs(checkpoint):
    return checkpoint["epoch"] >= checkpoint["config"]["settings"]["epochs"]


# ----------------------------------------------------------------------------------------------- pretext labels


@dataclass
class PretextLabels:
    """Per-head class lists and targets [N, heads] (IGNORE where unknown), with the targets of the mirrored
    images and which images may be flipped (every head's mirror is known)."""

    classes: dict  # head -> list of class values (JSON-friendly)
    targets: torch.Tensor
    mirrored: torch.Tensor
    flippable: torch.Tensor


def pretext_labels(images):
    """Camera angle + expression where the data has camera codes (K-Face), else view + facing (CFP)."""
    if images["angle"].notna().any():
        heads = {"angle": _angle_mirror(images), "expression": lambda values: values}
    else:
        heads = {"view": lambda values: values, "facing": lambda values: [_FLIP_FACING[v] for v in values]}
    classes, targets, mirrored = {}, [], []
    for name, mirror in heads.items():
        values = images[name]
        known = sorted(values.dropna().unique().tolist())
        if len(known) < 2:
            continue
        index = {value: i for i, value in enumerate(known)}
        mirror_of = np.array([index.get(m, IGNORE) for m in mirror(known)])
        target = np.array([IGNORE if pd.isna(v) else index[v] for v in values], dtype=np.int64)
        flipped_target = np.where(target == IGNORE, IGNORE, mirror_of[np.maximum(target, 0)])
        classes[name] = [v.item() if hasattr(v, "item") else v for v in known]
        targets.append(target)
        mirrored.append(flipped_target)
    if not classes:
        raise FacelibError(
            "no pretext labels in the training images: expected camera angle + expression "
            "(K-Face file names) or frontal/profile views (CFP)"
        )
    targets, mirrored = torch.from_numpy(np.stack(targets, 1)), torch.from_numpy(np.stack(mirrored, 1))
    # a label that has no known mirror (IGNORE after flipping a known target) forbids flipping that image
    flippable = ~((mirrored == IGNORE) & (targets != IGNORE)).any(1)
    return PretextLabels(classes, targets, mirrored, flippable)


_FLIP_FACING = {"left": "right", "right": "left"}


def _angle_mirror(images):
    """Camera code -> the code whose median yaw is opposite (within MIRROR_YAW_TOLERANCE), None if unknown."""
    yaw = images.groupby("angle")["yaw"].median()

    def mirror(codes):
        result = []
        for code in codes:
            if pd.isna(yaw.get(code, np.nan)):
                result.append(None)
                continue
            gaps = (yaw + yaw[code]).abs()
            result.append(gaps.idxmin() if gaps.min() <= MIRROR_YAW_TOLERANCE else None)
        return result

    return mirror


# ----------------------------------------------------------------------------------------------- tasks


class PretextTask:
    """Every pretext head (angle + expression, or view + facing) at once (losses.PretextCriterion)."""

    files = dict(
        checkpoint="pretext.pt",
        best=None,
        metrics="pretext_metrics.csv",
        config="pretext_config.json",
        log="pretext.log",
    )

    def __init__(self, config, images):
        self.config = config
        self.labels = pretext_labels(images)
        self.heads = {name: len(values) for name, values in self.labels.classes.items()}

    @staticmethod
    def select(config, data):
        """The training images, and no validation pairs: the pretext has no embedding to verify with."""
        return splits.training_images(data, config.train_folds), data.pairs.iloc[:0]

    def views(self, images):
        """Batches are drawn without regard to view (facelib.sampler)."""
        return None

    def build(self):
        return models.PretextNet(self.heads), losses.PretextCriterion()

    def flippable(self, indices):
        return self.labels.flippable[indices]

    def mirrored(self, indices):
        """Flips are random: the facing labels follow them."""
        return None

    def loss(self, model, criterion, images, indices, flipped):
        targets = torch.where(flipped[:, None], self.labels.mirrored[indices], self.labels.targets[indices])
        return criterion(model(images), targets.to(images.device))

    def end_epoch(self, model, faces):
        """Nothing to measure: the pretext model has no embedding."""

    def checkpoint_extras(self, model):
        return dict(heads=self.heads, classes=self.labels.classes)

    config_extras = checkpoint_extras


class IdentityTask:
    """Triarchy (softmax with label smoothing + soft-margin triplet + center loss) or Baseline (no center)."""

    files = dict(checkpoint="last.pt", best="model.pt", metrics="metrics.csv", config="config.json", log="train.log")

    def __init__(self, config, images):
        self.config = config
        codes, self.identities = pd.factorize(images["identity"], sort=True)
        self.targets = torch.from_numpy(codes.astype(np.int64))
        self.facing_known = self.facing_mirrored = None
        if config.canonical_facing:
            known, mirrored = poses.canonical_facing(images)
            if not known.any():
                raise FacelibError(
                    f"{config.data_root}: canonical_facing needs the facing of the profiles (CFP fiducials, K-Face "
                    "camera codes or a yaw column); no training image has one"
                )
            self.facing_known, self.facing_mirrored = torch.tensor(known), torch.tensor(mirrored)

    @staticmethod
    def select(config, data):
        """The training images and the validation pairs that choose the best epoch."""
        images = splits.training_images(data, config.train_folds, config.val_folds)
        return images, splits.validation_pairs(data, config.val_folds)

    def views(self, images):
        """pose_aware: each identity's K images in a batch include one of every view it has (facelib.sampler)."""
        return images["view"].to_numpy() if self.config.pose_aware else None

    def build(self):
        c = self.config
        model = models.identity_model(c, len(self.identities))
        if c.init:
            models.load_backbone_from(model, c.init)
        return model, identity_criterion(c, len(self.identities))

    def flippable(self, indices):
        """canonical_facing: a face whose facing is known is never flipped at random (that would undo it)."""
        return None if self.facing_known is None else ~self.facing_known[indices]

    def mirrored(self, indices):
        """canonical_facing: the faces turned away from poses.CANONICAL_FACING, flipped always."""
        return None if self.facing_mirrored is None else self.facing_mirrored[indices]

    def loss(self, model, criterion, images, indices, flipped):
        embedding, logits = model(images)
        return criterion(embedding.float(), logits.float(), self.targets[indices].to(images.device))

    def end_epoch(self, model, faces):
        """Measure the embedding's centre (before validation, so the best epoch and its threshold use it)."""
        if self.config.centre:
            sample = np.random.default_rng(self.config.seed).permutation(len(faces))[:CENTRE_SAMPLE]
            models.measure_centre(model, faces[np.sort(sample)])

    def checkpoint_extras(self, model):
        return dict(
            num_ids=len(self.identities),
            identities=self.identities.tolist(),
            embedder=models.export_embedder(model).state_dict(),
        )

    def config_extras(self, model):
        return dict(
            num_ids=len(self.identities), inference_parameters=models.count_parameters(models.export_embedder(model))
        )


def identity_criterion(config, num_ids):
    """The identity criterion, composed from the config: a center loss only where its weight is above 0 (the
    Baseline's is 0: recipe.MODEL_DEFAULTS)."""
    center_weight = config.resolved("center_weight")
    return losses.TriarchyCriterion(
        identity=losses.IdentityLoss(config.resolved("label_smoothing"), config.margin),
        triplet=losses.SoftMarginTriplet(config.triplet_scale),
        center=losses.CenterLoss(num_ids, models.EMBEDDING_DIM, center_weight, config.center_lr)
        if center_weight > 0
        else None,
        triplet_weight=config.triplet_weight,
    )


# the loop asks the task, never which task it runs
TASKS = {PretextConfig: PretextTask, IdentityConfig: IdentityTask}


# ----------------------------------------------------------------------------------------------- runtime


@dataclass
class Runtime:
    """Where this process trains: its device, and its rank among `world_size` torchrun processes."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    owns_group: bool = False  # this process initialised the process group, so it also tears it down

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def autocast(self):
        """bfloat16 autocast on CUDA (no loss scaling needed); full precision elsewhere."""
        if self.device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()


def _runtime(device):
    """The device ('auto': CUDA when available, else CPU) and, under torchrun (WORLD_SIZE > 1), the process group."""
    device = models.resolve_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Runtime(torch.device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Runtime(torch.device(device), dist.get_rank(), dist.get_world_size(), owns_group)


def _seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state(generator):
    """Every random stream's state in types the safe checkpoint loader accepts (ints, lists, tensors)."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = dict(
        python=random.getstate(),
        numpy=[name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian],
        torch=torch.get_rng_state(),
        augment=generator.get_state(),
    )
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state, generator):
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    generator.set_state(state["augment"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _gather(runtime, obj):
    """Every rank's `obj`, as a list indexed by rank."""
    if runtime.world_size == 1:
        return [obj]
    gathered = [None] * runtime.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def _mean_over_ranks(runtime, values):
    if runtime.world_size > 1:
        dist.all_reduce(values)
        values /= runtime.world_size
    return values


def _attach_log(path, runtime, progress):
    """Log lines to RUN/<task>.log (rank 0) and, when showing progress, to stdout; `_above_the_bars` then
    prints the stdout lines above the progress bars."""
    handlers = []
    if runtime.is_main:
        handlers.append(logging.FileHandler(path))
        if progress:
            handlers.append(logging.StreamHandler(sys.stdout))
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handlers


def _above_the_bars(runtime, progress):
    """tqdm's own redirection of the console log lines (`_attach_log`), so they never break a progress bar."""
    return logging_redirect_tqdm([log], tqdm_class=tqdm) if progress and runtime.is_main else nullcontext()


# ----------------------------------------------------------------------------------------------- the loop


def _run(config, out, resume, overwrite, cache_dir, progress):
    """Check everything the user gave, decide between a fresh run, a resumed one and a refusal, then train."""
    task_class = TASKS[type(config)]
    out = options.output_folder(out)
    imagecache.cache_folder(cache_dir)
    files = {name: out / file for name, file in task_class.files.items() if file}
    checkpoint = None
    if resume:
        checkpoint = models.read_checkpoint(files["checkpoint"])
        if checkpoint["kind"] != config.kind:
            raise FacelibError(f"{files['checkpoint']}: cannot resume a {checkpoint['kind']} run as {config.kind}")
        # a run continues exactly as it started (the lr schedule spans its epochs), whatever the options now
        config = _resumed_config(checkpoint["config"]["settings"], config, files["checkpoint"])
    else:
        if not overwrite:
            _refuse_to_replace(out, files, config.kind)
        if getattr(config, "init", None):
            models.read_checkpoint(config.init)  # a wrong --init fails now, not after decoding the images
    runtime = _runtime(config.device)
    if runtime.is_main:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out, task_class.files.values())
        if overwrite:
            for path in _results(files):
                path.unlink()
    handlers = _attach_log(out / task_class.files["log"], runtime, progress)
    try:
        with _above_the_bars(runtime, progress):
            try:
                return _fit(task_class, config, files, checkpoint, runtime, cache_dir, progress)
            except FacelibError as error:
                log.error("stopped: %s", error)
                raise
    finally:
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()
        if runtime.owns_group:
            dist.destroy_process_group()


def _resumed_config(stored, given, checkpoint_path):
    """The run's own config (on this call's device); a warning names the settings this call asked to be
    different."""
    resumed = type(given).from_stored(stored, device=given.device)
    kept = resumed.stored()
    ignored = [
        f"{name} {kept.get(name)} (asked {value})"
        for name, value in given.overrides().items()
        if kept.get(name) != value
    ]
    if ignored:
        warnings.warn(
            f"resuming {checkpoint_path} with the run's own settings, which win over this call's: "
            f"{', '.join(ignored)}; for other settings train a new run (a new --out)"
        )
    return resumed


def _results(files):
    """The files of `files` that hold a run's results (checkpoint, best model, metrics) and exist."""
    return [path for name, path in files.items() if name in ("checkpoint", "best", "metrics") and path.exists()]


def _refuse_to_replace(out, files, kind):
    """Never replace a run's results unasked."""
    existing = [path.name for path in _results(files)]
    if existing:
        raise FacelibError(
            f"{out} already holds a {kind} run ({', '.join(existing)}): "
            "continue it with --resume, choose a new --out, or replace it with --overwrite"
        )


def _check_same_data(checkpoint, images, task, data_root, checkpoint_path):
    """A resumed run must see the images it started on (the classifier has one output per identity)."""
    config = checkpoint["config"]
    now = (int(images["identity"].nunique()), len(images))
    then = (config["identities"], config["training_images"])
    names = checkpoint.get("identities")
    if now != then or (names is not None and names != task.identities.tolist()):
        raise FacelibError(
            f"{data_root}: the data no longer matches {checkpoint_path}: the run started on {then[0]} identities "
            f"({then[1]} images), the data now has {now[0]} ({now[1]} images); restore the data, or train a new "
            "run (a new --out)"
        )


def _load_faces(runtime, images, size, align, cache_dir, progress):
    """Rank 0 decodes (and caches) first; the other ranks then read the cache instead of decoding again."""
    if runtime.is_main:
        faces = load_images(images, size, cache_dir, progress=progress, align=align)
    if runtime.world_size > 1:
        dist.barrier()
    if not runtime.is_main:
        faces = load_images(images, size, cache_dir, progress=False, align=align)
    return faces


@dataclass
class _Training:
    """Everything that changes while training, i.e. what a checkpoint must restore."""

    model: torch.nn.Module
    criterion: losses.Criterion  # holds the center-loss centers for Triarchy
    optimizer: torch.optim.Optimizer
    criterion_optimizers: dict  # name -> optimiser of the criterion's own parameters (losses.Criterion)
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator  # augmentation randomness
    history: list
    average: AveragedModel | None = None  # the weights' moving average (IdentityConfig.ema), else None
    best: float = -math.inf
    epoch: int = 0  # epochs done

    @property
    def scored(self):
        """The model that validation scores and the best model holds: the weights' average where there is one."""
        return self.model if self.average is None else self.average.module

    def state(self, rng):
        state = dict(
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            epoch=self.epoch,
            history=self.history,
            best=self.best,
            rng=rng,
            criterion=self.criterion.state_dict(),
            **{name: optimizer.state_dict() for name, optimizer in self.criterion_optimizers.items()},
        )
        if self.average is not None:
            state["average"] = self.average.state_dict()
        return state

    def restore(self, checkpoint, runtime):
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        # checkpoints before every criterion was stored left out those without parameters (empty state)
        self.criterion.load_state_dict(checkpoint.get("criterion", {}))
        for name, optimizer in self.criterion_optimizers.items():
            optimizer.load_state_dict(checkpoint[name])
        if self.average is not None:
            self.average.load_state_dict(checkpoint["average"])
        if len(checkpoint["rng"]) != runtime.world_size:
            raise FacelibError(f"resume: the run used {len(checkpoint['rng'])} process(es), now {runtime.world_size}")
        _set_rng_state(checkpoint["rng"][runtime.rank], self.generator)
        self.epoch, self.history, self.best = checkpoint["epoch"], checkpoint["history"], checkpoint["best"]


def _start(task, config, steps, runtime):
    """Model, criterion, optimisers, schedule and RNGs as at step 0 (the same weights on every rank)."""
    _seed_everything(config.seed)
    model, criterion = task.build()
    model.to(runtime.device)
    criterion.to(runtime.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(steps, config.warmup))
    _seed_everything(config.seed + 1_000_003 * (runtime.rank + 1))  # from here on, each rank its own stream
    generator = torch.Generator().manual_seed(config.seed + 7919 * runtime.rank)
    decay = config.ema if isinstance(config, IdentityConfig) else 0.0  # a pretext run picks no best epoch
    average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True) if decay else None
    return _Training(model, criterion, optimizer, criterion.optimizers(), scheduler, generator, [], average)


def _fit(task_class, config, files, checkpoint, runtime, cache_dir, progress):
    data = layouts.load(config.data_root)
    images, pairs = task_class.select(config, data)
    task = task_class(config, images)
    if checkpoint is not None:
        _check_same_data(checkpoint, images, task, data.root, files["checkpoint"])
        if _trained_all_epochs(checkpoint):  # finished (the notebooks resume every run): nothing to decode
            return files.get("best", files["checkpoint"])
    size, align = config.image_size, config.align
    faces = _load_faces(runtime, images, size, align, cache_dir, progress)
    # only rank 0 validates (and picks the best epoch); the other ranks wait for it at the end of the epoch
    validation = (
        _Validation(pairs, data.images, config, runtime.device, cache_dir, progress)
        if len(pairs) and runtime.is_main
        else None
    )

    p, k = config.batch
    try:
        sampler = PKSampler(
            images["identity"].to_numpy(),
            p,
            k,
            seed=config.seed,
            rank=runtime.rank,
            world_size=runtime.world_size,
            views=task.views(images),
        )
    except ValueError as error:
        raise FacelibError(f"--batch {p} {k}: {error}") from None
    run = _start(task, config, config.epochs * len(sampler), runtime)
    if checkpoint is not None:
        run.restore(checkpoint, runtime)
    net = DistributedDataParallel(run.model) if runtime.world_size > 1 else run.model

    run_config = dict(  # what the run's files record: its settings and what they met
        settings=config.stored(),
        image_size=size,
        world_size=runtime.world_size,
        device=str(runtime.device),
        training_images=len(images),
        identities=int(images["identity"].nunique()),
        validation_pairs=len(pairs),
        steps_per_epoch=len(sampler),
        **task.config_extras(run.model),
    )
    if runtime.is_main:
        atomic_write_text(files["config"], json.dumps(run_config, indent=2, default=str) + "\n")
        log.info(
            "%s: %d images of %d identities, %d validation pairs, %d steps/epoch of %dx%d, %s x%d%s",
            config.kind,
            len(images),
            run_config["identities"],
            len(pairs),
            len(sampler),
            p,
            k,
            runtime.device,
            runtime.world_size,
            f", resuming after epoch {run.epoch}" if run.epoch else "",
        )

    augment = Augmentation(**config.augmentation)
    loop_started, first_epoch = time.perf_counter(), run.epoch  # for the time-left estimate, validation included
    while run.epoch < config.epochs:
        sampler.set_epoch(run.epoch)
        started = time.perf_counter()
        means = _train_epoch(run, net, task, faces, sampler, augment, runtime, config, files, progress)
        task.end_epoch(run.scored, faces)
        seconds = time.perf_counter() - started
        run.epoch += 1
        row = dict(
            epoch=run.epoch,
            **means,
            lr=run.optimizer.param_groups[0]["lr"],
            seconds=round(seconds, 2),
            images_per_s=round(len(sampler) * p * k * runtime.world_size / seconds, 1),
        )
        if validation is not None:
            row["val_accuracy"] = validation.accuracy(run.scored)
        run.history.append(row)
        score = row.get("val_accuracy", run.epoch)  # without validation pairs the latest epoch is the best
        improved, run.best = score >= run.best, max(run.best, score)
        rng = _gather(runtime, _rng_state(run.generator))
        if runtime.is_main:
            state = dict(kind=config.kind, config=run_config, **run.state(rng), **task.checkpoint_extras(run.scored))
            atomic_save(state, files["checkpoint"])
            if files.get("best") and improved:
                best = {key: state[key] for key in _INFERENCE_KEYS if key in state}
                best["model"] = run.scored.state_dict()
                if validation is not None:  # the decision threshold `facelib verify` uses by default
                    best["verification"] = validation.operating_point(run.scored)
                atomic_save(best, files["best"])
            atomic_write_text(files["metrics"], pd.DataFrame(run.history).to_csv(index=False))
            per_epoch = (time.perf_counter() - loop_started) / (run.epoch - first_epoch)
            log.info(
                "epoch %d/%d %s (about %.1f min left)",
                run.epoch,
                config.epochs,
                " ".join(f"{name}={_fmt(value)}" for name, value in row.items() if name != "epoch"),
                per_epoch * (config.epochs - run.epoch) / 60,
            )
    return files.get("best", files["checkpoint"])


def _train_epoch(run, net, task, faces, sampler, augment, runtime, config, files, progress):
    """One pass over the sampler's PK batches; returns the mean of each loss part (averaged over ranks)."""
    net.train()
    sums = {}
    bar = tqdm(
        sampler,
        desc=f"{config.kind} epoch {run.epoch + 1}/{config.epochs}",
        unit="batch",
        disable=not (progress and runtime.is_main),
        leave=False,
    )
    for step, indices in enumerate(bar):
        indices = torch.as_tensor(indices)
        batch, flipped = augment(
            faces[indices].to(runtime.device), run.generator, task.flippable(indices), task.mirrored(indices)
        )
        with runtime.autocast:
            total, parts = task.loss(net, run.criterion, batch, indices, flipped)
        # one small all-reduce per step: the logged means, and every rank sees a non-finite loss at once
        values = _mean_over_ranks(runtime, torch.tensor([total.item(), *parts.values()], dtype=torch.float64))
        if not math.isfinite(values[0]):
            kept = (
                f"the last good checkpoint {files['checkpoint']} (epoch {run.epoch}) is kept"
                if run.epoch
                else "no epoch had finished, so there is no checkpoint"
            )
            raise FacelibError(
                f"loss became {values[0].item()} at epoch {run.epoch + 1}, step {step + 1}: "
                f"training stopped; {kept}. Try a lower learning rate (lr={config.lr})."
            )
        for optimizer in (run.optimizer, *run.criterion_optimizers.values()):
            optimizer.zero_grad(set_to_none=True)
        total.backward()
        run.optimizer.step()
        if run.average is not None:
            run.average.update_parameters(run.model)
        _average_gradients(runtime, run.criterion)
        run.criterion.step(run.criterion_optimizers)
        run.scheduler.step()
        for name, value in zip(["loss", *parts], values.tolist()):
            sums[name] = sums.get(name, 0.0) + value
        bar.set_postfix(loss=f"{values[0].item():.3f}")
    return {name: value / len(sampler) for name, value in sums.items()}


_INFERENCE_KEYS = ("kind", "config", "model", "embedder", "num_ids", "identities", "epoch", "history")


def _fmt(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _warmup_cosine(steps, warmup):
    """lr factor per step: linear warm-up from 0.01 over the first `warmup` fraction, then cosine to 0.01."""
    warmup_steps = max(1, round(warmup * steps))

    def factor(step):
        if step < warmup_steps:
            return 0.01 + 0.99 * step / warmup_steps
        progress = (step - warmup_steps) / max(1, steps - warmup_steps)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _average_gradients(runtime, module):
    """The center-loss centers live outside DDP, so their gradients are averaged over the ranks here."""
    if runtime.world_size == 1:
        return
    for parameter in module.parameters():
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)
            parameter.grad /= runtime.world_size


# ----------------------------------------------------------------------------------------------- validation


class _Validation:
    """Accuracy at the best threshold on the validation pairs, each distinct image embedded once (without the
    mirror-image average of `facelib evaluate`: half the cost, every epoch, and it ranks epochs the same way).
    The best model's operating point is then measured the way it will be used: with the mirror average."""

    def __init__(self, pairs, all_images, config, device, cache_dir, progress):
        self.pairs, self.device = pairs, device
        paths = pd.unique(pairs[["a", "b"]].to_numpy().ravel())
        self.images = all_images.drop_duplicates("path").set_index("path").loc[paths].reset_index()
        self.faces = load_images(self.images, config.image_size, cache_dir, progress=progress, align=config.align)
        self.flippable = True  # which faces the mirror-image average may use: all, unless canonical facing
        if config.canonical_facing:
            self.flippable = embedding.to_canonical_facing(self.faces, self.images)

    def accuracy(self, model):
        return self._best_threshold(model, flip=False)[1]

    def operating_point(self, model):
        """The threshold of best accuracy, as plain numbers and strings (loadable with weights_only=True)."""
        # building the exported copy draws initial weights from the global RNG: forked, so that storing the
        # threshold leaves training's random stream (and an exact resume) as it was
        with torch.random.fork_rng(devices=[]):
            threshold, accuracy = self._best_threshold(model, flip=self.flippable)
        return dict(
            threshold=threshold, metric=VERIFICATION_METRIC, flip=True, accuracy=accuracy, pairs=len(self.pairs)
        )

    def _best_threshold(self, model, flip):
        vectors = embedding.embed_images(
            models.export_embedder(model), self.faces, flip=flip, cache=False, device=self.device
        )
        scores = embedding.Embeddings(self.images, vectors).scores(self.pairs, VERIFICATION_METRIC)
        same = self.pairs["same"].to_numpy(bool)
        threshold = metrics.best_threshold(scores, same)
        return threshold, float((metrics.predicted_same(scores, threshold) == same).mean())
