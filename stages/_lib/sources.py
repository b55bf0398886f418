"""Where each task's official files come from, and how to check them (data.source: download).

GLUE comes as one zip per task from the GLUE benchmark's mirror, except MRPC, which
``download_glue_data.py`` builds from the MSR release and a list of dev pair ids (``build_mrpc``
does the same, byte for byte). SQuAD and SWAG are single files from their authors' repositories.

A file is checked by sha256 where one is published or recorded in ../shared/data/SOURCES.md, else
by its git blob id (``git hash-object``) in the authors' repository. Files with neither (the larger
GLUE zips) are fetched unchecked; their sha256 lands in the task folder's SOURCE.json.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

GLUE_BASE = "https://dl.fbaipublicfiles.com/glue/data/"
SQUAD_BASE = "https://rajpurkar.github.io/SQuAD-explorer/dataset/"
SWAG_BASE = "https://raw.githubusercontent.com/rowanz/swagaf/master/data/"
MRPC_BASE = "https://dl.fbaipublicfiles.com/senteval/senteval_data/"
MRPC_DEV_IDS = ("https://firebasestorage.googleapis.com/v0/b/mtl-sentence-representations.appspot.com/o/"
                "data%2Fmrpc_dev_ids.tsv?alt=media&token=ec5c0836-31d5-48f4-b431-7480817f1adc")


@dataclass(frozen=True)
class Remote:
    """One file to fetch: its address, the name it is kept under, and its checksum if known."""

    url: str
    name: str
    sha256: Optional[str] = None
    git_blob: Optional[str] = None


@dataclass(frozen=True)
class TaskSource:
    """How a task's folder is made: files fetched as they are, or a zip's folder, or MRPC's build.

    ``expected`` maps files of the finished folder to their sha256 (checked after the build).
    """

    files: tuple[Remote, ...]
    zip_folder: Optional[str] = None  # the folder inside the zip that holds the TSVs
    build: Optional[str] = None  # "mrpc"
    expected: dict = field(default_factory=dict)
    also: tuple[Remote, ...] = ()  # files fetched and kept beside the task's own (MNLI: GLUE's diagnostic set)


def _glue(zip_name: str, folder: str, **expected: str) -> TaskSource:
    return TaskSource((Remote(GLUE_BASE + zip_name, zip_name),), zip_folder=folder,
                      expected={k.replace("_", "."): v for k, v in expected.items()})


# sha256 of the TSVs as download_glue_data.py leaves them (../shared/data/SOURCES.md).
SOURCES: dict[str, TaskSource] = {
    "cola": _glue("CoLA.zip", "CoLA",
                  train_tsv="cb368ebeb9f27d7ad03720d27ddc95687a311bdb100781a2fe59a5f5b1bc0624",
                  dev_tsv="8c013e21dc39957cac37378d87bebe225b694a0d5fe13eded66c2856628833fd"),
    "sst2": _glue("SST-2.zip", "SST-2",
                  train_tsv="48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1",
                  dev_tsv="54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0"),
    "stsb": _glue("STS-B.zip", "STS-B",
                  train_tsv="41c4d978b6162abdcada7e49a982211954cca5459c228db478af333124b257a2",
                  dev_tsv="fe7dc0632a5033562f3cadff991f6e8d9b9b6311861660e78c3c82eb7db67f59"),
    "qqp": _glue("QQP-clean.zip", "QQP"),
    # the diagnostic set (AX) is predicted by the MNLI model (the predict stage): it travels with MNLI's files
    "mnli": dataclasses.replace(_glue("MNLI.zip", "MNLI"), also=(Remote(GLUE_BASE + "AX.tsv", "diagnostic.tsv"),)),
    "mnli-mm": _glue("MNLI.zip", "MNLI"),
    "qnli": _glue("QNLIv2.zip", "QNLI",
                  dev_tsv="ac19409dcb04631eaaa094bdebdcf621086bc352503dfb6a1a648b614986f4fd"),
    "rte": _glue("RTE.zip", "RTE",
                 train_tsv="41e3a9b063433392343fad9e962cf2f58b681c78d8f71592f4186f0837246c5c",
                 dev_tsv="80230dfa1347282e7b532b06a1004a76a710087541189bf874223ddf0e3819fb"),
    "wnli": _glue("WNLI.zip", "WNLI",
                  train_tsv="9a88e9d54b6861cc796a088e9acf4f5f65064a9ef65ae6fa7a688b28391e5c9a",
                  dev_tsv="cba00490596dd14be8cf53b4f53bb744abe3a7b89f81ab210528d80225338ed5"),
    "ax": TaskSource((Remote(GLUE_BASE + "AX.tsv", "diagnostic.tsv"),)),
    "mrpc": TaskSource(
        (Remote(MRPC_BASE + "msr_paraphrase_train.txt", "msr_paraphrase_train.txt"),
         Remote(MRPC_BASE + "msr_paraphrase_test.txt", "msr_paraphrase_test.txt"),
         Remote(MRPC_DEV_IDS, "dev_ids.tsv")),
        build="mrpc",
        expected={"train.tsv": "122becc469405bc16f9defcb8715d2a4b7ce600e9d9381e6dc42bfdd1494c51d",
                  "dev.tsv": "81c8a1a9e1dfe461dd2c1a4f98f43fe18bece44d2bf9e3d0b245b88e5aa5eaf7",
                  "test.tsv": "4ee428d354c01fa35c2f0f6ab835398abb0bec01f17ed68fbcb6c04265505b0a"},
    ),
    "squad1": TaskSource((
        Remote(SQUAD_BASE + "train-v1.1.json", "train-v1.1.json", git_blob="77f1d9a7daee11f7bc293832020f7709f63410ad"),
        Remote(SQUAD_BASE + "dev-v1.1.json", "dev-v1.1.json",
               sha256="95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9"),
    )),
    "squad2": TaskSource((
        Remote(SQUAD_BASE + "train-v2.0.json", "train-v2.0.json", git_blob="312f804dbf85888fdce3299eaa58d6ec3f0bb6b7"),
        Remote(SQUAD_BASE + "dev-v2.0.json", "dev-v2.0.json", git_blob="c6fa1a89a12c90b7fbfa8f6fb437cfff27af41ca"),
    )),
    "swag": TaskSource((
        Remote(SWAG_BASE + "train.csv", "train.csv", git_blob="adf6dc3ea67d40ea633e303027badeb67bb840de"),
        Remote(SWAG_BASE + "val.csv", "val.csv", git_blob="c354e30c3a6a13a4bc1cf914b63b1655f35a1288"),
    )),
}


def remote_url(task: str, remote: Remote, mirror: str) -> str:
    """The official address, or ``<mirror>/<task>/<name>`` when a mirror is set."""
    if not mirror:
        return remote.url
    return f"{mirror.rstrip('/')}/{task}/{remote.name}"


def git_blob_id(path: str | os.PathLike) -> str:
    """``git hash-object`` of a file: sha1 of "blob <size>\\0" followed by the bytes."""
    path = Path(path)
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_mrpc(raw: Path, out: Path) -> None:
    """train/dev/test.tsv from the MSR files, as download_glue_data.py's format_mrpc writes them.

    The header line is copied as read (with the MSR file's byte-order mark, as GLUE's copy has it);
    a row goes to dev.tsv when its (#1 ID, #2 ID) is listed in dev_ids.tsv.
    """
    dev_ids = {tuple(line.strip().split("\t")) for line in
               (raw / "dev_ids.tsv").read_text(encoding="utf-8").splitlines() if line.strip()}
    train_file, test_file = raw / "msr_paraphrase_train.txt", raw / "msr_paraphrase_test.txt"
    with open(train_file, encoding="utf-8") as data:  # universal newlines, as the script reads
        header = data.readline()
        train, dev = [header], [header]
        for n, row in enumerate(data, start=2):
            fields = row.strip().split("\t")
            if len(fields) != 5:
                raise ValueError(f"{train_file}:{n}: expected 5 tab-separated fields, got {len(fields)}")
            (dev if (fields[1], fields[2]) in dev_ids else train).append("\t".join(fields) + "\n")
    test = ["index\t#1 ID\t#2 ID\t#1 String\t#2 String\n"]
    with open(test_file, encoding="utf-8") as data:
        data.readline()
        for idx, row in enumerate(data):
            fields = row.strip().split("\t")
            if len(fields) != 5:
                raise ValueError(f"{test_file}:{idx + 2}: expected 5 tab-separated fields, got {len(fields)}")
            test.append("\t".join([str(idx), *fields[1:]]) + "\n")
    for name, content in (("train.tsv", train), ("dev.tsv", dev), ("test.tsv", test)):
        (out / name).write_text("".join(content), encoding="utf-8")
