"""Stage convert: the pretrained model named by ``model.name`` in the project's own folder format.

    python -m stages.convert --out models/pretrained

``model.name`` is a shortcut name (bert-base-uncased, ...: downloaded and converted by bert.io.hub), the
packaged ``minilm-l6-h384-uncased``, or a folder: ours or HF's (config.json + model.safetensors or
pytorch_model.bin), the original pytorch-pretrained-bert dump, or a Google TF checkpoint (a folder
with bert_model.ckpt.* and bert_config.json, or Google's released zip). The output is
``config.json`` + ``model.safetensors`` + ``vocab.txt`` (+ tokenizer_config.json when the source has
one) and SOURCE.json; the weights are loaded and checked, so a broken checkpoint fails here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bert.io.download import sha256_of
from bert.io.fileio import atomic_copy
from bert.modeling import BertForPreTraining, BertModel
from bert.model.pretrained import resolve_model_dir
from bert.model.weights import WEIGHTS_NAMES, load_state_dict_file
from stages._lib.common import atomic_outputs, run_stage, stage_parser, write_json
from stages._lib.params import load_section

logger = logging.getLogger("stages.convert")
TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json")


@dataclass(frozen=True)
class ModelParams:
    """Section ``model`` (of params.yaml, and of pretrain/params.yaml)."""

    name: str  # a shortcut name (bert-base-uncased), the packaged minilm-l6-h384-uncased, or a folder


def _is_tf_checkpoint(path: Path) -> bool:
    if path.is_file():
        return path.suffix in (".zip", ".tar", ".gz", ".tgz") or path.name.endswith(".index")
    return path.is_dir() and any(path.glob("*.ckpt*.index")) and not any((path / n).is_file() for n in WEIGHTS_NAMES)


def convert(name: str, out: Path) -> dict:
    """Write model `name` into the empty folder `out`; returns the SOURCE.json record."""
    local = Path(name)
    if local.exists() and _is_tf_checkpoint(local):
        from bert.formats.convert import convert_tf_checkpoint

        convert_tf_checkpoint(local, None, out)
        source = local
    else:
        source = Path(resolve_model_dir(name))
        weights = next((source / n for n in WEIGHTS_NAMES if (source / n).is_file()), None)
        if weights is None:
            raise ValueError(f"model.name: {source} has no {' or '.join(WEIGHTS_NAMES)}")
        state_dict = load_state_dict_file(weights)
        # keep the pre-training heads when the checkpoint has them; a bare encoder stays bare
        cls = BertForPreTraining if any(k.startswith("cls.") for k in state_dict) else BertModel
        model = cls.from_pretrained(source, state_dict=state_dict)
        model.save_pretrained(out)
        for file in TOKENIZER_FILES:
            if (source / file).is_file():
                atomic_copy(source / file, out / file)
    if not (out / "vocab.txt").is_file():
        raise ValueError(f"model.name: {name} ({source}) has no vocab.txt beside its weights")
    return {
        "name": name,
        "resolved": str(Path(source).resolve()),
        "files": {f.name: sha256_of(f) for f in sorted(out.iterdir()) if f.is_file()},
    }


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = stage_parser("convert", __doc__)
    parser.add_argument("--out", required=True, type=Path, help="the model folder to write")
    args = parser.parse_args(argv)

    def body() -> None:
        params = load_section("model", ModelParams, args.params)
        with atomic_outputs(args.out) as (tmp,):
            tmp.mkdir()
            record = convert(params.name, tmp)
            write_json(tmp / "SOURCE.json", record)
        logger.info("model %s -> %s", params.name, args.out)

    return run_stage("convert", body, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
