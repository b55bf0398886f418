"""Code written for pytorch-pretrained-bert 0.6.2 runs on this package, unmodified.

``import pytorch_pretrained_bert`` (and its submodules ``modeling``, ``tokenization``, ``optimization``,
``file_utils``, ...) resolves to ``bert`` (``bert.modeling``, ...: the same module objects, so classes are
the same classes) when the folder ALIAS_PATH is on ``sys.path`` ahead of any real pytorch_pretrained_bert:

- installed from a wheel, a ``.pth`` file appends ALIAS_PATH to ``sys.path``: with the original package not
  installed, old code finds ours; with it installed, the original (earlier on ``sys.path``) wins;
- ``python -m bert.compat run script.py ARGS`` (or ``run -m module ARGS``) puts ours first for one run, and
  for the processes it starts (through PYTHONPATH), whatever else is installed.
"""

from __future__ import annotations

from pathlib import Path

ALIAS = "pytorch_pretrained_bert"
ALIAS_PATH = str(Path(__file__).resolve().parent / "alias_path")
# The .pth file a wheel installs into site-packages (one line: ALIAS_PATH relative to site-packages).
PTH_NAME = "bert_toolkit_pytorch_pretrained_bert_alias.pth"
