"""The feature cache and the evaluate stage, run by hand (no DVC to notice what changed).

A cache is checked whole when it is opened: its files' sha256 against the manifest, every tensor the manifest
lists, the offsets, each label against the task's labels, one metadata entry per feature. evaluate refuses
features of another task, a model without the task's head (or fine-tuned on another task), a model folder
without the vocab the features were made with, and a SQuAD dev file that changed since tokenize read it.
Each failure is one line naming the file; nothing is written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from reliability_helpers import BAD_INPUT, SMALL_DATA, assert_stage_failed, make_tiny_model, tally, write_params


@pytest.fixture(scope="module")
def made(tmp_path_factory, minilm_dir):
    """params, raw data, a tiny pretrained model and features of demo-pair and demo-qa, made by the stages."""
    from stages import download, tokenize

    root = tmp_path_factory.mktemp("features")
    params = write_params(root / "params.yaml", **SMALL_DATA)
    model = make_tiny_model(root / "model", minilm_dir / "vocab.txt")
    for task in ("demo-pair", "demo-qa"):
        common = ["--params", str(params), "--task", task]
        assert download.main([*common, "--out", str(root / "raw" / task)]) == 0
        assert tokenize.main([*common, "--data", str(root / "raw" / task), "--model", str(model),
                              "--out", str(root / "features" / task)]) == 0
    return {"root": root, "params": params, "model": model}


def _copy(made, tmp_path, task="demo-pair") -> Path:
    return shutil.copytree(made["root"] / "features" / task, tmp_path / "features")


def _evaluate(made, tmp_path, features, task="demo-pair", model=None, untrained=True, data=None):
    from stages import evaluate

    args = ["--params", str(made["params"]), "--task", task, "--features", str(features), "--data",
            str(data or made["root"] / "raw" / ("demo-qa" if task == "demo-qa" else "demo-pair")),
            "--model", str(model or made["model"]), "--out", str(tmp_path / "out")]
    return evaluate.main(args + (["--untrained"] if untrained else []))


def _edit_tensors(split: Path, reseal: bool, **change) -> None:
    """Change features.safetensors (key -> new tensor, or None to drop it); `reseal` records the new sha256 in
    the manifest, as a writer with a bug would, so that the content checks (not the sha256) must catch it."""
    path = split / "features.safetensors"
    tensors = load_file(str(path))
    for key, value in change.items():
        tensors.pop(key) if value is None else tensors.__setitem__(key, value(tensors[key]) if callable(value) else value)
    save_file(tensors, str(path))
    if reseal:
        _reseal(split, path.name)


def _reseal(split: Path, name: str) -> None:
    import hashlib

    manifest = json.loads((split / "manifest.json").read_text())
    if "sha256" in manifest:
        manifest["sha256"][name] = hashlib.sha256((split / name).read_bytes()).hexdigest()
        (split / "manifest.json").write_text(json.dumps(manifest))


def _set(index: int, value: int):
    def change(t):
        t = t.clone()
        t[index] = value
        return t
    return change


def _swap_offsets(t):
    t = t.clone()
    t[1], t[2] = t[2].clone(), t[1].clone()
    return t


# (case, split, changes, fragments of the error): run through evaluate --untrained.
CACHE_CASES = [
    ("a label outside the task's labels", "dev", {"labels": _set(0, 5)}, ["labels", "outside [0, the task's 2"]),
    ("a negative label", "train", {"labels": _set(3, -1)}, ["labels", "feature 3 has -1"]),
    ("no label tensor", "dev", {"labels": None}, ["no tensor 'labels'"]),
    ("swapped offsets", "dev", {"offsets": _swap_offsets}, ["'offsets' should rise from 0"]),
    ("offsets past the tokens", "dev", {"offsets": _set(-1, 10_000)}, ["'offsets' should rise from 0"]),
    ("float input_ids", "dev", {"input_ids": lambda t: t.float()}, ["'input_ids' should be a 1-D integer tensor"]),
]


@pytest.mark.parametrize("case, split, change, fragments", CACHE_CASES, ids=[c[0] for c in CACHE_CASES])
@pytest.mark.parametrize("reseal", [False, True], ids=["tampered", "resealed"])
def test_bad_feature_cache_in_evaluate(tmp_path, caplog, made, case, split, change, fragments, reseal):
    """[#19 M4] [#19 L4] A label outside the task, no label tensor, swapped offsets...: refused when the cache is
    opened, naming the file."""
    with tally(BAD_INPUT, f"feature cache ({'sha256 recomputed' if reseal else 'edited'}): {case}: evaluate"):
        features = _copy(made, tmp_path)
        _edit_tensors(features / split, reseal, **change)
        rc = _evaluate(made, tmp_path, features)
        path = str(features / split / "features.safetensors")
        assert_stage_failed(rc, caplog, path, *(fragments if reseal else ["changed since it was written"]))
        assert not (tmp_path / "out").exists()


IN_RANGE = {"flipped labels": {"labels": lambda t: 1 - t}, "tokens in reverse order": {"input_ids": lambda t: t.flip(0)}}


@pytest.mark.parametrize("case", sorted(IN_RANGE))
def test_cache_edited_in_range_is_refused(tmp_path, caplog, made, case):
    """[#19 L4] Values that pass every range check: only the sha256 the manifest records can tell."""
    with tally(BAD_INPUT, f"feature cache with {case} (every value in range): evaluate"):
        features = _copy(made, tmp_path)
        _edit_tensors(features / "dev", reseal=False, **IN_RANGE[case])
        rc = _evaluate(made, tmp_path, features)
        assert_stage_failed(rc, caplog, str(features / "dev" / "features.safetensors"), "changed since it was written")
        assert not (tmp_path / "out").exists()


def test_finetune_refuses_a_label_outside_the_task(tmp_path, caplog, made):
    """[#19 M4] finetune opens the cache checked: a label outside the task's is one line naming the file."""
    from stages import finetune

    with tally(BAD_INPUT, "feature cache with a label outside the task's labels: finetune"):
        features = _copy(made, tmp_path)
        _edit_tensors(features / "train", reseal=True, labels=_set(0, 7))
        rc = finetune.main(["--params", str(made["params"]), "--task", "demo-pair", "--seed", "1", "--features",
                            str(features), "--model", str(made["model"]), "--out", str(tmp_path / "out" / "m"),
                            "--history", str(tmp_path / "out" / "h.json"), "--work", str(tmp_path / "work")])
        assert_stage_failed(rc, caplog, str(features / "train" / "features.safetensors"), "feature 0 has 7")
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [b'{"ids": ["a", ', b"\xff\xfe", b"[1, 2"], ids=["truncated", "not-utf8", "list"])
def test_damaged_metadata_json(tmp_path, caplog, made, content):
    """[#19 M13] A damaged feature metadata.json: one line naming it."""
    with tally(BAD_INPUT, f"feature metadata.json damaged ({content[:8]!r}): evaluate names the file"):
        features = _copy(made, tmp_path)
        (features / "dev" / "metadata.json").write_bytes(content)
        rc = _evaluate(made, tmp_path, features)
        assert_stage_failed(rc, caplog, str(features / "dev" / "metadata.json"))
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("reseal", [False, True], ids=["tampered", "resealed"])
def test_short_metadata_json_does_not_truncate_predictions(tmp_path, caplog, made, reseal):
    """[#19 L14] A metadata.json one entry short is refused, never a truncated predictions.json."""
    with tally(BAD_INPUT, f"feature metadata.json one id short ({'sha256 recomputed' if reseal else 'edited'}): "
                          "evaluate"):
        features = _copy(made, tmp_path)
        path = features / "dev" / "metadata.json"
        metadata = json.loads(path.read_text())
        path.write_text(json.dumps({"ids": metadata["ids"][:-1]}))
        if reseal:
            _reseal(features / "dev", "metadata.json")
        rc = _evaluate(made, tmp_path, features)
        expected = f"{len(metadata['ids']) - 1} entries for {len(metadata['ids'])} features" if reseal \
            else "changed since it was written"
        assert_stage_failed(rc, caplog, str(path), expected)
        assert not (tmp_path / "out").exists()


def test_damaged_fingerprint_json(tmp_path, caplog, made):
    """[#19 M13] A damaged fingerprint.json in --work: one line naming it."""
    from stages import finetune

    with tally(BAD_INPUT, "finetune --work with a damaged fingerprint.json: one line naming it"):
        (tmp_path / "work").mkdir()
        (tmp_path / "work" / "fingerprint.json").write_text('{"task": "demo-pair", ')
        rc = finetune.main(["--params", str(made["params"]), "--task", "demo-pair", "--seed", "1", "--features",
                            str(made["root"] / "features" / "demo-pair"), "--model", str(made["model"]), "--out",
                            str(tmp_path / "out" / "m"), "--history", str(tmp_path / "out" / "h.json"),
                            "--work", str(tmp_path / "work")])
        assert_stage_failed(rc, caplog, str(tmp_path / "work" / "fingerprint.json"), "not valid JSON")


def test_damaged_source_json_of_the_start_model(tmp_path, caplog, made):
    """[#19 M13] The start model's SOURCE.json (stage convert's record, read by finetune): damaged, it is one line
    naming it (a JSON error naming no file before)."""
    from stages import finetune

    with tally(BAD_INPUT, "finetune with a damaged SOURCE.json in the start model: one line naming it"):
        model = shutil.copytree(made["model"], tmp_path / "model")
        (model / "SOURCE.json").write_text('{"name": "bert-base-uncased", ', encoding="utf-8")
        rc = finetune.main(["--params", str(made["params"]), "--task", "demo-pair", "--seed", "1", "--features",
                            str(made["root"] / "features" / "demo-pair"), "--model", str(model), "--out",
                            str(tmp_path / "out" / "m"), "--history", str(tmp_path / "out" / "h.json"),
                            "--work", str(tmp_path / "work")])
        assert_stage_failed(rc, caplog, str(model / "SOURCE.json"), "not valid JSON")
        assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------
# evaluate's own checks: the task, the head, the vocab, the SQuAD dev file.


def test_evaluate_features_of_another_task(tmp_path, caplog, made):
    """[#19 L6] evaluate checks manifest.task."""
    with tally(BAD_INPUT, "evaluate --task mrpc on demo-pair's features (the same format)"):
        features = made["root"] / "features" / "demo-pair"
        rc = _evaluate(made, tmp_path, features, task="mrpc")
        assert_stage_failed(rc, caplog, str(features / "dev" / "manifest.json"), "task 'demo-pair'", "not 'mrpc'")
        assert not (tmp_path / "out").exists()


def test_evaluate_a_model_without_the_task_head(tmp_path, caplog, made):
    """[#19 M11] A model without the task's head, without --untrained: an error naming the missing weights."""
    with tally(BAD_INPUT, "evaluate a pretrained model (no classifier head) without --untrained"):
        rc = _evaluate(made, tmp_path, made["root"] / "features" / "demo-pair", untrained=False)
        assert_stage_failed(rc, caplog, str(made["model"]), "classifier.weight", "--untrained")
        assert not (tmp_path / "out").exists()


def test_evaluate_a_model_of_another_task(tmp_path, caplog, made):
    """[#19 M11] A model fine-tuned on another task: refused naming its training.json."""
    from bert import BertForSequenceClassification

    with tally(BAD_INPUT, "evaluate --task demo-pair with a model fine-tuned on mrpc"):
        model = BertForSequenceClassification.from_pretrained(made["model"], num_labels=2)
        folder = model.save_pretrained(tmp_path / "mrpc-model")
        shutil.copyfile(made["model"] / "vocab.txt", folder / "vocab.txt")
        (folder / "training.json").write_text(json.dumps({"task": "mrpc", "seed": 1}))
        rc = _evaluate(made, tmp_path, made["root"] / "features" / "demo-pair", model=folder, untrained=False)
        assert_stage_failed(rc, caplog, str(folder / "training.json"), "'mrpc'", "not 'demo-pair'")
        assert not (tmp_path / "out").exists()


def test_evaluate_a_model_folder_without_vocab(tmp_path, caplog, made):
    """[#19 L5] The vocab check is not skipped when the model folder has no vocab.txt."""
    with tally(BAD_INPUT, "evaluate with a model folder without vocab.txt (the vocab check cannot be skipped)"):
        model = shutil.copytree(made["model"], tmp_path / "model", ignore=shutil.ignore_patterns("vocab.txt"))
        rc = _evaluate(made, tmp_path, made["root"] / "features" / "demo-pair", model=model)
        assert_stage_failed(rc, caplog, str(model / "vocab.txt"), "features")
        assert not (tmp_path / "out").exists()


def test_evaluate_squad_dev_file_changed_with_the_same_count(tmp_path, caplog, made):
    """[#19 L7] A changed SQuAD dev file with the same count is refused (its sha256 is in the manifest)."""
    with tally(BAD_INPUT, "evaluate SQuAD: the dev file changed since tokenize, same number of questions"):
        data = shutil.copytree(made["root"] / "raw" / "demo-qa", tmp_path / "raw")
        dev = data / "dev-v1.1.json"
        dataset = json.loads(dev.read_text())
        paragraph = dataset["data"][0]["paragraphs"][0]
        paragraph["context"] = "Changed. " + paragraph["context"]
        for qa in paragraph["qas"]:
            for answer in qa["answers"]:
                answer["answer_start"] += len("Changed. ")
        dev.write_text(json.dumps(dataset))
        rc = _evaluate(made, tmp_path, made["root"] / "features" / "demo-qa", task="demo-qa", data=data)
        assert_stage_failed(rc, caplog, str(dev), "re-run the tokenize stage")
        assert not (tmp_path / "out").exists()
