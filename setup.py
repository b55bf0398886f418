"""Build hook: the wheel carries a .pth file that makes ``import pytorch_pretrained_bert`` find this package's
alias (bert/compat/alias_path) when the original package is not installed. The path is appended to sys.path,
after site-packages, so an installed original always wins; see bert/compat/__init__.py. Everything else is in
pyproject.toml.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH_NAME = "bert_toolkit_pytorch_pretrained_bert_alias.pth"  # = bert.compat.PTH_NAME
ALIAS_PATH = os.path.join("bert", "compat", "alias_path")  # relative to site-packages


class BuildPyWithAliasPth(build_py):
    def run(self):
        super().run()
        if not getattr(self, "editable_mode", False):  # an editable install's Makefile step writes its own
            os.makedirs(self.build_lib, exist_ok=True)
            with open(os.path.join(self.build_lib, PTH_NAME), "w", encoding="utf-8") as pth:
                pth.write(ALIAS_PATH + "\n")

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        return [*outputs, os.path.join(self.build_lib, PTH_NAME)]


setup(cmdclass={"build_py": BuildPyWithAliasPth})
