"""pytorch_pretrained_bert, served by bert-toolkit: every BERT name of 0.6.2's package, from ``bert``.

This folder is on sys.path only through bert.compat (see its docstring); it is not the original package.
"""

from bert.compat.alias import install as _install

_install()

from bert import *  # noqa: E402,F401,F403
from bert import __all__, __version__  # noqa: E402,F401
