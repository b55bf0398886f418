"""Stage download: builtin, local and download sources (against a server on 127.0.0.1 only)."""

from __future__ import annotations

import functools
import http.server
import json
import threading
import zipfile
from pathlib import Path

import pytest
import yaml

from stages import download
from stages._lib.sources import SOURCES, build_mrpc, git_blob_id

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def _params(tmp_path: Path, **data) -> Path:
    values = yaml.safe_load(REPO_PARAMS.read_text())
    values["data"].update(data)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _run(tmp_path, task, params) -> tuple[int, Path]:
    out = tmp_path / "raw" / task
    return download.main(["--task", task, "--out", str(out), "--params", str(params)]), out


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www; yields (root folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_builtin_demo_task(tmp_path):
    status, out = _run(tmp_path, "demo-qa", _params(tmp_path))
    assert status == 0
    source = json.loads((out / "SOURCE.json").read_text())
    assert source["source"] == "builtin" and set(source["files"]) == {"train", "dev"}  # SQuAD's test is hidden
    assert sorted(p.name for p in out.iterdir()) == ["SOURCE.json", "dev-v1.1.json", "train-v1.1.json"]
    status, out = _run(tmp_path, "demo-pair", _params(tmp_path))  # a test split, laid out as MRPC's test.tsv
    assert status == 0 and sorted(p.name for p in out.iterdir()) == ["SOURCE.json", "dev.tsv", "test.tsv", "train.tsv"]
    assert (out / "test.tsv").read_text().splitlines()[0] == "index\t#1 ID\t#2 ID\t#1 String\t#2 String"


def test_builtin_refuses_real_tasks(tmp_path, caplog):
    status, out = _run(tmp_path, "mrpc", _params(tmp_path, source="builtin"))
    assert status == 1 and "data.source: builtin has data only for the demo tasks" in caplog.text
    assert not out.exists()


@pytest.mark.parametrize("sub", ["glue/MRPC", "glue"])
def test_local_copies_and_checksums(tmp_path, shared_data, sub):
    status, out = _run(tmp_path, "mrpc", _params(tmp_path, source="local", local_dir=str(shared_data / sub)))
    assert status == 0
    source = json.loads((out / "SOURCE.json").read_text())
    # the sha256s of ../shared/data/SOURCES.md (the files GLUE's download script writes)
    expected = SOURCES["mrpc"].expected
    assert {s: f["sha256"] for s, f in source["files"].items()} == {
        "train": expected["train.tsv"], "dev": expected["dev.tsv"], "test": expected["test.tsv"]}


def test_local_missing_files_name_the_folder(tmp_path, caplog):
    status, out = _run(tmp_path, "rte", _params(tmp_path, source="local", local_dir=str(tmp_path)))
    assert status == 1 and "has no train.tsv and dev.tsv for task rte" in caplog.text and not out.exists()


def _mrpc_raw_files(shared_data: Path, www: Path) -> None:
    """MSR-release files that GLUE's split turns back into ../shared/data's train/dev/test.tsv.

    The split keeps each file's row order, so train rows then dev rows make a valid source."""
    glue = shared_data / "glue" / "MRPC"
    train = (glue / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    dev = (glue / "dev.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    test = (glue / "test.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    folder = www / "mrpc"
    folder.mkdir()
    (folder / "msr_paraphrase_train.txt").write_text("".join(train + dev[1:]), encoding="utf-8")
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    (folder / "msr_paraphrase_test.txt").write_text(
        header + "".join("1\t" + row.split("\t", 1)[1] for row in test[1:]), encoding="utf-8")
    (folder / "dev_ids.tsv").write_text("".join("\t".join(r.split("\t")[1:3]) + "\n" for r in dev[1:]))


def test_download_builds_mrpc_like_glue(tmp_path, shared_data, server, monkeypatch):
    www, url = server
    _mrpc_raw_files(shared_data, www)
    monkeypatch.setenv("BERT_TOOLKIT_CACHE", str(tmp_path / "cache"))
    status, out = _run(tmp_path, "mrpc", _params(tmp_path, source="download", mirror=url))
    assert status == 0
    for name in ("train.tsv", "dev.tsv", "test.tsv"):  # byte for byte GLUE's files
        assert (out / name).read_bytes() == (shared_data / "glue" / "MRPC" / name).read_bytes()
    assert (tmp_path / "cache" / "data" / "mrpc" / "dev_ids.tsv").is_file()  # kept for the next run


def test_download_glue_zip_checked_against_published_sha256(tmp_path, shared_data, server, monkeypatch):
    www, url = server
    monkeypatch.setenv("BERT_TOOLKIT_CACHE", str(tmp_path / "cache"))
    (www / "rte").mkdir()
    with zipfile.ZipFile(www / "rte" / "RTE.zip", "w") as zf:
        for name in ("train.tsv", "dev.tsv"):
            zf.write(shared_data / "glue" / "RTE" / name, f"RTE/{name}")
    status, out = _run(tmp_path, "rte", _params(tmp_path, source="download", mirror=url))
    assert status == 0 and (out / "dev.tsv").read_bytes() == (shared_data / "glue" / "RTE" / "dev.tsv").read_bytes()

    # a tampered copy fails the check and leaves no output
    (www / "wnli").mkdir()
    with zipfile.ZipFile(www / "wnli" / "WNLI.zip", "w") as zf:
        zf.write(shared_data / "glue" / "WNLI" / "train.tsv", "WNLI/train.tsv")
        zf.writestr("WNLI/dev.tsv", (shared_data / "glue" / "WNLI" / "dev.tsv").read_text() + "extra\n")
    status, out = _run(tmp_path, "wnli", _params(tmp_path, source="download", mirror=url))
    assert status == 1 and not out.exists()


MNLI_FILES = ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv", "test_matched.tsv", "test_mismatched.tsv")
FIXTURES = Path(__file__).parent / "fixtures" / "glue"


def test_download_mnli_brings_its_test_files_and_the_diagnostic_set(tmp_path, server, monkeypatch):
    """MNLI.zip's test files, and GLUE's AX.tsv as diagnostic.tsv: the predict stage's mnli model predicts AX."""
    www, url = server
    monkeypatch.setenv("BERT_TOOLKIT_CACHE", str(tmp_path / "cache"))
    for task in ("mnli", "mnli-mm"):
        (www / task).mkdir()
        with zipfile.ZipFile(www / task / "MNLI.zip", "w") as zf:
            for name in MNLI_FILES:
                zf.write(FIXTURES / "MNLI" / name, f"MNLI/{name}")
    (www / "mnli" / "diagnostic.tsv").write_bytes((FIXTURES / "diagnostic" / "diagnostic.tsv").read_bytes())
    status, out = _run(tmp_path, "mnli", _params(tmp_path, source="download", mirror=url))
    assert status == 0
    assert sorted(p.name for p in out.iterdir()) == ["SOURCE.json", "dev_matched.tsv", "diagnostic.tsv",
                                                     "test_matched.tsv", "train.tsv"]
    assert (out / "diagnostic.tsv").read_bytes() == (FIXTURES / "diagnostic" / "diagnostic.tsv").read_bytes()
    status, out = _run(tmp_path, "mnli-mm", _params(tmp_path, source="download", mirror=url))
    assert status == 0 and sorted(p.name for p in out.iterdir()) == ["SOURCE.json", "dev_mismatched.tsv",
                                                                      "test_mismatched.tsv", "train.tsv"]


def test_local_mnli_finds_the_diagnostic_set_in_glues_layout(tmp_path):
    glue = tmp_path / "glue"
    (glue / "MNLI").mkdir(parents=True)
    (glue / "diagnostic").mkdir()
    for name in MNLI_FILES:
        (glue / "MNLI" / name).write_bytes((FIXTURES / "MNLI" / name).read_bytes())
    (glue / "diagnostic" / "diagnostic.tsv").write_bytes((FIXTURES / "diagnostic" / "diagnostic.tsv").read_bytes())
    status, out = _run(tmp_path, "mnli", _params(tmp_path, source="local", local_dir=str(glue)))
    assert status == 0 and (out / "diagnostic.tsv").is_file() and (out / "test_matched.tsv").is_file()


def test_download_git_blob_check(tmp_path, shared_data, server, monkeypatch, caplog):
    www, url = server
    monkeypatch.setenv("BERT_TOOLKIT_CACHE", str(tmp_path / "cache"))
    (www / "squad1").mkdir()
    (www / "squad1" / "dev-v1.1.json").write_bytes((shared_data / "squad" / "v1.1" / "dev-v1.1.json").read_bytes())
    (www / "squad1" / "train-v1.1.json").write_text('{"data": [], "version": "1.1"}')  # not the official file
    status, out = _run(tmp_path, "squad1", _params(tmp_path, source="download", mirror=url))
    assert status == 1 and "is not the official 77f1d9a7" in caplog.text and not out.exists()
    assert not (tmp_path / "cache" / "data" / "squad1" / "train-v1.1.json").exists()


def test_git_blob_id_matches_git(tmp_path, shared_data):
    # SOURCES.md lists the git blob of each shared file
    assert git_blob_id(shared_data / "squad" / "v1.1" / "dev-v1.1.json") == "e9a3f913ad1468ebe105b891334ca7b0bc0e2510"


def test_build_mrpc_rejects_bad_rows(tmp_path):
    (tmp_path / "dev_ids.tsv").write_text("1\t2\n")
    (tmp_path / "msr_paraphrase_train.txt").write_text("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tonly four\n")
    (tmp_path / "msr_paraphrase_test.txt").write_text("h\n")
    with pytest.raises(ValueError, match="msr_paraphrase_train.txt:2: expected 5 tab-separated fields"):
        build_mrpc(tmp_path, tmp_path)
