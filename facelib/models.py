"""The networks: an EfficientNet-B0 backbone and the heads built on it.

    PretextNet   backbone -> Linear(1280, sum of classes)      camera angle + expression (or view + facing)
    Triarchy     backbone -> Linear(1280, 512) = embedding -> Linear(512, ids) -> BatchNorm1d = identity logits
    Baseline     backbone -> Linear(1280, 512) -> BatchNorm1d = embedding -> Linear(512, ids)

Triarchy keeps the embedding free of BatchNorm and normalises the logits instead (the BNNeck idea of
Luo et al. 2019, moved after the classifier): the triplet and center losses see the embedding itself, not a
BatchNorm-ed copy, while softmax sees a normalised space. Only backbone + embedding are kept for inference
(`EmbeddingNet`, 4,663,420 parameters).

Three options (training's `head`, `last_stride` and `margin` settings):
    head "gdc"   the embedding is read from the last feature map through a global depthwise convolution
                 (`GlobalDepthwiseConv`) instead of its average; `EMBEDDING_HEADS`.
    last_stride 1  the backbone's last stride-2 stage keeps its input's resolution (`Backbone`), so the last
                 feature map's side is 1/16 of the input's instead of 1/32: 7 x 7 instead of 3 x 3 at 112 px;
                 `LAST_STRIDES`.
    cosine       the classifier gives the cosines between the L2-normalised embedding and class weights
                 (`CosineClassifier`), for a margin softmax (facelib.losses.MARGINS).
"""

import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from efficientnet_pytorch import EfficientNet
from torch import nn

from facelib import options
from facelib.errors import FacelibError
from facelib.imagecache import to_model_input

FEATURE_DIM = 1280
EMBEDDING_DIM = 512
EMBEDDING_HEADS = ("gap", "gdc")  # global average pooling + Linear (the original), global depthwise convolution
# EfficientNet-B0's five stride-2 stages: the last feature map's side is floor(size / 32) (the library pads as
# for its 224 px inputs, so other sizes round down; checked for every size from 32 to 512 px)
BACKBONE_STRIDE = 32
LAST_STRIDES = (2, 1)  # the last stride-2 stage's stride: EfficientNet-B0's own (the original), or 1 (`Backbone`)


class CheckpointError(FacelibError):
    """A checkpoint file that is missing, unreadable or of the wrong kind or shape."""


class Backbone(nn.Module):
    """EfficientNet-B0 built from scratch (no pretrained weights), returning 1280-d pooled features.

    Configured for speed: the plain swish (the library's default memory-efficient swish is a custom
    autograd function that is slower to run) and channels-last memory layout, which the CPU and
    GPU convolution kernels prefer. BatchNorm running statistics use PyTorch's usual momentum 0.1: the
    library's default (TensorFlow's 0.99, i.e. 0.01 here) barely moves them in a short CPU run, and the
    model then gives near-constant outputs in eval mode.

    last_stride 1: the first block of the last stride-2 stage (192 channels) keeps its input's resolution, as
    reid's strong baseline does to ResNet-50 (Luo et al. 2019, the paper of the BNNeck): at 112 px the last
    feature map is then 7 x 7, as in face networks built for 112 px (MobileFaceNet, ArcFace's ResNets), instead
    of 3 x 3. Same weights and parameter count; that stage and the ones after it compute on 5x more positions.
    """

    def __init__(self, last_stride=2):
        super().__init__()
        if last_stride not in LAST_STRIDES:
            raise ValueError(f"last_stride: expected one of {LAST_STRIDES}, got {last_stride!r}")
        self.net = EfficientNet.from_name("efficientnet-b0", include_top=False, batch_norm_momentum=0.9)
        self.net.set_swish(memory_efficient=False)
        if last_stride == 1:
            conv = [
                block._depthwise_conv for block in self.net._blocks if tuple(block._depthwise_conv.stride) == (2, 2)
            ][-1]
            conv.stride = (1, 1)
            conv.static_padding = nn.ZeroPad2d(conv.kernel_size[0] // 2)  # "same" padding at stride 1
        self.to(memory_format=torch.channels_last)

    def forward(self, images):
        return self.net(images).flatten(1)

    def feature_map(self, images):
        """The last feature map [N, 1280, h, w] before pooling, h = w = feature_map_side(image size, last stride)."""
        return self.net.extract_features(images)


def feature_map_side(image_size, last_stride=2):
    return image_size // (BACKBONE_STRIDE // 2 * last_stride)


class GlobalDepthwiseConv(nn.Module):
    """Global depthwise convolution (MobileFaceNet, Chen et al. 2018; ArcFace's GDC output layer): one
    learnt h x w weight map per channel over the whole last feature map, then BatchNorm.

    Global average pooling weighs every position alike, so the corners of the crop count as much as the eyes;
    on an aligned face each position is a fixed facial region, and a learnt map per channel weighs them.
    Like ArcFace's GDC the convolution has no bias (the BatchNorm's shift replaces it), and the BatchNorm
    brings the weighted sums, whose scale the learnt maps set, back to one scale for the Linear after it.
    """

    def __init__(self, side, channels=FEATURE_DIM):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, side, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, feature_map):
        return self.bn(self.conv(feature_map))


class PretextNet(nn.Module):
    """Backbone plus one linear layer whose outputs are split into one logit group per pretext task."""

    def __init__(self, heads):
        super().__init__()
        self.heads = dict(heads)
        self.backbone = Backbone()
        self.head = nn.Linear(FEATURE_DIM, sum(self.heads.values()))

    def forward(self, images):
        logits = self.head(self.backbone(images)).split(list(self.heads.values()), dim=1)
        return dict(zip(self.heads, logits))


class EmbeddingNet(nn.Module):
    """The inference model: backbone, pooled, + Linear(1280, 512), minus `centre`.

    head "gap" (the original): global average pooling + Linear(1280, 512). head "gdc": ArcFace's GDC output
    layer, `GlobalDepthwiseConv` + Linear(1280, 512) without bias + BatchNorm1d, built for `image_size` (the
    depthwise kernel covers the whole feature map). The BatchNorm1d standardises each embedding dimension
    over the training faces, as ArcFace's feature BatchNorm does, so the Linear needs no bias.

    `centre` (a buffer, not a parameter) is the mean embedding of the training faces where the run measured
    it (training's `centre` setting), else zero. Without BatchNorm on the embedding, every face shares one
    large common direction and the cosine of any two faces sits near 1, so identity lives in a thin shell
    around that direction; subtracting the mean before the cosine spreads the shell out.
    """

    def __init__(self, embedding_dim=EMBEDDING_DIM, head="gap", image_size=None, last_stride=2):
        super().__init__()
        if head not in EMBEDDING_HEADS:
            raise ValueError(f"head: expected one of {', '.join(EMBEDDING_HEADS)}, got {head!r}")
        if head == "gdc" and image_size is None:
            raise ValueError("head gdc: the image size is needed (the depthwise kernel covers the feature map)")
        self.head, self.image_size, self.last_stride = head, image_size, last_stride
        self.backbone = Backbone(last_stride)
        gdc = head == "gdc"
        self.pool = GlobalDepthwiseConv(feature_map_side(image_size, last_stride)) if gdc else nn.AdaptiveAvgPool2d(1)
        self.embedding = nn.Linear(FEATURE_DIM, embedding_dim, bias=not gdc)
        self.embedding_norm = nn.BatchNorm1d(embedding_dim) if gdc else nn.Identity()
        self.register_buffer("centre", torch.zeros(embedding_dim))

    @property
    def output_layer(self):
        """The last layer, an affine map per output dimension (weight, bias) that a BatchNorm after it folds into."""
        return self.embedding_norm if self.head == "gdc" else self.embedding

    def uncentred(self, images):
        """The embedding the training losses see (centring is a constant shift they do not need)."""
        features = self.pool(self.backbone.feature_map(images)).flatten(1)
        return self.embedding_norm(self.embedding(features))

    def forward(self, images):
        return self.uncentred(images) - self.centre


class CosineClassifier(nn.Module):
    """Cosines between the L2-normalised embedding and L2-normalised class weights [N, num_ids], in [-1, 1]:
    what a margin softmax (facelib.losses.MARGINS) turns into logits, given the labels."""

    def __init__(self, embedding_dim, num_ids):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_ids, embedding_dim))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, embedding):
        return F.linear(F.normalize(embedding, dim=1), F.normalize(self.weight, dim=1))


class Triarchy(nn.Module):
    """Embedding without BatchNorm; identity logits followed by BatchNorm1d.

    With head "gdc" the embedding does end in a BatchNorm1d, the GDC layer's own (`EmbeddingNet`).
    cosine: a `CosineClassifier` for a margin softmax, without the logit BatchNorm: the margin is a fixed
    shift of the target's cosine at a fixed scale, which a BatchNorm would undo by re-centring and re-scaling
    every class's logit over the batch (and the cosines are already normalised).
    """

    def __init__(self, num_ids, embedding_dim=EMBEDDING_DIM, head="gap", image_size=None, cosine=False, last_stride=2):
        super().__init__()
        self.embedder = EmbeddingNet(embedding_dim, head, image_size, last_stride)
        self.classifier = CosineClassifier(embedding_dim, num_ids) if cosine else nn.Linear(embedding_dim, num_ids)
        self.logit_bn = nn.Identity() if cosine else nn.BatchNorm1d(num_ids)

    def forward(self, images):
        embedding = self.embedder.uncentred(images)
        return embedding, self.logit_bn(self.classifier(embedding))


class Baseline(nn.Module):
    """The original's ablation: BatchNorm right after the embedding, softmax + triplet on top of it.

    cosine: a `CosineClassifier` on the BatchNorm-ed embedding, for a margin softmax.
    """

    def __init__(self, num_ids, embedding_dim=EMBEDDING_DIM, head="gap", image_size=None, cosine=False, last_stride=2):
        super().__init__()
        self.embedder = EmbeddingNet(embedding_dim, head, image_size, last_stride)
        self.embedding_bn = nn.BatchNorm1d(embedding_dim)
        self.classifier = CosineClassifier(embedding_dim, num_ids) if cosine else nn.Linear(embedding_dim, num_ids)

    def forward(self, images):
        embedding = self.embedding_bn(self.embedder.uncentred(images))
        return embedding, self.classifier(embedding)


MODELS = {"triarchy": Triarchy, "baseline": Baseline}


def identity_model(config, num_ids):
    """The untrained Triarchy or Baseline of a run's config (facelib.recipe.IdentityConfig) for `num_ids` people."""
    return MODELS[config.model](
        num_ids,
        head=config.head,
        image_size=config.image_size,
        cosine=config.margin != "none",
        last_stride=config.last_stride,
    )


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def export_embedder(model):
    """The inference network of a trained Triarchy or Baseline, as a standalone EmbeddingNet.

    For the Baseline, the evaluation-mode BatchNorm is an affine map, so it is folded into the
    embedder's output layer: the exported model has the same parameter count and gives the same outputs. The
    embedder's `centre` is measured on the exported outputs (`measure_centre`), so it needs no folding.
    """
    embedder = model.embedder
    exported = EmbeddingNet(embedder.embedding.out_features, embedder.head, embedder.image_size, embedder.last_stride)
    exported.load_state_dict(embedder.state_dict())
    if isinstance(model, Baseline):
        bn, layer = model.embedding_bn, exported.output_layer
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        layer.weight.mul_(scale.view(-1, *[1] * (layer.weight.dim() - 1)))
        layer.bias.copy_((layer.bias - bn.running_mean) * scale + bn.bias)
    return exported.eval()


@torch.no_grad()
def measure_centre(model, faces, batch_size=128):
    """Set `model.embedder.centre` to the mean flip-averaged embedding of `faces` (uint8 [N, 3, S, S]).

    Measured on the exported inference network in eval mode, as evaluation embeds, so the training model's
    BatchNorm statistics and mode are left alone.
    """
    exported = export_embedder(model)
    device = exported.centre.device
    total = torch.zeros_like(exported.centre)
    for batch in faces.split(batch_size):
        x = to_model_input(batch.to(device))
        total += (exported.uncentred(x) + exported.uncentred(x.flip(-1))).sum(0) / 2
    model.embedder.centre.copy_(total / len(faces))
    return model.embedder.centre


def resolve_device(device="auto"):
    """'auto' (or None) -> CUDA when available, else CPU; a checked device name otherwise."""
    device = options.device(device or "auto")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FacelibError(f"--device {device}: CUDA is not available on this machine")
    return device


def read_checkpoint(path, map_location="cpu"):
    """The dict a facelib checkpoint holds, loaded with torch's safe unpickler (weights_only=True): a file
    whose pickle would import or call anything beyond tensors and plain containers is refused, never run.

    The one place facelib opens a checkpoint; every command and notebook reads them through it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: not a safe facelib checkpoint (its pickle needs code to load, which facelib never runs); "
            "if an older facelib wrote it, retrain it into a new run folder (facelib pretext/train DATA --out NEW)"
        ) from None
    except Exception as error:  # torch raises many types for a damaged file
        raise CheckpointError(f"{path}: not a readable facelib checkpoint ({type(error).__name__})") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("kind") not in ("pretext", *MODELS):
        raise CheckpointError(f"{path}: not a facelib checkpoint (expected a dict with kind pretext/triarchy/baseline)")
    return checkpoint


def backbone_state(state_dict, prefix):
    return {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}


# Where each kind of checkpoint keeps the backbone's weights: a pretext net's own, an identity net's in its embedder.
BACKBONE_PREFIX = {"pretext": "backbone.", "triarchy": "embedder.backbone.", "baseline": "embedder.backbone."}


def load_backbone_from(model, path):
    """Initialise a Triarchy/Baseline backbone from a pretext or identity checkpoint; its heads are dropped."""
    checkpoint = read_checkpoint(path)  # every kind it reads has a backbone
    state = backbone_state(checkpoint["model"], BACKBONE_PREFIX[checkpoint["kind"]])
    try:
        model.embedder.backbone.load_state_dict(state)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise CheckpointError(f"{path}: backbone weights do not fit this model ({first_line})") from error
    return model


def faces_aligned(config):
    """Whether a run (its checkpoint's config) trained on landmark-aligned faces (facelib.alignment), so that its
    faces must be embedded aligned too; runs from before the option cropped boxes."""
    return bool(config.get("settings", {}).get("align", False))


def load_embedder(path, device="cpu"):
    """The inference network stored in a checkpoint, in eval mode, with `.image_size`, `.align` (faces are warped
    onto the landmark template, as the run trained), `.canonical_facing` (faces of known facing are turned one
    way, facelib.embedding), `.kind` and `.verification` (the threshold chosen on the validation pairs, or None)
    set.

    Identity models (triarchy/baseline) give 512-d embeddings; a pretext checkpoint gives the
    backbone's 1280-d pooled features, so pretext and Triarchy embeddings can be compared.
    """
    checkpoint = read_checkpoint(path, map_location=device)
    image_size = int(checkpoint["config"]["image_size"])
    if checkpoint["kind"] == "pretext":
        model = Backbone()
        state = backbone_state(checkpoint["model"], "backbone.")
    else:
        settings = checkpoint["config"].get("settings", {})  # runs before each option: its original value
        model = EmbeddingNet(
            head=settings.get("head", "gap"), image_size=image_size, last_stride=settings.get("last_stride", 2)
        )
        state = checkpoint.get("embedder")
        if state is None:
            raise CheckpointError(f"{path}: identity checkpoint without exported 'embedder' weights")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit the {checkpoint['kind']} model ({first_line})") from error
    model.image_size = image_size
    model.align = faces_aligned(checkpoint["config"])
    model.canonical_facing = bool(checkpoint["config"].get("settings", {}).get("canonical_facing", False))
    model.kind = checkpoint["kind"]
    model.verification = checkpoint.get("verification")  # the run's validation threshold, if it had one
    return model.to(device).eval()
