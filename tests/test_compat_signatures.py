"""Every public name of pytorch-pretrained-bert 0.6.2's BERT modules exists in ours, with a compatible signature.

Module pairs: pytorch_pretrained_bert -> bert, and its .modeling, .tokenization, .optimization, .file_utils
-> bert's. A name counts when the original module defines it (def, class, assignment, at top level or inside
a top-level if/try) or imports it from its own package (``from .file_utils import cached_path``); names it
imports from elsewhere (torch, boto3, requests, tqdm, the standard library) do not, nor the non-BERT models:
OpenAIGPT*, TransfoXL*, GPT2* and their load_tf_weights_in_* functions.

OpenAIAdam is kept: the original's __init__ exports it next to BertAdam, and it is a general optimizer
(Adam with the same schedules and decoupled weight decay), not a part of the GPT models, so a 0.6.2
script may well import it with BertAdam. Its module, optimization_openai, is not one of the pairs.

A signature is compatible when every call the original accepts binds the same way in ours: each parameter
of the original exists in ours with the same name, at the same positional index when it can be passed
positionally, keyword-passable when it can be passed by keyword, with a default where the original has one
(torch's ``required`` marker is no default); *args and **kwargs where the original has them. Ours may add
parameters that have a default (an added required parameter, keyword-only or not, breaks every original
call; so would an added positional one in front of the original's *args). Checked for functions, classes
(their constructor), and public methods of classes, with classmethod / staticmethod kept as such; classes
must also keep the original's base classes (isinstance checks), and public class attributes must exist.
"""

from __future__ import annotations

import abc
import ast
import importlib
import inspect
import re
import textwrap
from types import ModuleType

import pytest

from compat_oracle_helpers import ORIGINAL, OURS, skip_unless_real_original

pytest.importorskip("pytorch_pretrained_bert")
skip_unless_real_original()

# "" is the package itself, last: a gap is named after the module that defines the name (bert.modeling.BertConfig)
MODULES = ("modeling", "tokenization", "optimization", "file_utils", "")
NON_BERT = re.compile(r"^(OpenAIGPT|TransfoXL|GPT2|load_tf_weights_in_(openai_gpt|transfo_xl|gpt2)$)")
# Private by name, public in use: BertAdam's documented schedule type (custom schedules subclass it).
PRIVATE_KEPT = {"_LRSchedule", "__version__"}
EMPTY = inspect.Parameter.empty
POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def module_name(package: str, module: str) -> str:
    return f"{package}.{module}" if module else package


def own_names(module: ModuleType) -> list[str]:
    """The names `module` defines or imports from its own package, in source order (read from its source)."""
    names: dict[str, None] = {}

    def visit(body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names[node.name] = None
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    names.update(dict.fromkeys(n.id for n in ast.walk(target) if isinstance(n, ast.Name)))
            elif isinstance(node, ast.ImportFrom) and node.level > 0:  # from .x import y: the package's own
                names.update(dict.fromkeys(alias.asname or alias.name for alias in node.names))
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                for block in ("body", "orelse", "finalbody"):
                    visit(getattr(node, block, []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(ast.parse(inspect.getsource(module)).body)
    return list(names)


def _from_elsewhere(value) -> bool:
    """A class, function or module that lives outside the original package (e.g. ``ABC = abc.ABC``)."""
    if inspect.ismodule(value):
        return not value.__name__.startswith(ORIGINAL)
    if inspect.isclass(value) or inspect.isroutine(value):
        return not (getattr(value, "__module__", None) or "").startswith(ORIGINAL)
    return False


def public_names(module: ModuleType) -> list[str]:
    """The names of `module` that ours must have (see the module docstring)."""
    out = []
    for name in own_names(module):
        if name.startswith("_") and name not in PRIVATE_KEPT:
            continue
        if NON_BERT.match(name) or not hasattr(module, name) or _from_elsewhere(getattr(module, name)):
            continue
        out.append(name)
    return out


def has_default(param: inspect.Parameter) -> bool:
    from torch.optim.optimizer import required  # BertAdam(lr=required): a marker meaning "no default"

    return param.default is not EMPTY and param.default is not required


def signature_gaps(original_sig: inspect.Signature, our_sig: inspect.Signature) -> list[str]:
    """What keeps some call of the original from binding the same way in ours (empty: compatible)."""
    gaps = []
    theirs, mine = list(original_sig.parameters.values()), list(our_sig.parameters.values())
    mine_by_name = {p.name: p for p in mine}
    their_positional = [p.name for p in theirs if p.kind in POSITIONAL]
    my_positional = [p.name for p in mine if p.kind in POSITIONAL]
    for p in theirs:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            star = "*" if p.kind == p.VAR_POSITIONAL else "**"
            if not any(q.kind == p.kind for q in mine):
                gaps.append(f"parameter '{star}{p.name}' missing")
            continue
        q = mine_by_name.get(p.name)
        if q is None:
            gaps.append(f"parameter '{p.name}' missing")
            continue
        if p.kind in POSITIONAL:
            index = their_positional.index(p.name)
            if q.kind not in POSITIONAL:
                gaps.append(f"parameter '{p.name}' is keyword-only (0.6.2: positional, index {index})")
            elif my_positional.index(q.name) != index:
                gaps.append(f"parameter '{p.name}' at positional index {my_positional.index(q.name)}, "
                            f"0.6.2 at {index}")
        if p.kind in KEYWORD and q.kind not in KEYWORD:
            gaps.append(f"parameter '{p.name}' cannot be passed by keyword")
        if has_default(p) and not has_default(q):
            gaps.append(f"parameter '{p.name}' has no default (0.6.2: {p.default!r})")
    their_names = {p.name for p in theirs}
    their_star = any(p.kind == p.VAR_POSITIONAL for p in theirs)
    for q in mine:
        if q.name in their_names or q.kind in (q.VAR_POSITIONAL, q.VAR_KEYWORD):
            continue
        if not has_default(q):
            gaps.append(f"added parameter '{q.name}' has no default")
        elif their_star and q.kind in POSITIONAL:
            gaps.append(f"added positional parameter '{q.name}' takes what 0.6.2 passes to *args")
    return gaps


def default_differences(original_sig: inspect.Signature, our_sig: inspect.Signature) -> list[str]:
    """Parameters both have with a default, whose default values differ (a list and a tuple alike count as
    equal when their items are)."""
    out = []
    for p in original_sig.parameters.values():
        q = our_sig.parameters.get(p.name)
        if q is None or not has_default(p) or not has_default(q):
            continue
        a, b = p.default, q.default
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            a, b = tuple(a), tuple(b)
        try:
            same = bool(a == b) and type(a) is type(b) or (a is None and b is None)
        except Exception:  # noqa: BLE001 -- e.g. tensors: compare by identity only
            same = a is b
        if not same and not (isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == b
                             and not isinstance(a, bool) and not isinstance(b, bool)):
            out.append(f"parameter '{p.name}' defaults to {b!r}, 0.6.2 to {a!r}")
    return out


def _our_module(original_module: str) -> ModuleType | None:
    """Our counterpart of one of the original's modules (pytorch_pretrained_bert.x -> bert.x), if any."""
    try:
        return importlib.import_module(original_module.replace(ORIGINAL, OURS, 1))
    except ImportError:
        return None


def _kind(cls: type, name: str) -> str:
    raw = inspect.getattr_static(cls, name)
    for kind, types in (("classmethod", classmethod), ("staticmethod", staticmethod), ("property", property)):
        if isinstance(raw, types):
            return kind
    return "method" if callable(raw) else "attribute"


class Survey:
    """Walks the module pairs once; collects the gaps and the differing defaults, one line each."""

    def __init__(self):
        self.gaps: list[str] = []
        self.defaults: list[str] = []
        self._checked: set[tuple[int, int]] = set()  # (id(original's), id(ours)) of callables already compared
        self._classes: set[tuple[int, int]] = set()  # the same, of classes

    def run(self) -> "Survey":
        for module in MODULES:
            self.module(module)
        return self

    def module(self, module: str) -> None:
        theirs = importlib.import_module(module_name(ORIGINAL, module))
        label = module_name(OURS, module)
        names = public_names(theirs)
        try:
            mine = importlib.import_module(label)
        except ImportError as err:
            self.gaps.append(f"{label}: module missing ({type(err).__name__}: {err})")
            self.gaps += [f"{label}.{name}: missing" for name in names]
            return
        exported = getattr(mine, "__all__", None)
        # what `from <module> import *` gives: the original has no __all__, so its names without "_"
        star = set(getattr(theirs, "__all__", [n for n in names if not n.startswith("_")]))
        for name in names:
            if not hasattr(mine, name):
                self.gaps.append(f"{label}.{name}: missing")
                continue
            if exported is not None and name in star and name not in exported:
                self.gaps.append(f"{label}.{name}: not in {label}.__all__ (`from {label} import *` misses it)")
            their_value, my_value = getattr(theirs, name), getattr(mine, name)
            if not module and (inspect.isclass(their_value) or inspect.isroutine(their_value)):
                # A re-export of a submodule's object (BertModel of .modeling): ours must be the same object.
                their_home = their_value.__module__.split(".", 1)[1] if "." in their_value.__module__ else ""
                if their_home in MODULES and their_home:
                    other = getattr(_our_module(their_value.__module__), name, None)
                    if other is not None and other is not my_value:
                        self.gaps.append(f"{label}.{name}: not the same object as {other.__module__}.{name}")
            self.value(f"{label}.{name}", their_value, my_value)
            if name != "__version__":  # ours is its own package's version
                self.constant(f"{label}.{name}", their_value, my_value)

    def value(self, label: str, theirs, mine) -> None:
        if inspect.isclass(theirs):
            if not inspect.isclass(mine):
                self.gaps.append(f"{label}: a class in 0.6.2, a {type(mine).__name__} in ours")
                return
            self.cls(label, theirs, mine)
        elif inspect.isroutine(theirs):
            if not callable(mine):
                self.gaps.append(f"{label}: a function in 0.6.2, a {type(mine).__name__} in ours")
                return
            self.signature(label, theirs, mine)

    def constant(self, label: str, theirs, mine) -> None:
        """A module constant: a str / number / tuple the same; a dict with (at least) the original's keys."""
        if isinstance(theirs, (str, int, float, tuple)) and not (theirs == mine and type(theirs) is type(mine)):
            self.defaults.append(f"{label}: {mine!r} in ours, {theirs!r} in 0.6.2")
        elif isinstance(theirs, dict):
            if not isinstance(mine, dict):
                self.defaults.append(f"{label}: a dict in 0.6.2, a {type(mine).__name__} in ours")
            elif set(theirs) - set(mine):
                self.defaults.append(f"{label}: keys missing: {sorted(map(repr, set(theirs) - set(mine)))}")

    def signature(self, label: str, theirs, mine) -> None:
        key = (id(theirs), id(mine))
        if key in self._checked:
            return
        self._checked.add(key)
        try:
            their_sig, my_sig = inspect.signature(theirs), inspect.signature(mine)
        except (TypeError, ValueError) as err:
            self.gaps.append(f"{label}: signature not readable ({err})")
            return
        self.gaps += [f"{label}: {gap}" for gap in signature_gaps(their_sig, my_sig)]
        self.defaults += [f"{label}: {diff}" for diff in default_differences(their_sig, my_sig)]

    def cls(self, label: str, theirs: type, mine: type) -> None:
        if (id(theirs), id(mine)) in self._classes:
            return
        self._classes.add((id(theirs), id(mine)))
        for base in theirs.__mro__[1:]:
            if base in (object, abc.ABC):
                continue
            if base.__module__.startswith(ORIGINAL):
                my_base = getattr(_our_module(base.__module__), base.__name__, None)
                if inspect.isclass(my_base) and not issubclass(mine, my_base):
                    self.gaps.append(f"{label}: not a subclass of {my_base.__module__}.{base.__name__}")
            elif not issubclass(mine, base):
                self.gaps.append(f"{label}: not a subclass of {base.__module__}.{base.__qualname__}")
        self.signature(f"{label}.__init__", theirs, mine)
        for name in dir(theirs):
            if name.startswith("_"):
                continue
            owner = next(k for k in theirs.__mro__ if name in vars(k))
            if not owner.__module__.startswith(ORIGINAL):
                continue  # nn.Module's, Optimizer's, object's
            if owner is not theirs and self._same_as_base(mine, owner, name):
                continue  # inherited in both: checked once, on the base
            kind = _kind(theirs, name)
            if not hasattr(mine, name):
                self.gaps.append(f"{label}.{name}: missing")
                continue
            my_kind = _kind(mine, name)
            if kind != my_kind and kind != "attribute":
                self.gaps.append(f"{label}.{name}: a {kind} in 0.6.2, a {my_kind} in ours")
            elif kind in ("method", "classmethod", "staticmethod"):
                self.signature(f"{label}.{name}", getattr(theirs, name), getattr(mine, name))

    def _same_as_base(self, mine: type, owner: type, name: str) -> bool:
        """Whether our counterpart of `owner` (the original base defining `name`) gives `mine` its `name`."""
        my_owner = getattr(_our_module(owner.__module__), owner.__name__, None)
        if not inspect.isclass(my_owner) or not hasattr(my_owner, name) or not hasattr(mine, name):
            return False
        return inspect.getattr_static(mine, name) is inspect.getattr_static(my_owner, name)


@pytest.fixture(scope="module")
def survey() -> Survey:
    return Survey().run()


def test_every_public_name_exists_with_a_compatible_signature(survey):
    """Every gap (missing module, name, parameter, default, base class, method kind), one line each."""
    print(f"{len(survey.gaps)} gaps:\n" + "\n".join(survey.gaps))
    assert not survey.gaps, f"{len(survey.gaps)} gaps with 0.6.2's public interface:\n" + "\n".join(survey.gaps)


def test_defaults_and_constants_equal_the_originals(survey):
    """Where both have a default, the same value: a different default changes what a 0.6.2 call does.
    Module constants: str / number / tuple equal (WEIGHTS_NAME, CONFIG_NAME, ...); dicts (ACT2FN, SCHEDULES,
    PRETRAINED_MODEL_ARCHIVE_MAP, ...) hold at least the original's keys."""
    lines = "\n".join(survey.defaults)
    print(lines)
    assert not survey.defaults, f"{len(survey.defaults)} defaults or constants differ from 0.6.2's:\n{lines}"


def test_the_names_surveyed_are_the_expected_ones():
    """The name filter on the original itself: BERT names in, third-party imports and non-BERT models out."""
    init = public_names(importlib.import_module(ORIGINAL))
    assert {"BertModel", "BertAdam", "OpenAIAdam", "cached_path", "WEIGHTS_NAME", "__version__"} <= set(init)
    assert not {"GPT2Model", "OpenAIGPTTokenizer", "TransfoXLCorpus", "load_tf_weights_in_gpt2"} & set(init)
    utils = public_names(importlib.import_module(f"{ORIGINAL}.file_utils"))
    assert {"cached_path", "PYTORCH_PRETRAINED_BERT_CACHE", "logger"} <= set(utils)
    assert not {"boto3", "requests", "tqdm", "ClientError", "Path", "urlparse", "open", "sha256"} & set(utils)
    optimization = public_names(importlib.import_module(f"{ORIGINAL}.optimization"))
    assert {"_LRSchedule", "SCHEDULES", "WarmupLinearSchedule"} <= set(optimization)
    assert not {"ABC", "abc", "torch", "Optimizer", "required", "clip_grad_norm_"} & set(optimization)
    modeling = public_names(importlib.import_module(f"{ORIGINAL}.modeling"))
    assert {"BertLayerNorm", "gelu", "ACT2FN", "CONFIG_NAME", "PRETRAINED_MODEL_ARCHIVE_MAP"} <= set(modeling)
    assert not {"nn", "CrossEntropyLoss", "torch", "copy"} & set(modeling)


def _sig(source: str) -> inspect.Signature:
    namespace: dict = {}
    exec(textwrap.dedent(source), namespace)  # noqa: S102 -- literal test sources
    return inspect.signature(namespace["f"])


SIGNATURE_CASES = [
    # (0.6.2's, ours, the gaps expected)
    ("def f(a, b=1): ...", "def f(a, b=1, c=2, *, d=3): ...", []),
    ("def f(a, b=1): ...", "def f(a, b): ...", ["parameter 'b' has no default (0.6.2: 1)"]),
    ("def f(a, b=1): ...", "def f(b=1, a=None): ...",
     ["parameter 'a' at positional index 1, 0.6.2 at 0", "parameter 'b' at positional index 0, 0.6.2 at 1"]),
    ("def f(a, b=1): ...", "def f(a, *, b=1): ...", ["parameter 'b' is keyword-only (0.6.2: positional, index 1)"]),
    ("def f(a, b=1): ...", "def f(a, c=1): ...", ["parameter 'b' missing"]),
    ("def f(a): ...", "def f(a, c): ...", ["added parameter 'c' has no default"]),
    ("def f(a): ...", "def f(a, *, c): ...", ["added parameter 'c' has no default"]),
    ("def f(a, *inputs, **kwargs): ...", "def f(a, **kwargs): ...", ["parameter '*inputs' missing"]),
    ("def f(a, *inputs, **kwargs): ...", "def f(a, *args, **kw): ...", []),
    ("def f(a, *inputs): ...", "def f(a, c=1, *inputs): ...",
     ["added positional parameter 'c' takes what 0.6.2 passes to *args"]),
    ("def f(a, b=1): ...", "def f(a, /, b=1): ...", ["parameter 'a' cannot be passed by keyword"]),
]


@pytest.mark.parametrize("theirs, mine, expected", SIGNATURE_CASES)
def test_signature_rule_on_hand_written_cases(theirs, mine, expected):
    assert signature_gaps(_sig(theirs), _sig(mine)) == expected


def test_required_marker_is_no_default_and_default_values_compare_by_value():
    from torch.optim.optimizer import required

    def theirs(params, lr=required): ...

    def mine(params, lr): ...

    assert signature_gaps(inspect.signature(theirs), inspect.signature(mine)) == []
    same = default_differences(_sig("def f(a=(1, 2), b=1, c=None): ..."), _sig("def f(a=[1, 2], b=1.0, c=None): ..."))
    assert same == []
    assert default_differences(_sig("def f(a=1e12, b=True): ..."), _sig("def f(a=512, b=1): ...")) == [
        "parameter 'a' defaults to 512, 0.6.2 to 1000000000000.0", "parameter 'b' defaults to 1, 0.6.2 to True"]
