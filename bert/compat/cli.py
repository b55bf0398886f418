"""pytorch-pretrained-bert's command line:

    pytorch_pretrained_bert convert_tf_checkpoint_to_pytorch TF_CHECKPOINT TF_CONFIG PYTORCH_DUMP_OUTPUT

(also ``python -m pytorch_pretrained_bert ...`` through the alias, and ``bert convert_tf_checkpoint_to_pytorch ...``).
The original's GPT, GPT-2 and Transformer-XL conversions are not part of this package.
"""

from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

USAGE = ("Should be used as `pytorch_pretrained_bert convert_tf_checkpoint_to_pytorch TF_CHECKPOINT TF_CONFIG "
         "PYTORCH_DUMP_OUTPUT`")
NOT_PROVIDED = ("convert_openai_checkpoint", "convert_transfo_xl_checkpoint", "convert_gpt2_checkpoint")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the legacy command; returns the exit status (2: usage, 1: error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in NOT_PROVIDED:
        print(f"pytorch_pretrained_bert: error: {argv[0]} is not part of bert-toolkit (BERT only)", file=sys.stderr)
        return 2
    if len(argv) != 4 or argv[0] != "convert_tf_checkpoint_to_pytorch":
        print(USAGE, file=sys.stderr)
        return 2
    from bert.cli.errors import run_reporting_errors
    from bert.compat.convert_tf_checkpoint_to_pytorch import (
        convert_tf_checkpoint_to_pytorch,
    )

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_reporting_errors(lambda: convert_tf_checkpoint_to_pytorch(*argv[1:]),
                                "pytorch_pretrained_bert convert_tf_checkpoint_to_pytorch")
