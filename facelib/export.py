"""A trained model as an ONNX file that other programs can run without facelib, and ONNX Runtime as an engine.

The exported graph is the whole inference path after the pixels are normalised, so its output is the final
embedding that facelib scores pairs with:

    images  float32 [N, 3, S, S], RGB, (pixel / 255 - mean) / std with mean = std = 0.5 (imagecache.to_model_input)
    embedding = L2-normalise( L2-normalise(net(images)) + L2-normalise(net(mirror(images))) )   float32 [N, 512]

The batch axis is dynamic. The file's metadata_props say all of this (input size, mean / std, crop, flip
averaging, normalisation) plus the decision threshold the run chose on its validation pairs and its metric,
so a pair is "same" when the cosine of two embeddings (their dot product) is >= that threshold.
"""

import hashlib
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from facelib import alignment, imagecache, models
from facelib.errors import FacelibError
from facelib.io_utils import atomic_path

INPUT_NAME, OUTPUT_NAME = "images", "embedding"
INPUT_MEAN = INPUT_STD = (0.5, 0.5, 0.5)  # on pixel / 255: what imagecache.to_model_input computes
OPSET = 18
METADATA_PREFIX = "facelib."


class FlipAveragedEmbedding(nn.Module):
    """The network plus what facelib does around it: one pass over the batch and its mirror image, each
    view L2-normalised, summed and normalised again (as embedding.embed_images with flip=True)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, images):
        original, mirrored = self.net(torch.cat([images, images.flip(-1)])).chunk(2)
        normalise = nn.functional.normalize
        return normalise(normalise(original, dim=1) + normalise(mirrored, dim=1), dim=1)


def export_onnx(model_path, out, overwrite=False):
    """Write the inference network of an identity checkpoint (RUN/model.pt) to `out` as ONNX, atomically; an
    existing `out` is replaced only with `overwrite`. Returns the path written."""
    model_path, out = Path(model_path), Path(out)
    if out.suffix.lower() != ".onnx":
        raise FacelibError(f"--out {out}: expected a file name ending in .onnx")
    if out.exists() and not overwrite:
        raise FacelibError(f"--out {out}: the file exists; give --overwrite to replace it")
    net = models.load_embedder(model_path)
    if net.kind == "pretext":
        raise FacelibError(
            f"{model_path}: a pretext checkpoint has no identity embedding; export an identity model (RUN/model.pt)"
        )
    metadata = {
        "source": model_path.name,
        "source_sha256": file_digest(model_path),
        "kind": net.kind,
        **threshold_metadata(net.verification),
    }
    write_onnx(net, out, metadata)
    return out


def threshold_metadata(verification):
    if not verification:
        return {"threshold_source": "none: the run had no validation pairs; choose a threshold"}
    return {
        "threshold": repr(float(verification["threshold"])),
        "metric": str(verification["metric"]),
        "threshold_source": f"best accuracy ({verification['accuracy']:.4f}) on {verification['pairs']} "
        "validation pairs",
    }


def crop_metadata(align):
    """How the model's faces are cut from a photo: for a model trained on aligned faces, the landmark templates
    (facelib.alignment) that its faces were warped onto."""
    centre = "centre square of the photo, resized to input_size x input_size with antialiasing"
    if not align:
        return {"align": "false", "crop": centre}
    return {
        "align": "true",
        "crop": "a similarity transform (least squares) that puts the face's landmarks on the template of its view "
        "(align_templates: unit-square coordinates; frontal: visible eye centre, nose tip, mouth corner, mouth "
        "centre; profile facing right: eye centre, nose tip, mouth corner, chin; mirrored for profiles facing "
        f"left), output input_size x input_size with antialiasing; without landmarks: {centre}",
        "align_templates": json.dumps({view: points.tolist() for view, points in alignment.TEMPLATES.items()}),
    }


def write_onnx(net, out, extra_metadata=None):
    """Export an EmbeddingNet with `.image_size` (put in eval mode) to `out`, with facelib's metadata."""
    import onnx

    if getattr(net, "canonical_facing", False):
        raise FacelibError(
            f"{out}: the model trained with canonical facing, but the ONNX graph averages every face with its "
            "mirror image, a profile turned the way this model never saw; embed it with the torch engine"
        )
    size = int(net.image_size)
    graph = FlipAveragedEmbedding(net.eval()).eval()
    metadata = {
        "format_version": "1",
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_size": str(size),
        "input_layout": "NCHW float32 RGB",
        "input_mean": ",".join(map(str, INPUT_MEAN)),
        "input_std": ",".join(map(str, INPUT_STD)),
        "input_scale": "x = (pixel / 255 - mean) / std",
        **crop_metadata(getattr(net, "align", False)),
        "flip_averaging": "true",
        "l2_normalized": "true",
        "output": "L2-normalise(L2-normalise(net(x)) + L2-normalise(net(mirror(x)))); score = dot product",
        "embedding_dim": str(
            net.embedding.out_features if isinstance(net, models.EmbeddingNet) else models.FEATURE_DIM
        ),
        "parameters": str(models.count_parameters(net)),
        **(extra_metadata or {}),
    }
    with atomic_path(out) as tmp:
        export_graph(graph, size, tmp)
        proto = onnx.load(str(tmp))
        for key, value in metadata.items():
            proto.metadata_props.add(key=METADATA_PREFIX + key, value=value)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    return out


def export_graph(module, size, path):
    """torch.onnx.export of `module` (images [N, 3, size, size] -> embedding [N, D]) with a dynamic batch axis."""
    example = torch.zeros(1, 3, size, size, device=next(module.parameters()).device)
    with warnings.catch_warnings():
        # the TorchScript exporter: seconds here, where the dynamo exporter takes close to a minute
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def file_digest(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class OnnxEmbedder:
    """An exported model run by ONNX Runtime on the CPU: called with model input (imagecache.to_model_input),
    it returns the final, flip-averaged and L2-normalised embeddings. `image_size`, `align`, `verification` and
    `digest` mirror what evaluation needs from a torch model."""

    def __init__(self, path, threads=None):
        import onnxruntime

        path = Path(path)
        if not path.is_file():
            raise FacelibError(f"{path}: ONNX model not found")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types for a damaged file
            raise FacelibError(f"{path}: not a readable ONNX model ({type(error).__name__})") from None
        self.metadata = {
            key[len(METADATA_PREFIX) :]: value
            for key, value in self.session.get_modelmeta().custom_metadata_map.items()
            if key.startswith(METADATA_PREFIX)
        }
        if self.metadata.get("flip_averaging") != "true" or "input_size" not in self.metadata:
            raise FacelibError(f"{path}: not an ONNX model exported by `facelib export`")
        self.path = path
        self.image_size = int(self.metadata["input_size"])
        self.align = self.metadata.get("align") == "true"
        self.kind = self.metadata.get("kind")
        self.verification = (
            {"threshold": float(self.metadata["threshold"]), "metric": self.metadata["metric"]}
            if "threshold" in self.metadata
            else None
        )
        self.digest = bytes.fromhex(file_digest(path))

    def __call__(self, images):
        array = images.detach().cpu().contiguous().numpy()
        return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: array})[0])


def onnx_engine(model, cache_dir=None):
    """ONNX Runtime running `model` (an EmbeddingNet with `.image_size`), exported once into the cache folder
    under a key of its weights, so the next call with the same weights loads the file directly."""
    from facelib.embedding import weights_digest

    path = (
        imagecache.cache_folder(cache_dir) / f"onnx-{weights_digest(model).hex()[:24]}-{int(model.image_size)}px.onnx"
    )
    if not path.exists():
        write_onnx(model, path, {"kind": str(getattr(model, "kind", "unknown"))})
    engine = OnnxEmbedder(path)
    engine.verification = getattr(model, "verification", None)
    engine.align = getattr(model, "align", False)
    return engine
