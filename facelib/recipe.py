"""A training run's recipe: every setting of a pretext or identity run, each default written once, here.

`PretextConfig` and `IdentityConfig` are the only place a training default lives. The command line
(`facelib pretext` / `facelib train`), the notebooks' profiles (facelib.notebooks.PROFILES) and the CFP benchmark
(benchmarks/cfp.py) are overrides of them. Every value is checked when a config is made (facelib.options for the
number ranges, the registries for the names), so a bad setting fails before any work.

A checkpoint stores its config as a plain dict (`stored()`) under config["settings"] and reads it back with
`from_stored`, which names any unknown or ill-typed key. Checkpoints written before this module existed stored
an untyped dict of almost the same keys; `from_legacy` converts those, and refuses what it cannot convert with a
message saying how to retrain.

Per-model defaults (label smoothing, center loss) sit in `MODEL_DEFAULTS`, beside the model registry they
complete: a field left as None takes its model's value.
"""

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

from facelib import options, synthetic
from facelib.errors import FacelibError
from facelib.imagecache import AUGMENTATIONS, Augmentation

# Bumped when a stored key changes meaning; a checkpoint without it is from before this module (`from_legacy`).
FORMAT = 2

MODEL_NAMES = ("triarchy", "baseline")  # facelib.models.MODELS, named here so a config needs no torch
TRIPLET_SCALES = ("raw", "unit", "batch")  # facelib.losses.SoftMarginTriplet's distances
MARGINS = ("none", "cosface", "arcface")  # facelib.losses.MARGIN_LOGITS
EMBEDDING_HEADS = ("gap", "gdc")  # facelib.models.EmbeddingNet's heads
LAST_STRIDES = (2, 1)  # facelib.models.LAST_STRIDES

# What makes the Baseline the original's ablation beyond its architecture (BatchNorm after the embedding,
# facelib.models.Baseline): plain softmax without label smoothing, and no center loss.
MODEL_DEFAULTS = {
    "triarchy": dict(label_smoothing=0.1, center_weight=5e-4),
    "baseline": dict(label_smoothing=0.0, center_weight=0.0),
}


class RecipeError(FacelibError):
    """A config that cannot be made: an unknown key, a value of the wrong type, or a checkpoint too old to read."""


def _runtime(default):
    """A setting of where a run computes, not of what it learns: neither stored nor compared when resuming."""
    return field(default=default, metadata={"runtime": True})


@dataclass(frozen=True)
class TrainingConfig:
    """Settings shared by the pretext and identity runs.

    data_root: the data set (any facelib.layouts layout). align: warp each face onto its view's landmark template
    instead of cropping its box (CFP; facelib.alignment). batch: P identities x K images (facelib.sampler).
    train_folds: CFP protocol folds to train on (default: all but the validation folds; facelib.splits).
    Optimisation follows reid-strong-baseline (Luo et al. 2019): Adam with weight decay, linear warm-up over the
    first `warmup` fraction of the steps, then a cosine decay. Its lr 3.5e-4 suits nets that start from ImageNet
    weights; these start from scratch or a short pretext and need the larger 1e-3
    (benchmarks/results/synthetic.md). augmentation: a recipe name of imagecache.AUGMENTATIONS or the fields of
    an imagecache.Augmentation; stored as the fields.
    """

    data_root: str
    epochs: int  # the pretext and identity runs each set their own default
    batch: tuple[int, int]
    image_size: int = 64
    align: bool = False
    seed: int = 0
    train_folds: list[int] | None = None
    lr: float = 1e-3
    weight_decay: float = 5e-4
    warmup: float = 0.1
    augmentation: dict = field(default_factory=lambda: asdict(Augmentation()))
    device: str = _runtime("auto")

    kind: typing.ClassVar[str]
    naming: typing.ClassVar[tuple] = ("data_root",)  # the settings that name a run rather than tune it

    def __post_init__(self):
        for name, value in self._normalised():  # one at a time: later checks read the values already checked
            object.__setattr__(self, name, value)

    def _normalised(self):
        """(field, checked and normalised value) for every field whose value needs checking."""
        yield "data_root", str(Path(self.data_root).resolve())
        yield "epochs", options.epochs(self.epochs)
        yield "image_size", options.image_size(self.image_size)
        yield "align", _boolean("align", self.align)
        yield "batch", options.batch(self.batch)
        yield "seed", options.seed(self.seed)
        yield "train_folds", _folds("train_folds", self.train_folds)
        yield "lr", options.finite_number("lr", self.lr, positive=True)
        yield "weight_decay", options.finite_number("weight_decay", self.weight_decay)
        yield "warmup", options.finite_number("warmup", self.warmup)
        yield "augmentation", _augmentation(self.augmentation)
        yield "device", options.device(self.device)

    def stored(self):
        """The config as a checkpoint stores it: plain values (JSON-friendly), with its kind and format."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.metadata.get("runtime")}
        return dict(values, batch=list(self.batch), kind=self.kind, format=FORMAT)

    @classmethod
    def from_stored(cls, stored, **runtime):
        """The config a checkpoint stored (`stored()`), or one in the format before this module (`from_legacy`).
        runtime: where the run computes now (device), which a checkpoint does not decide."""
        if "format" not in stored:
            stored = from_legacy(stored)
        stored = dict(stored)
        found = stored.pop("format")
        if found != FORMAT:
            raise RecipeError(
                f"settings format {found!r}: this facelib reads format {FORMAT}; retrain the run into a new folder "
                "(facelib pretext/train DATA --out NEW)"
            )
        kind = stored.pop("kind", None)
        if kind != cls.kind_of(stored):
            raise RecipeError(f"kind: expected {cls.kind_of(stored)!r} for {cls.__name__}, got {kind!r}")
        known = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("runtime")}
        for name, value in stored.items():
            if name not in known:
                raise RecipeError(f"{name}: not a setting of {cls.__name__} (expected one of {', '.join(known)})")
            _check_type(name, value, known[name].type)
        return cls(**stored, **runtime)

    @classmethod
    def kind_of(cls, values):
        return cls.kind

    def overrides(self):
        """The stored settings this config sets to other than their defaults (and those that name the run)."""
        defaults = type(self)(**{name: getattr(self, name) for name in self.naming}).stored()
        return {name: value for name, value in self.stored().items() if name in self.naming or value != defaults[name]}


@dataclass(frozen=True)
class PretextConfig(TrainingConfig):
    """A pretext run: camera angle + expression (K-Face) or view + facing (CFP); no identity labels."""

    kind: typing.ClassVar[str] = "pretext"

    epochs: int = 6  # angle / expression (or view / facing) are learnt fast
    batch: tuple[int, int] = (8, 8)  # the pretext learns poses, not identities: 8 x 8 as tuned


@dataclass(frozen=True)
class IdentityConfig(TrainingConfig):
    """A Triarchy or Baseline run (facelib.models.MODELS).

    init: a checkpoint whose backbone initialises the model: a pretext run, or an identity run such as one
    pretrained on many synthetic identities (facelib.models.load_backbone_from). val_folds: CFP folds whose FF and
    FP pairs choose the best epoch (facelib.splits). label_smoothing, center_weight: None takes the model's value
    (MODEL_DEFAULTS); a center_weight of 0 means no center loss at all. center_lr: the centers' own SGD
    (reid-strong-baseline's 0.5). triplet_scale: the embeddings the triplet distances are measured between
    (facelib.losses): "batch" keeps each face's length but divides out the batch's scale, which learnt on CFP
    where the original's "raw" and the unit sphere did not. centre: subtract the training faces' mean embedding
    before the cosine (facelib.models.EmbeddingNet; False gives the original's uncentred embedding). pose_aware:
    each identity's K images in a batch include one of every view it has (facelib.sampler). canonical_facing:
    every face whose facing is known is shown turned one way (facelib.poses.CANONICAL_FACING; the others mirrored),
    in training, where such faces are never flipped at random, and at test (facelib.embedding). margin: a margin
    softmax on cosines (facelib.losses). head: how the embedding is read from the backbone
    (facelib.models.EmbeddingNet). last_stride: the stride of the backbone's last stride-2 stage, 2 (the original)
    or 1, which makes the last feature map's side 1/16 of the input's instead of 1/32 (facelib.models.Backbone).
    ema: the decay of an exponential moving average of the weights, updated after every step (0: none, the
    original); where set, the average is what validation scores and what the best model (model.pt) holds, as in
    timm's ModelEmaV2 (its BatchNorm statistics are averaged too).
    """

    epochs: int = 40
    batch: tuple[int, int] = (16, 4)
    model: str = "triarchy"
    init: str | None = None
    val_folds: list[int] | None = None
    label_smoothing: float | None = None
    triplet_weight: float = 1.0
    triplet_scale: str = "batch"
    center_weight: float | None = None
    center_lr: float = 0.5
    centre: bool = True
    pose_aware: bool = False
    canonical_facing: bool = False
    margin: str = "none"
    head: str = "gap"
    last_stride: int = 2
    ema: float = 0.0

    naming: typing.ClassVar[tuple] = ("data_root", "model")

    @property
    def kind(self):
        return self.model

    def resolved(self, name):
        """A per-model setting: its own value, or where left as None its model's (MODEL_DEFAULTS). Resolved on use
        rather than when made, so that a config copied with another model takes that model's defaults."""
        value = getattr(self, name)
        return MODEL_DEFAULTS[self.model][name] if value is None else value

    def stored(self):
        return dict(super().stored(), **{name: self.resolved(name) for name in MODEL_DEFAULTS[self.model]})

    @classmethod
    def kind_of(cls, values):
        return values.get("model", "triarchy")

    def _normalised(self):
        yield "model", _choice("model", self.model, MODEL_NAMES)
        yield from super()._normalised()
        yield "init", None if self.init is None else str(Path(self.init).resolve())
        yield "val_folds", _folds("val_folds", self.val_folds)
        for name in MODEL_DEFAULTS[self.model]:
            yield name, None if getattr(self, name) is None else options.finite_number(name, getattr(self, name))
        yield "triplet_weight", options.finite_number("triplet_weight", self.triplet_weight)
        yield "triplet_scale", _choice("triplet_scale", self.triplet_scale, TRIPLET_SCALES)
        yield "center_lr", options.finite_number("center_lr", self.center_lr, positive=True)
        yield "centre", _boolean("centre", self.centre)
        yield "pose_aware", _boolean("pose_aware", self.pose_aware)
        yield "canonical_facing", _boolean("canonical_facing", self.canonical_facing)
        yield "margin", _choice("margin", self.margin, MARGINS)
        yield "head", _choice("head", self.head, EMBEDDING_HEADS)
        yield "last_stride", _choice("last_stride", self.last_stride, LAST_STRIDES)
        yield "ema", options.ema(self.ema)
        if self.train_folds and self.val_folds and set(self.train_folds) & set(self.val_folds):
            raise FacelibError(f"--train-folds {self.train_folds} and --val-folds {self.val_folds} overlap")


def synthetic_start(identities, style="cartoon", **overrides):
    """The config of a synthetic start (issue 17's lever 7, the best CFP recipe of benchmarks/results/cfp.md): a
    Baseline trained for one epoch on `identities` generated people at the run's image size, each seen from nine
    yaws, whose backbone then initialises identity training on real faces (IdentityConfig.init). style: the
    generator's (facelib.synthetic.STYLES). overrides: of that config (image_size, batch, seed, ...). Makes the set
    if it is missing (facelib.synthetic.pretraining_set)."""
    size = overrides.get("image_size", default(IdentityConfig, "image_size"))
    return IdentityConfig(
        synthetic.pretraining_set(identities, size, style), **{"model": "baseline", "epochs": 1, **overrides}
    )


def default(config_class, name):
    """A field's default, for callers that show it (help texts, run names)."""
    found = {f.name: f for f in dataclasses.fields(config_class)}[name]
    return found.default_factory() if found.default_factory is not dataclasses.MISSING else found.default


# ----------------------------------------------------------------------------------------------- the old format


def from_legacy(settings):
    """Today's stored dict from a checkpoint written before this module: the same keys, untyped, where each
    option added later was simply absent. Converted here, the one place that knows that history."""
    settings = dict(settings)
    kind = settings.pop("kind", None)
    if kind not in ("pretext", *MODEL_NAMES) or "data_root" not in settings:
        raise RecipeError(
            f"settings without a known kind and data_root (kind {kind!r}): not a facelib run this version can "
            "read; retrain it into a new folder (facelib pretext/train DATA --out NEW)"
        )
    settings.setdefault("align", False)  # runs before the option cropped boxes
    if kind != "pretext":
        settings["model"] = kind
        # runs before the triplet_scale setting stored a flag for the unit sphere, or nothing (the raw embedding)
        flag = settings.pop("normalize_triplet", False)
        settings.setdefault("triplet_scale", "unit" if flag else "raw")
        for name, before in (
            ("margin", "none"),
            ("head", "gap"),
            ("last_stride", 2),
            ("pose_aware", False),
            ("canonical_facing", False),
            ("val_folds", None),
            ("ema", 0.0),
        ):
            settings.setdefault(name, before)
        if kind == "baseline":  # stored as None: the Baseline never had a center loss
            settings["center_weight"] = settings["center_weight"] or 0.0
            settings["center_lr"] = settings["center_lr"] or IdentityConfig.center_lr
    return dict(settings, batch=list(settings["batch"]), kind=kind, format=FORMAT)


# ----------------------------------------------------------------------------------------------- checks


def _choice(name, value, allowed):
    if value not in allowed:
        raise options.OptionError(name, f"expected one of {', '.join(map(str, allowed))}, got {value!r}")
    return value


def _boolean(name, value):
    if not isinstance(value, bool):
        raise options.OptionError(name, f"expected True or False, got {value!r}")
    return value


def _folds(name, folds):
    if folds is None:
        return None
    try:
        return sorted(options.whole_number(name, fold, 1, options.MAX_EPOCHS) for fold in folds)
    except TypeError:
        raise options.OptionError(name, f"expected a list of fold numbers, got {folds!r}") from None


def _augmentation(augmentation):
    """The batch augmentation's fields as a dict: from a recipe name (imagecache.AUGMENTATIONS), a dict of fields,
    or an Augmentation."""
    if isinstance(augmentation, str):
        if augmentation not in AUGMENTATIONS:
            raise FacelibError(f"augmentation: expected one of {', '.join(AUGMENTATIONS)}, got {augmentation!r}")
        augmentation = AUGMENTATIONS[augmentation]
    if not isinstance(augmentation, Augmentation):
        # a stored dict holds lists where the fields are (low, high) tuples
        fields = {name: tuple(value) if isinstance(value, list) else value for name, value in augmentation.items()}
        try:
            augmentation = Augmentation(**fields)
        except TypeError as error:
            raise RecipeError(f"augmentation: {error}") from None
    return asdict(augmentation)


_TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "text", dict: "a mapping"}


def _check_type(name, value, annotation):
    """A stored value must have its field's type (JSON's: lists for tuples, ints where floats are allowed)."""
    allowed = _allowed_types(annotation)
    if value is None and type(None) in allowed:
        return
    if isinstance(value, bool) and bool not in allowed:
        ok = False
    elif float in allowed and isinstance(value, int):
        ok = True
    else:
        ok = isinstance(value, tuple(t for t in allowed if t is not type(None)))
    if ok and isinstance(value, (list, tuple)):
        ok = all(isinstance(item, int) and not isinstance(item, bool) for item in value)
    if not ok:
        names = dict.fromkeys(_TYPE_NAMES.get(t, "a list of whole numbers") for t in allowed if t is not type(None))
        expected = " or ".join(names)
        raise RecipeError(f"{name}: expected {expected}{' or null' if type(None) in allowed else ''}, got {value!r}")


def _allowed_types(annotation):
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _allowed_types(arg)]
    if origin in (tuple, list) or annotation in (tuple, list):
        return [list, tuple]
    return [annotation]
