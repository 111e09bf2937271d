"""The `facelib` command: one sub-command per step of the method.

Heavy modules (torch) are imported inside each command, so `facelib inspect` answers quickly.
User errors (FacelibError) become one line on stderr and exit status 2, never a traceback.
"""

import argparse
import json
import sys

from facelib.errors import FacelibError


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

    path = synthetic.generate(args.out, identities=args.identities, seed=args.seed, size=args.size)
    print(f"wrote synthetic K-Face layout to {path}")


def training_options(args):
    """The options the user gave; the rest keep facelib.training's defaults (one place for them)."""
    options = dict(
        epochs=args.epochs,
        image_size=args.image_size,
        batch=args.batch and tuple(args.batch),
        seed=args.seed,
        train_folds=args.train_folds,
        device=args.device,
        resume=args.resume,
    )
    return {name: value for name, value in options.items() if value is not None}


def cmd_pretext(args):
    from facelib import training

    path = training.train_pretext(args.data, args.out, **training_options(args))
    print(f"pretext checkpoint: {path}")


def cmd_train(args):
    from facelib import training

    options = training_options(args)
    if args.val_folds:
        options["val_folds"] = args.val_folds
    if args.triplet_scale:
        options["triplet_scale"] = args.triplet_scale
    path = training.train_identity(args.data, args.out, init=args.init, model=args.model, **options)
    print(f"best model: {path}")


def cmd_evaluate(args):
    from facelib import evaluation

    result = evaluation.evaluate_command(
        args.data,
        args.model,
        split=args.split,
        protocol=args.protocol,
        folds=args.folds,
        calibrate_folds=args.calibrate_folds,
        flip=not args.no_flip,
        metric=args.metric,
        device=args.device,
    )
    if args.json:
        print(json.dumps(result, default=str))
        return
    for key, value in result.items():
        if not isinstance(value, (list, dict)):
            print(f"{key:>14}: {value}")
    for key, value in result.get("retrieval", {}).items():
        print(f"{'retrieval ' + key:>14}: {value}")


def cmd_predict(args):
    from facelib import evaluation

    path = evaluation.predict_command(
        args.data,
        args.model,
        split=args.split,
        out=args.out,
        threshold=args.threshold,
        calibrate=args.calibrate,
        with_score=args.with_score,
        device=args.device,
    )
    print(f"predictions: {path}")


def cmd_notebooks(args):
    from facelib import notebooks

    run_dir = notebooks.run_series(
        profile=args.profile, data=args.data, out=args.out, device=args.device, refresh_figures=args.refresh_figures
    )
    print(f"executed notebooks, figures and checkpoints: {run_dir}")


def add_training_arguments(parser):
    parser.add_argument("data", help="dataset folder (K-Face layout, CFP, LFW-style or image folders)")
    parser.add_argument("--out", required=True, help="run folder for checkpoints, metrics and logs")
    parser.add_argument("--epochs", type=int, help="default: see facelib.training")
    parser.add_argument("--image-size", type=int, help="square input size in pixels (the original used 112)")
    parser.add_argument(
        "--batch",
        type=int,
        nargs=2,
        metavar=("P", "K"),
        help="P identities x K images per batch (the original used 8 16)",
    )
    parser.add_argument("--seed", type=int)
    parser.add_argument("--train-folds", type=fold_list, help="CFP protocol folds to train on, e.g. 1-8")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--resume", action="store_true", help="continue from RUN/last.pt")


def build_parser():
    parser = argparse.ArgumentParser(prog="facelib", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("inspect", help="detect a dataset's layout, check it, and count images and pairs")
    p.add_argument("data")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=cmd_inspect)

    p = commands.add_parser("synth", help="generate the synthetic multi-angle face set (K-Face layout)")
    p.add_argument("out")
    p.add_argument("--identities", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=112, help="image size in pixels")
    p.set_defaults(handler=cmd_synth)

    p = commands.add_parser("pretext", help="train the pretext model (camera angle + expression)")
    add_training_arguments(p)
    p.set_defaults(handler=cmd_pretext)

    p = commands.add_parser("train", help="train Triarchy (or the Baseline) on identities")
    add_training_arguments(p)
    p.add_argument("--init", help="pretext checkpoint whose backbone initialises the model")
    p.add_argument("--model", choices=["triarchy", "baseline"], default="triarchy")
    p.add_argument("--val-folds", type=fold_list, help="CFP protocol folds for validation, e.g. 9")
    p.add_argument(
        "--triplet-scale",
        metavar="raw|unit|batch",
        help="embeddings the triplet distances are measured between: raw (the original), unit "
        "(L2-normalised) or batch (divided by the batch's mean norm); default: facelib.training.TRIPLET_SCALE",
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
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=cmd_evaluate)

    p = commands.add_parser("predict", help="write the challenge's prediction file (label 0 = same person)")
    p.add_argument("data")
    p.add_argument("--model", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True, help="CSV to write")
    threshold = p.add_mutually_exclusive_group()
    threshold.add_argument("--threshold", type=float, help="fixed decision threshold on the score")
    threshold.add_argument("--calibrate", default="validate", help="split whose pairs choose the threshold")
    p.add_argument("--with-score", action="store_true", help="add the similarity score as a column")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    p.set_defaults(handler=cmd_predict)

    p = commands.add_parser("notebooks", help="execute notebooks 01-05 headlessly with papermill")
    p.add_argument(
        "--profile",
        default="default",
        help="default (the main job), smoke (every cell runs, in seconds) or cfp (the recipe for real faces)",
    )
    p.add_argument("--data", help="dataset folder (default: the generated synthetic set)")
    p.add_argument("--out", default="runs/main", help="run folder for executed notebooks and results")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--refresh-figures",
        action="store_true",
        help="afterwards copy the run's figures into the repo's figures/ (the README's; faces only if synthetic)",
    )
    p.set_defaults(handler=cmd_notebooks)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except FacelibError as error:
        print(f"facelib: error: {error}", file=sys.stderr)
        return 2
    return 0
