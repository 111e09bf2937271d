"""The `facelib` command: one sub-command per step of the method.

Heavy modules (torch) are imported inside each command, so `facelib inspect` answers quickly.
User errors (FacelibError, a bad option, an OSError on a path the user gave) become one line on stderr and exit
status 2, checked before any work where possible (facelib.options); programming errors keep their traceback.
"""

import argparse
import json
import sys
import warnings

from facelib import options
from facelib.errors import FacelibError
from facelib.io_utils import sigterm_unwinds


def fold_list(text):
    """'1-8' -> [1..8]; '1,3,5' -> [1, 3, 5]; '9' -> [9]."""
    folds = []
    try:
        for part in text.split(","):
            start, _, end = part.partition("-")
            folds.extend(range(int(start), int(end or start) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected folds like 1-8 or 1,2,3, got {text!r}") from None
    return folds


def cmd_inspect(args):
    from facelib import layouts

    summary = layouts.summary(layouts.load(args.data, verify_images=True))
    if args.json:
        print(json.dumps(summary))
        return
    for key, value in summary.items():
        print(f"{key:>11}: {json.dumps(value) if isinstance(value, dict) else value}")


def cmd_synth(args):
    from facelib import synthetic

    path = synthetic.generate(args.out, identities=args.identities, seed=args.seed, size=args.size, style=args.style)
    print(f"wrote synthetic K-Face layout to {path}")


# The command-line options that override a training config (facelib.recipe), by field name: each option's `dest`
# is the field it sets, and an option left out keeps the config's default (tests check both lists against it).
PRETEXT_OPTIONS = ("epochs", "image_size", "align", "batch", "seed", "train_folds", "augmentation", "device")
IDENTITY_OPTIONS = (
    *PRETEXT_OPTIONS,
    "init",
    "model",
    "val_folds",
    "triplet_scale",
    "centre",
    "pose_aware",
    "canonical_facing",
    "margin",
    "head",
    "last_stride",
    "ema",
)


def config_overrides(args, names):
    """The options of `names` the user gave, as config overrides."""
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if "batch" in given:
        given["batch"] = tuple(given["batch"])
    return given


def cmd_pretext(args):
    from facelib import training
    from facelib.recipe import PretextConfig

    config = PretextConfig(data_root=args.data, **config_overrides(args, PRETEXT_OPTIONS))
    path = training.train_pretext(config, args.out, resume=args.resume, overwrite=args.overwrite)
    print(f"pretext checkpoint: {path}")


def cmd_train(args):
    from facelib import training
    from facelib.recipe import IdentityConfig

    config = IdentityConfig(data_root=args.data, **config_overrides(args, IDENTITY_OPTIONS))
    path = training.train_identity(config, args.out, resume=args.resume, overwrite=args.overwrite)
    print(f"best model: {path}")


def cmd_evaluate(args):
    from facelib import evaluation, layouts

    result = evaluation.evaluate(
        layouts.load(args.data),
        args.model,
        split=args.split,
        protocol=args.protocol,
        folds=args.folds,
        calibrate_folds=args.calibrate_folds,
        flip=not args.no_flip,
        metric=args.metric,
        device=args.device,
        engine=args.engine,
        progress=True,
    ).metrics
    if args.json:
        print(json.dumps(result, default=str))
        return
    for key, value in result.items():
        if not isinstance(value, (list, dict)):
            print(f"{key:>14}: {value}")
    for key, value in result.get("retrieval", {}).items():
        print(f"{'retrieval ' + key:>14}: {value}")


def cmd_predict(args):
    from facelib import evaluation, layouts

    path = evaluation.predict(
        layouts.load(args.data),
        args.model,
        split=args.split,
        out=args.out,
        threshold=args.threshold,
        calibrate=args.calibrate,
        with_score=args.with_score,
        device=args.device,
        engine=args.engine,
        progress=True,
    )
    print(f"predictions: {path}")


def cmd_export(args):
    from facelib import export

    print(f"ONNX model: {export.export_onnx(args.model, args.out, overwrite=args.overwrite)}")


def cmd_verify(args):
    from facelib import inference

    result = inference.verify(args.a, args.b, args.model, args.threshold, engine=args.engine, device=args.device)
    if args.json:
        print(json.dumps(result))
        return
    verdict = "same person" if result["same"] else "different people"
    print(f"{verdict}: score {result['score']:.4f}, threshold {result['threshold']:.4f} ({result['threshold_source']})")


def cmd_search(args):
    from facelib import inference

    table = inference.search(args.probe, args.gallery, args.model, top=args.top, engine=args.engine, device=args.device)
    if args.json:
        print(table.to_json(orient="records"))
        return
    print(table.to_string(index=False, float_format="%.4f"))


def cmd_notebooks(args):
    from facelib import notebooks

    run_dir = notebooks.run_series(
        profile=args.profile, data=args.data, out=args.out, device=args.device, refresh_figures=args.refresh_figures
    )
    print(f"executed notebooks, figures and checkpoints: {run_dir}")


def add_training_arguments(parser):
    parser.add_argument("data", help="dataset folder (K-Face layout, CFP, LFW-style or image folders)")
    parser.add_argument(
        "--out",
        required=True,
        type=options.cli_type(options.output_folder),
        help="run folder for checkpoints, metrics and logs",
    )
    parser.add_argument("--epochs", type=options.cli_type(options.epochs), help="default: see facelib.recipe")
    parser.add_argument(
        "--image-size",
        type=options.cli_type(options.image_size),
        help=f"square input size in pixels, {options.MIN_IMAGE_SIZE}-{options.MAX_IMAGE_SIZE} (the original used 112)",
    )
    parser.add_argument(
        "--align",
        action="store_true",
        default=None,
        help="warp each face onto its view's landmark template instead of cropping its box (CFP fiducials; faces "
        "without usable landmarks, and layouts without any, keep the box); the trained model embeds faces the same way",
    )
    parser.add_argument(
        "--batch",
        type=options.cli_type(options.batch_side),
        nargs=2,
        metavar=("P", "K"),
        help="P identities x K images per batch (the original used 8 16)",
    )
    parser.add_argument("--seed", type=options.cli_type(options.seed))
    parser.add_argument("--train-folds", type=fold_list, help="CFP protocol folds to train on, e.g. 1-8")
    parser.add_argument(
        "--augment",
        dest="augmentation",
        metavar="default|strong",
        help="batch augmentation recipe (facelib.imagecache.AUGMENTATIONS; default: default)",
    )
    parser.add_argument(
        "--device", type=options.cli_type(options.device), help="auto (CUDA when available; the default), cpu or cuda"
    )
    run = parser.add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true", help="continue the run in --out with its own settings")
    run.add_argument("--overwrite", action="store_true", help="replace the run --out already holds")


def add_device_argument(parser):
    parser.add_argument(
        "--device",
        default="auto",
        type=options.cli_type(options.device),
        help="auto (CUDA when available), cpu or cuda",
    )


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other error (the usage stays in --help)."""

    def error(self, message):
        self.exit(2, f"facelib: error: {message} (see {self.prog} --help)\n")


def add_engine_argument(parser):
    parser.add_argument(
        "--engine", choices=["torch", "onnx"], default="torch", help="run the network in torch or ONNX Runtime (CPU)"
    )


def add_model_arguments(parser):
    parser.add_argument("--model", required=True, help="RUN/model.pt, or an ONNX file from `facelib export`")
    add_device_argument(parser)
    add_engine_argument(parser)


def build_parser():
    parser = OneLineParser(prog="facelib", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("inspect", help="detect a dataset's layout, check it, and count images and pairs")
    p.add_argument("data")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=cmd_inspect)

    p = commands.add_parser("synth", help="generate the synthetic multi-angle face set (K-Face layout)")
    p.add_argument("out")
    p.add_argument("--identities", type=options.cli_type(options.identities), default=100)
    p.add_argument("--seed", type=options.cli_type(options.seed), default=0)
    p.add_argument("--size", type=options.cli_type(options.synthetic_size), default=112, help="image size in pixels")
    p.add_argument(
        "--style",
        type=options.cli_type(options.synthetic_style),
        default="cartoon",
        help="cartoon (the default set's look), photo (no outlines, textured skin, shine, blur and noise) or "
        "sculpted (the cartoon with each person's brow ridge, nose bridge, cheekbones, lips and chin)",
    )
    p.set_defaults(handler=cmd_synth)

    p = commands.add_parser("pretext", help="train the pretext model (camera angle + expression)")
    add_training_arguments(p)
    p.set_defaults(handler=cmd_pretext)

    p = commands.add_parser("train", help="train Triarchy (or the Baseline) on identities")
    add_training_arguments(p)
    p.add_argument(
        "--init",
        help="checkpoint whose backbone initialises the model: a pretext run, or an identity run (e.g. on synthetic "
        "faces)",
    )
    p.add_argument("--model", choices=["triarchy", "baseline"], help="default: triarchy")
    p.add_argument("--val-folds", type=fold_list, help="CFP protocol folds for validation, e.g. 9")
    p.add_argument(
        "--triplet-scale",
        metavar="raw|unit|batch",
        help="embeddings the triplet distances are measured between: raw (the original), unit "
        "(L2-normalised) or batch (divided by the batch's mean norm; the default)",
    )
    p.add_argument(
        "--no-centre",
        dest="centre",
        action="store_const",
        const=False,
        help="keep the original's uncentred embedding (default: subtract the training faces' mean embedding)",
    )
    p.add_argument(
        "--pose-aware",
        action="store_const",
        const=True,
        help="every identity in a batch shows each of its views (frontal / profile) at least once",
    )
    p.add_argument(
        "--canonical-facing",
        action="store_const",
        const=True,
        help="show every face whose facing is known (CFP profiles, K-Face side cameras) turned right, in training "
        "and at test, instead of random flips (default: random flips)",
    )
    p.add_argument(
        "--margin",
        choices=["none", "cosface", "arcface"],
        help="margin softmax on normalised embeddings and class weights (default: none, the plain softmax)",
    )
    p.add_argument(
        "--head",
        choices=["gap", "gdc"],
        help="embedding head: gap (average pooling, the original) or gdc (global depthwise convolution)",
    )
    p.add_argument(
        "--last-stride",
        type=int,
        choices=[2, 1],
        help="stride of the backbone's last stride-2 stage: 2 (the original) or 1 (a last feature map of 1/16 of the "
        "input's side instead of 1/32: 7 x 7 at 112 px instead of 3 x 3; same parameters, about 1.3x the "
        "time of a CFP epoch at 112 px)",
    )
    p.add_argument(
        "--ema",
        type=options.cli_type(options.ema),
        metavar="DECAY",
        help="keep an exponential moving average of the weights (e.g. 0.998 per step) and validate and save it "
        "(default: 0, none)",
    )
    p.set_defaults(handler=cmd_train)

    p = commands.add_parser("evaluate", help="verification and retrieval metrics of a trained model")
    p.add_argument("data")
    p.add_argument("--model", required=True, help="checkpoint, e.g. RUN/model.pt")
    p.add_argument("--split", help="pair split to evaluate (K-Face layout: validate or test)")
    p.add_argument("--protocol", choices=["FF", "FP"], help="CFP protocol")
    p.add_argument("--folds", type=fold_list, help="CFP folds to evaluate (default: k-fold over all present)")
    p.add_argument("--calibrate-folds", type=fold_list, help="CFP folds that choose the threshold")
    p.add_argument("--metric", choices=["cosine", "euclidean"], default="cosine")
    p.add_argument("--no-flip", action="store_true", help="do not average embeddings with the mirrored image")
    add_device_argument(p)
    add_engine_argument(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=cmd_evaluate)

    p = commands.add_parser("predict", help="write the challenge's prediction file (label 0 = same person)")
    p.add_argument("data")
    p.add_argument("--model", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True, type=options.cli_type(options.output_file), help="CSV to write")
    threshold = p.add_mutually_exclusive_group()
    threshold.add_argument(
        "--threshold", type=options.cli_type(options.threshold), help="fixed decision threshold on the score"
    )
    threshold.add_argument("--calibrate", default="validate", help="split whose pairs choose the threshold")
    p.add_argument("--with-score", action="store_true", help="add the similarity score as a column")
    add_device_argument(p)
    add_engine_argument(p)
    p.set_defaults(handler=cmd_predict)

    p = commands.add_parser(
        "export", help="write a trained model as ONNX (flip averaging, L2 norm and metadata inside)"
    )
    p.add_argument("--model", required=True, help="identity checkpoint, e.g. RUN/model.pt")
    p.add_argument("--out", required=True, help="ONNX file to write, e.g. model.onnx")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(handler=cmd_export)

    p = commands.add_parser("verify", help="are two photos the same person?")
    p.add_argument("a", help="photo (any size: the centre square is used)")
    p.add_argument("b", help="photo")
    add_model_arguments(p)
    p.add_argument(
        "--threshold",
        type=options.cli_type(options.threshold),
        help="decision threshold on the cosine (default: the stored one)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=cmd_verify)

    p = commands.add_parser("search", help="rank a gallery's identities by likeness to a photo")
    p.add_argument("probe", help="photo to look up")
    p.add_argument("--gallery", required=True, help="folder of identity folders and / or images")
    add_model_arguments(p)
    p.add_argument("--top", type=int, default=5, help="identities to list")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(handler=cmd_search)

    p = commands.add_parser("notebooks", help="execute notebooks 01-05 headlessly with papermill")
    p.add_argument(
        "--profile",
        default="default",
        help="default (the main job), smoke (every cell runs, in seconds) or cfp (the recipe for real faces)",
    )
    p.add_argument("--data", help="dataset folder (default: the generated synthetic set)")
    p.add_argument(
        "--out",
        default="runs/main",
        type=options.cli_type(options.output_folder),
        help="run folder for executed notebooks and results",
    )
    add_device_argument(p)
    p.add_argument(
        "--refresh-figures",
        action="store_true",
        help="afterwards copy the run's figures into the repo's figures/ (the README's; faces only if synthetic)",
    )
    p.set_defaults(handler=cmd_notebooks)
    return parser


def show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"facelib: warning: {message}", file=sys.stderr)


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # a usage error (already printed as one line), or --help
        return stop.code
    try:
        options.cache_limit_mb()  # the environment's setting, checked before any work
        with warnings.catch_warnings(), sigterm_unwinds():
            warnings.showwarning = show_warning
            args.handler(args)
    except FacelibError as error:
        print(f"facelib: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.filename is None:  # not about a path: a programming or system error, keep its traceback
            raise
        print(f"facelib: error: {error.filename}: {error.strerror or error}", file=sys.stderr)
        return 2
    return 0
