"""params.yaml as the whole pipeline reads it: DVC, `make run`, the flow and the stages.

DVC expands dvc.yaml's matrix from params.yaml before any stage runs, and some mistakes only DVC meets, in its
own words (``seeds: 42``: "'Value' object is not iterable"; keys ``1:`` and ``foo:``: a TypeError) or never
(a repeated task, refused by the report after all the training). ``make run`` (``pipeline.track --pipeline``)
and the flow check the params files whole first (pipeline.params_check): one line naming the file and the
key, and nothing runs. The stages themselves refuse an alias bomb at once, seeds out of range and a run of
no step naming the key; YAML 1.1-only scalars mean to DVC what they mean to the stages.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from reliability_helpers import (BAD_INPUT, QUICK_TRAINING, REPO, assert_one_clear_error, assert_stage_failed,
                                 child_env, finetune_args, finetune_inputs, run_python, tally, write_params)

BIN = Path(sys.executable).parent

ALIAS_BOMB = "".join([f"a0: &a0 [{', '.join(['x'] * 9)}]\n"] + [
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)])  # 9**10 values once expanded


def _cores() -> int:
    from stages._lib.training import machine_capacity

    return machine_capacity()[0]


GRID = "  learning_rate: [1.0e-4, 5.0e-5]"  # params.yaml's search grid
# case -> (edits of params.yaml: old text -> new text, fragments of the error line)
CASES = {
    "seeds not a list (seeds: 42)": ({"seeds: [1, 2]": "seeds: 42"}, ["seeds", "expected a list of int, got 42"]),
    "two unknown keys of different types (1: and foo:)": ({"finetune:\n": "finetune:\n  1: x\n  foo: y\n"},
                                                           ["unknown key finetune.1"]),
    "a repeated task": ({"tasks: [demo-pair, demo-qa, demo-mc]": "tasks: [demo-pair, demo-qa, demo-pair]"},
                        ["tasks", "repeated entries", "demo-pair"]),
    "an unknown task": ({"tasks: [demo-pair, demo-qa, demo-mc]": "tasks: [demo-pair, mrcp]"},
                        ["tasks[1]", "unknown task 'mrcp'"]),
    "a negative seed": ({"seeds: [1, 2]": "seeds: [1, -2]"}, ["seeds[1]", "expected at least 0, got -2"]),
    "a seed past 2**32": ({"seeds: [1, 2]": "seeds: [1, 100000000000000000000]"},
                          ["seeds[1]", "expected at most 4294967295"]),
    "a YAML alias bomb": ({"tasks: [": ALIAS_BOMB + "tasks: ["}, ["alias bomb"]),
    "a misspelt section": ({"\nreport:": "\nreprot:"}, ["unknown key reprot"]),
    "more processes than this machine has": ({"nproc: 1 ": "nproc: {many} ", "global_batch_size: 16": "global_batch_size: {batch}"},
                                             ["finetune.nproc: {many} processes, but this machine has"]),
    "a global batch the processes cannot share": ({"grad_accum_steps: 1": "grad_accum_steps: 3"},
                                                  ["finetune.global_batch_size", "not a multiple of grad_accum_steps 3"]),
    "select: foo": ({"select: last ": "select: foo "}, ["finetune.select", "expected one of last, best, got 'foo'"]),
    "a negative patience": ({"patience: 0 ": "patience: -1 "}, ["finetune.patience", "expected at least 0, got -1"]),
    "patience without eval_every": ({"patience: 0 ": "patience: 3 "},
                                    ["finetune.patience", "3 needs evaluations during training", "eval_every"]),
    "select: best without eval_every": ({"select: last ": "select: best "},
                                        ["finetune.select", "best needs evaluations during training"]),
    # the search grid (stages/_lib/search.py): each problem names its key
    "a search value that is not a list": ({GRID: "  learning_rate: 1.0e-4"},
                                          ["search.learning_rate: expected a list of values, e.g. [0.0001]"]),
    "an unknown search key": ({GRID: "  learning_rat: [1.0e-4]"}, ["search.learning_rat: unknown key"]),
    "an empty search list": ({GRID: "  learning_rate: []"}, ["search.learning_rate: expected a non-empty list"]),
    "a search value listed twice": ({GRID: "  learning_rate: [1.0e-4, 0.0001]"},
                                    ["search.learning_rate: 0.0001 listed twice"]),
    "a search value of the wrong type": ({GRID: "  learning_rate: [1.0e-4, fast]"},
                                         ["search.learning_rate[1]: expected a number, got 'fast'"]),
    "a searched process count": ({GRID: "  nproc: [1, 2]"}, ["search.nproc: not a search key"]),
    "a search cell the steps cannot share": ({GRID: "  global_batch_size: [16, 15]",
                                              "grad_accum_steps: 1": "grad_accum_steps: 2"},
                                             [("search.global_batch_size[1]: finetune.global_batch_size: 15 is not a "
                                               "multiple of grad_accum_steps 2 x nproc 1")]),
    "no search key": ({"search:\n" + GRID + "\n": ""}, ["key search is missing", "write `search: {{}}`"]),
    "a search key dvc.yaml does not cross": ({GRID: GRID + "\n  epochs: [1.0, 2.0]"},
                                             ["search: the keys (learning_rate, epochs)", "pipeline.matrix write"]),
}


def _project(root: Path, edits: dict[str, str]) -> Path:
    """A folder with the repo's dvc.yaml and an edited params.yaml (as the pipeline's root)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "dvc.yaml", root / "dvc.yaml")
    many = _cores() + 1
    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    for old, new in edits.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new.format(many=many, batch=16 * many))
    (root / "params.yaml").write_text(text, encoding="utf-8")
    return root


@pytest.mark.parametrize("case", list(CASES))
def test_make_run_checks_params_before_dvc(tmp_path, case):
    """[#19 M3] [#19 M7] [#19 M8] [#19 M9] [#19 L2] What `make run` and the flow run first
    (pipeline.params_check.check_project)."""
    from pipeline.params_check import check_project
    from stages._lib.params import ParamsError

    with tally(BAD_INPUT, f"make run: params.yaml with {case}"):
        edits, fragments = CASES[case]
        root = _project(tmp_path, edits)
        started = time.monotonic()
        with pytest.raises(ParamsError) as info:
            check_project(root)
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"{root / 'params.yaml'}: "), message
        for fragment in fragments:
            assert fragment.format(many=_cores() + 1) in message, (fragment, message)
        assert time.monotonic() - started < 30  # the alias bomb: refused, not expanded


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory) -> Path:
    """An initialised DVC project (no git) holding the repo's dvc.yaml, for the real `dvc repro`."""
    root = tmp_path_factory.mktemp("dvcproject")
    subprocess.run([str(BIN / "dvc"), "init", "--no-scm", "-q"], cwd=root, check=True, capture_output=True)
    shutil.copyfile(REPO / "dvc.yaml", root / "dvc.yaml")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("case", ["seeds not a list (seeds: 42)", "two unknown keys of different types (1: and foo:)"])
def test_make_run_command(dvc_project, case):
    """[#19 M8] [#19 M9] `python -m pipeline.track --pipeline -- dvc repro` (make run): one line naming params.yaml, DVC
    never starts."""
    with tally(BAD_INPUT, f"make run (pipeline.track --pipeline -- dvc repro): {case}"):
        edits, fragments = CASES[case]
        _project(dvc_project, edits)
        proc = subprocess.run([sys.executable, "-m", "pipeline.track", "--pipeline", "--", str(BIN / "dvc"), "repro"],
                              cwd=dvc_project, env=child_env(PATH=f"{BIN}:/usr/bin:/bin"), capture_output=True,
                              text=True, timeout=300)
        assert_one_clear_error(proc.returncode, proc.stderr, "params.yaml: ", *fragments)
        assert "Running stage" not in proc.stdout + proc.stderr and "unexpected error" not in proc.stderr


def test_every_section_dvc_yaml_declares_is_checked():
    """pipeline.params_check's table covers each params section a dvc.yaml stage declares."""
    from pipeline.params_check import MATRIX_KEYS, PIPELINES

    for rel, sections in PIPELINES.items():
        pipeline = yaml.safe_load((REPO / rel).with_name("dvc.yaml").read_text())
        declared = set()
        for stage in pipeline["stages"].values():
            spec = stage.get("do", stage)
            for entry in spec.get("params", []):
                names = next(iter(entry.values())) if isinstance(entry, dict) else [entry]
                declared.update(name.split(".")[0] for name in names)
        assert declared - set(MATRIX_KEYS) <= set(sections), (rel, declared - set(sections))


# ----------------------------------------------------------------------------------------------
# The stages themselves.


def test_a_stage_refuses_an_alias_bomb_at_once(tmp_path):
    """[#19 M7] The repeated-key check followed every alias: every stage hung on this file."""
    with tally(BAD_INPUT, "python -m stages.convert: params.yaml with a YAML alias bomb (refused at once)"):
        params = tmp_path / "params.yaml"
        params.write_text(ALIAS_BOMB + (REPO / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
        try:
            proc = run_python(["-m", "stages.convert", "--params", str(params), "--out", str(tmp_path / "out")],
                              timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the stage hung on the alias bomb")
        assert_one_clear_error(proc.returncode, proc.stderr, str(params), "alias bomb")
        assert not (tmp_path / "out").exists()


def test_an_alias_of_a_node_inside_itself_is_refused(tmp_path):
    """[#19 M7] A value that contains itself (&a [1, *a]) is refused, not followed forever."""
    from stages._lib.params import ParamsError, read_params_file

    with tally(BAD_INPUT, "params.yaml holding a value that contains itself (&a [1, *a])"):
        params = tmp_path / "params.yaml"
        params.write_text("loop: &l [1, *l]\n", encoding="utf-8")
        with pytest.raises(ParamsError, match=r"params.yaml: line 1: loop\[1\] contains itself"):
            read_params_file(params)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, minilm_dir):
    return finetune_inputs(tmp_path_factory.mktemp("params"), minilm_dir / "vocab.txt")


@pytest.mark.parametrize("case, seed, edits, fragments", [
    ("a negative --seed", "-1", {}, ["--seed: expected at least 0, got -1", "params.yaml's seeds"]),
    ("a --seed past 2**32", str(10 ** 20), {}, ["--seed: expected at most 4294967295"]),
    ("epochs that make no step", "1", {"epochs: 3.0": "epochs: 1.0e-9"},
     ["finetune.epochs: 1e-09 epochs of 48 examples", "is no optimizer step"]),
], ids=["negative-seed", "huge-seed", "zero-steps"])
def test_finetune_names_the_key(tmp_path, inputs, caplog, case, seed, edits, fragments):
    """[#19 L3] Seeds out of range and a run of no step were internal messages naming no key (TrainConfig.seed,
    t_total=0)."""
    from stages import finetune

    with tally(BAD_INPUT, f"finetune: {case}"):
        params = write_params(tmp_path / "params.yaml", **{**QUICK_TRAINING, **edits})
        args = finetune_args({**inputs, "params": params}, tmp_path / "out" / "model", tmp_path / "work")
        args[args.index("--seed") + 1] = seed
        assert_stage_failed(finetune.main(args), caplog, *fragments)
        assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------
# YAML 1.1-only scalars, end to end: what DVC records and interpolates is what the stage reads.


@pytest.mark.slow
def test_yaml_11_scalars_mean_the_same_to_dvc_and_the_stages(tmp_path):
    """[#19 M14] 1:30, 010, yes, on through a real dvc repro: dvc.lock, DVC's interpolation and the stage read the same
    values."""
    with tally(BAD_INPUT, "params.yaml with 1:30, 010, yes, on: DVC and the stages read the same values"):
        subprocess.run([str(BIN / "dvc"), "init", "--no-scm", "-q"], cwd=tmp_path, check=True, capture_output=True)
        (tmp_path / "params.yaml").write_text("scalars:\n  clock: 1:30\n  octal: 010\n  word: yes\n  switch: on\n",
                                              encoding="utf-8")
        reader = ("import json, sys; from stages._lib.params import read_params_file; "
                  "json.dump({'stage': read_params_file('params.yaml')['scalars'], 'cmd': sys.argv[1:]}, "
                  "open('out.json', 'w'))")
        (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"read": {
            "cmd": f'{sys.executable} -c "{reader}" ${{scalars.clock}} ${{scalars.octal}} ${{scalars.word}}',
            "params": ["scalars"], "outs": ["out.json"]}}}), encoding="utf-8")
        proc = subprocess.run([str(BIN / "dvc"), "repro", "-q"], cwd=tmp_path, env=child_env(), capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        seen = json.loads((tmp_path / "out.json").read_text())
        from dvc.utils.serialize import load_yaml  # DVC's reader (dvc.lock is YAML 1.2 too: PyYAML reads 90, True)

        recorded = load_yaml(str(tmp_path / "dvc.lock"))["stages"]["read"]["params"]["params.yaml"]["scalars"]
        assert seen["stage"] == dict(recorded) == {"clock": "1:30", "octal": 10, "word": "yes", "switch": "on"}
        assert seen["cmd"] == ["1:30", "10", "yes"]  # DVC's interpolation into the command


# ----------------------------------------------------------------------------------------------
# What the README and params.yaml say a key takes is what the stages accept.


def test_documented_choices_are_accepted():
    """[#19 L1] README's table and params.yaml's comments list, for finetune's choice keys, what the params accept."""
    from bert.engine.config import TrainConfig

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    params = (REPO / "params.yaml").read_text(encoding="utf-8")
    fields = {f.name: f for f in TrainConfig.__dataclass_fields__.values()}
    row = next(line for line in readme.splitlines() if line.startswith("| `finetune.*` |"))
    for key in ("precision", "optimizer"):
        with tally(BAD_INPUT, f"finetune.{key}: the choices README and params.yaml list are those accepted"):
            accepted = set(fields[key].metadata["choices"])
            listed = set(re.search(rf"`{key}` \(([\w/]+)\)", row).group(1).split("/"))
            assert listed == accepted, (key, listed, accepted)
            comment = re.search(rf"(?m)^finetune:(?:\n .*)*?\n  {key}: \S+ +# (.*)$", params).group(1)
            assert all(choice in comment for choice in accepted), (key, comment, accepted)
    with tally(BAD_INPUT, "finetune.select: the choices README and params.yaml list are those accepted"):
        accepted = fields["select"].metadata["choices"]
        row = next(line for line in readme.splitlines() if line.startswith("| `finetune.eval_every`, `select`"))
        comment = re.search(r"(?m)^  select: \S+ +# (.*)$", params).group(1)
        assert all(f"`{choice}`" in row and f"{choice} (" in comment for choice in accepted), (row, comment)
