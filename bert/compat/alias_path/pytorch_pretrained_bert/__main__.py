"""``python -m pytorch_pretrained_bert convert_tf_checkpoint_to_pytorch TF_CHECKPOINT TF_CONFIG PYTORCH_DUMP_OUTPUT``."""

import sys

from bert.compat.cli import main

sys.exit(main())
