"""The import hook behind ``pytorch_pretrained_bert``: its submodules are ours, module for module.

    pytorch_pretrained_bert.modeling      -> bert.modeling       (the same module object)
    pytorch_pretrained_bert.tokenization  -> bert.tokenization
    pytorch_pretrained_bert.optimization  -> bert.optimization   (and .optimization_openai: OpenAIAdam)
    pytorch_pretrained_bert.file_utils    -> bert.file_utils
    pytorch_pretrained_bert.convert_tf_checkpoint_to_pytorch -> bert.compat.convert_tf_checkpoint_to_pytorch

The original's GPT, GPT-2 and Transformer-XL modules are not part of this package: importing one is an
ImportError that says so.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType
from typing import Optional

from bert.compat import ALIAS

SUBMODULES = {
    "modeling": "bert.modeling",
    "tokenization": "bert.tokenization",
    "optimization": "bert.optimization",
    "optimization_openai": "bert.optimization",
    "file_utils": "bert.file_utils",
    "convert_tf_checkpoint_to_pytorch": "bert.compat.convert_tf_checkpoint_to_pytorch",
}
NOT_PROVIDED = ("modeling_openai", "modeling_gpt2", "modeling_transfo_xl", "modeling_transfo_xl_utilities",
                "tokenization_openai", "tokenization_gpt2", "tokenization_transfo_xl",
                "convert_openai_checkpoint_to_pytorch", "convert_gpt2_checkpoint_to_pytorch",
                "convert_transfo_xl_checkpoint_to_pytorch")


class _AliasLoader(importlib.abc.Loader):
    """Loads an alias as the module it stands for (which keeps its own name and spec)."""

    def __init__(self, target: str):
        self.target = target
        self._spec = None

    def create_module(self, spec) -> ModuleType:
        module = importlib.import_module(self.target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._spec  # the import system set the alias's spec on it: give it its own back


class _NotProvidedLoader(importlib.abc.Loader):
    def create_module(self, spec) -> ModuleType:
        raise ImportError(f"{spec.name} is not part of bert-toolkit, which implements the BERT part of "
                          "pytorch-pretrained-bert only (GPT, GPT-2 and Transformer-XL are not included)",
                          name=spec.name)

    def exec_module(self, module: ModuleType) -> None:  # never reached
        raise ImportError(module.__name__)


class AliasFinder(importlib.abc.MetaPathFinder):
    """Finds ``pytorch_pretrained_bert.<sub>`` for the alias package (not its own ``__main__``)."""

    def find_spec(self, fullname: str, path=None, target=None) -> Optional[importlib.machinery.ModuleSpec]:
        package, _, sub = fullname.partition(".")
        if package != ALIAS or not sub or "." in sub:
            return None
        if sub in SUBMODULES:
            return importlib.util.spec_from_loader(fullname, _AliasLoader(SUBMODULES[sub]))
        if sub in NOT_PROVIDED:
            return importlib.util.spec_from_loader(fullname, _NotProvidedLoader())
        return None  # e.g. __main__: the alias package's own file


def install() -> None:
    """Put the finder first on sys.meta_path (once)."""
    if not any(isinstance(f, AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, AliasFinder())
