"""pytorch-pretrained-bert's ``convert_tf_checkpoint_to_pytorch``: a Google TF checkpoint to the original's
``pytorch_model.bin`` (a BertForPreTraining state dict written with torch.save).

    python -m bert.compat.convert_tf_checkpoint_to_pytorch --tf_checkpoint_path CKPT \
        --bert_config_file bert_config.json --pytorch_dump_path pytorch_model.bin

``bert convert-tf-checkpoint`` writes the toolkit's folder format (config.json + model.safetensors) instead.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import torch

from bert.formats.tf_checkpoint import load_tf_weights_in_bert
from bert.io.fileio import atomic_path
from bert.model.config import BertConfig
from bert.modeling import BertForPreTraining

logger = logging.getLogger(__name__)


def convert_tf_checkpoint_to_pytorch(tf_checkpoint_path: str | os.PathLike, bert_config_file: str | os.PathLike,
                                     pytorch_dump_path: str | os.PathLike) -> None:
    """Build a BertForPreTraining from the config, fill it from the checkpoint, and torch.save its state dict
    to `pytorch_dump_path` (atomically: a temporary name renamed into place).

    Raises:
        ValueError: an unreadable config or checkpoint, or an encoder weight missing from it.
    """
    config = BertConfig.from_json_file(bert_config_file)
    logger.info("Building PyTorch model from configuration: %s", config)
    model = load_tf_weights_in_bert(BertForPreTraining(config), tf_checkpoint_path)
    logger.info("Save PyTorch model to %s", pytorch_dump_path)
    with atomic_path(Path(pytorch_dump_path)) as tmp:
        torch.save(model.state_dict(), tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tf_checkpoint_path", required=True, help="Path the TensorFlow checkpoint path.")
    parser.add_argument("--bert_config_file", required=True, help="The config json file of the pre-trained model.")
    parser.add_argument("--pytorch_dump_path", required=True, help="Path to the output PyTorch model.")
    args = parser.parse_args(argv)
    from bert.cli.errors import run_reporting_errors

    return run_reporting_errors(lambda: convert_tf_checkpoint_to_pytorch(
        args.tf_checkpoint_path, args.bert_config_file, args.pytorch_dump_path))


if __name__ == "__main__":
    raise SystemExit(main())
