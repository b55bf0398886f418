"""The ``bert`` command (also ``python -m bert``).

    bert convert-tf-checkpoint TF_CHECKPOINT [BERT_CONFIG] OUT_DIR   Google TF checkpoint -> our folder
    bert export-tf-checkpoint MODEL OUT_PREFIX                        our folder -> Google TF checkpoint
    bert extract-features --input-file IN --output-file OUT          token vectors as JSON lines
    bert predict --model DIR --input FILE [--output FILE]            a fine-tuned model's predictions as JSON lines
    bert download NAME...                                            fetch and convert into the cache
    bert convert_tf_checkpoint_to_pytorch TF_CHECKPOINT TF_CONFIG PYTORCH_DUMP_OUTPUT   (pytorch-pretrained-bert's)

An error is one line on stderr and exit status 1; ``--debug`` (or ``BERT_DEBUG=1``) shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from bert.cli.errors import run_reporting_errors

logger = logging.getLogger("bert")


def _convert(args: argparse.Namespace) -> int:
    from bert.formats.convert import convert_tf_checkpoint

    if len(args.paths) not in (1, 2):
        raise ValueError("expected TF_CHECKPOINT [BERT_CONFIG] OUT_DIR")
    config, out_dir = (None, args.paths[0]) if len(args.paths) == 1 else args.paths
    kwargs = {k: v for k, v in (("num_labels", args.num_labels), ("num_choices", args.num_choices)) if v}
    out = convert_tf_checkpoint(args.tf_checkpoint, config, out_dir, head=args.head,
                                allow_unused_heads=args.allow_unused_heads, **kwargs)
    print(out)
    return 0


def _export(args: argparse.Namespace) -> int:
    from bert.formats.convert import export_tf_checkpoint
    from bert.io.hub import resolve_model_dir

    print(export_tf_checkpoint(resolve_model_dir(args.model, args.cache_dir), args.out_prefix))
    return 0


def _extract(args: argparse.Namespace) -> int:
    from bert.cli.extract_features import extract_features

    extract_features(args.input_file, args.output_file, args.model, layers=args.layers,
                     max_seq_length=args.max_seq_length, batch_size=args.batch_size,
                     do_lower_case=args.do_lower_case, device=args.device, cache_dir=args.cache_dir,
                     progress=not args.quiet)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from bert.cli.predict import predict_command

    return predict_command(args)


def _download(args: argparse.Namespace) -> int:
    from bert.io import hub

    if args.list:
        for name in hub.known_names():
            release = hub.find_release(name)
            print(f"{name}\t{release.url if release else 'packaged (' + str(hub.packaged_model_dir()) + ')'}")
        return 0
    if not args.names:
        raise ValueError("name at least one model (see bert download --list)")
    for name in args.names:
        print(hub.resolve_model_dir(name, args.cache_dir, progress=not args.quiet))
    return 0


def _positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (a zero or negative count is a usage error, not a crash)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from bert.formats.heads import HEADS

    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a flag given before the subcommand is not reset by the subparser's default.
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback on errors (also BERT_DEBUG=1)")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars, warnings only")
    parser = argparse.ArgumentParser(prog="bert", parents=[common], description=(
        "Google's BERT in PyTorch: convert TF checkpoints both ways, fetch released models, extract features, "
        "predict with fine-tuned models."))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("convert-tf-checkpoint", parents=[common],
                       help="a Google TF checkpoint (or released zip) -> config.json + model.safetensors",
                       description="Read a Google BERT TF checkpoint (the bert_model.ckpt prefix, its folder, "
                       "or Google's released zip) and write config.json + model.safetensors (+ vocab.txt "
                       "when it sits beside the checkpoint). Needs no TensorFlow.",
                       usage="bert convert-tf-checkpoint TF_CHECKPOINT [BERT_CONFIG] OUT_DIR [options]")
    p.add_argument("tf_checkpoint", metavar="TF_CHECKPOINT")
    p.add_argument("paths", nargs="+", metavar="[BERT_CONFIG] OUT_DIR",
                   help="bert_config.json (default: the one beside the checkpoint), then the output folder")
    p.add_argument("--head", default="auto", choices=["auto", *HEADS],
                   help="model class to fill (default: from the checkpoint's variables)")
    p.add_argument("--num-labels", type=_positive_int, help="for classifier heads (default: from output_weights)")
    p.add_argument("--num-choices", type=_positive_int, help="for the multiple-choice head")
    p.add_argument("--allow-unused-heads", action="store_true",
                   help="with a smaller --head, drop the other heads' variables instead of failing")
    p.set_defaults(func=_convert)

    p = sub.add_parser("export-tf-checkpoint", parents=[common],
                       help="a model folder or name -> a Google TF checkpoint",
                       description="Write a model as a Google TF checkpoint (OUT_PREFIX.index + .data-*), with "
                       "bert_config.json and vocab.txt beside it, for Google's TF scripts. Needs no TensorFlow.")
    p.add_argument("model", metavar="MODEL", help="model folder or name (e.g. minilm-l6-h384-uncased)")
    p.add_argument("out_prefix", metavar="OUT_PREFIX", help="e.g. out/bert_model.ckpt")
    p.add_argument("--cache-dir", help="download cache for model names")
    p.set_defaults(func=_export)

    p = sub.add_parser("extract-features", parents=[common], help="token vectors of chosen layers, as JSON lines",
                       description="One JSON line per input line (a sentence, or 'A ||| B'), with each token's "
                       "vectors from the chosen layers, in the format of Google's extract_features.py.")
    p.add_argument("--input-file", required=True)
    p.add_argument("--output-file", required=True)
    p.add_argument("--model", default="minilm-l6-h384-uncased", help="model folder or name (default: %(default)s)")
    p.add_argument("--layers", default="-1,-2,-3,-4",
                   help="comma-separated layer indexes, negative from the top; write it --layers=-1,-2 "
                   "(default: %(default)s)")
    p.add_argument("--max-seq-length", type=_positive_int, default=128, help="tokens per line, [CLS]/[SEP] included")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--do-lower-case", action=argparse.BooleanOptionalAction, default=None,
                   help="default: the model folder's tokenizer settings")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--cache-dir", help="download cache for model names")
    p.set_defaults(func=_extract)

    from bert.cli import predict  # the standard library only: no torch for --help

    p = sub.add_parser("predict", parents=[common], help="a fine-tuned model's predictions on new inputs",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=predict.HELP,
                       description="Predict with a fine-tuned model folder (one the pipeline wrote, e.g. "
                       "models/finetuned/mrpc/seed42): classification, regression, multi-label, extractive QA "
                       "or multiple choice, as its config.json says. One JSON line per input, in input order.")
    predict.add_arguments(p, _positive_int)
    p.set_defaults(func=_predict)

    p = sub.add_parser("download", parents=[common], help="fetch and convert released models into the cache",
                       description="Download Google's released checkpoints by name, convert them once and print "
                       "the cached folders. Names: bert download --list.")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--list", action="store_true", help="print the known names and their URLs")
    p.add_argument("--cache-dir", help="default: $BERT_TOOLKIT_CACHE or ~/.cache/bert-toolkit")
    p.set_defaults(func=_download)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``bert`` command.

    Args:
        argv: the arguments (default: sys.argv[1:]).
    Returns:
        The exit status: 0 on success, 1 on an error, 2 on a usage error.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["convert_tf_checkpoint_to_pytorch"]:  # pytorch-pretrained-bert's command-line form
        from bert.compat.cli import main as legacy_main

        return legacy_main(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error argparse has printed
        return int(exit_.code or 0)
    # Not parser defaults: the parsers share these actions, so a default would undo a flag given first.
    args.quiet = getattr(args, "quiet", False)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    return run_reporting_errors(lambda: args.func(args), f"bert {args.command}", getattr(args, "debug", False))


if __name__ == "__main__":
    sys.exit(main())
