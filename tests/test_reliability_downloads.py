"""`bert download` and the downloader against hostile servers on 127.0.0.1, and bad archives in the cache.

Every download is bounded: a deadline for all its attempts, a minimum rate, and a size (a release's pinned
size, else what its model's shape allows); a server that trickles, stalls or never stops ends in one line
naming the URL and the file, and an oversized ``.part`` is not resumed. An archive that cannot be converted
(corrupt, no checkpoint, members the file system cannot hold) leaves the cache, so that the next call, once the
mirror is fixed, fetches it again. Temporaries a killed process left are removed by the next one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

from bert.io import hub
from bert.io.download import DownloadError, download
from local_http import Server
from reliability_helpers import BAD_INPUT, FAULT, REPO, assert_one_clear_error, child_env, tally
from test_hub import zip_bytes

TINY = "/2020_02_20/uncased_L-2_H-128_A-2.zip"  # bert-tiny under the mirror
TINY_ARCHIVE = "2020_02_20--uncased_L-2_H-128_A-2.zip"  # its name in <cache>/downloads


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    srv = Server()
    monkeypatch.setenv(hub.MIRROR_ENV, srv.url)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A tiny pre-trained BERT as Google ships one (test_hub's, without its weights)."""
    import torch

    from bert import BertConfig, BertForPreTraining
    from bert.formats.convert import export_tf_checkpoint
    from test_hub import WORDS

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64)
    source = BertForPreTraining(config).save_pretrained(tmp_path_factory.mktemp("source"))
    (source / "vocab.txt").write_text("".join(w + "\n" for w in WORDS))
    google = export_tf_checkpoint(source, tmp_path_factory.mktemp("google") / "bert_model.ckpt").parent
    return zip_bytes({f"uncased_L-2_H-32_A-4/{p.name}": p.read_bytes() for p in sorted(google.iterdir())})


def _bert(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    """`python -m bert ARGS` in a child process (so that a hang is a timeout, not a stuck suite)."""
    return subprocess.run([sys.executable, "-m", "bert", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=child_env(**env), check=False)


# ----------------------------------------------------------------------------------------------
# M5: bounded in time, rate and size.


def test_bert_download_from_a_trickling_server_ends_at_its_deadline(server, release, tmp_path):
    """[#19 M5] A trickling server: bert download ends at its deadline, one line."""
    with tally(FAULT, "bert download from a server trickling 16 bytes every 0.2 s: ends at the deadline"):
        server.files[TINY] = release
        server.trickle[TINY] = (16, 0.2)
        cache = tmp_path / "cache"
        started = time.monotonic()
        try:
            done = _bert("-q", "download", "bert-tiny", "--cache-dir", str(cache), timeout=40,
                         BERT_TOOLKIT_MIRROR=server.url, BERT_TOOLKIT_DOWNLOAD_DEADLINE="3")
        except subprocess.TimeoutExpired:
            pytest.fail("bert download still running after 40 s against a trickling server")
        assert time.monotonic() - started < 30
        part = cache / "downloads" / f"{TINY_ARCHIVE}.part"
        assert_one_clear_error(done.returncode, done.stderr, server.url + TINY, "deadline of 3 s", str(part))
        assert 0 < part.stat().st_size < len(release)  # kept: the next call resumes it


def test_download_slower_than_the_minimum_rate_is_cut(server, tmp_path):
    """[#19 M5] Below the minimum rate: cut, one line naming the URL and the file."""
    with tally(FAULT, "download() from a server below the minimum rate: cut, one line naming URL and file"):
        server.files["/slow.bin"] = bytes(4096)
        server.trickle["/slow.bin"] = (8, 0.1)  # 80 bytes/s
        started = time.monotonic()
        with pytest.raises(DownloadError) as info:
            download(server.url + "/slow.bin", tmp_path / "slow.bin", min_rate=1000, rate_window=1.0, retries=0,
                     progress=False)
        message = str(info.value)
        assert time.monotonic() - started < 10
        assert "\n" not in message and server.url + "/slow.bin" in message and "slow.bin.part" in message
        assert "less than the 1000 required" in message


def test_bert_download_of_an_endless_stream_stops_at_the_release_size(server, tmp_path):
    """[#19 M5] An endless stream: stopped at the release's size bound, the .part removed."""
    with tally(FAULT, "bert download from a server that never stops sending: stopped, the .part removed") as rec:
        server.endless[TINY] = b"\0" * (1 << 20)
        server.endless_pause = 0.01  # 100 MB/s at most: bert-tiny's cap (67 MB) in a second, no flood if it fails
        cache = tmp_path / "cache"
        try:
            done = _bert("-q", "download", "bert-tiny", "--cache-dir", str(cache), timeout=20,
                         BERT_TOOLKIT_MIRROR=server.url)
        except subprocess.TimeoutExpired:
            pytest.fail("bert download still writing an endless stream after 20 s")
        part = cache / "downloads" / f"{TINY_ARCHIVE}.part"
        rec["lost"] = int(part.exists())
        cap = hub.find_release("bert-tiny").max_bytes
        assert_one_clear_error(done.returncode, done.stderr, server.url + TINY, f"more than the {cap} bytes expected",
                               str(part))
        assert not part.exists()  # not resumed by the next call


def test_download_refuses_an_announced_size_over_the_cap(server, tmp_path):
    """[#19 M5] A Content-Length over the cap: refused before reading."""
    with tally(BAD_INPUT, "download() of a file whose Content-Length passes the cap: refused before reading"):
        server.endless["/huge.bin"] = b"\0" * 1024
        server.endless_length["/huge.bin"] = 1 << 40
        with pytest.raises(DownloadError) as info:
            download(server.url + "/huge.bin", tmp_path / "huge.bin", max_bytes=1 << 20, progress=False)
        assert "announces 1099511627776 bytes, more than the 1048576 bytes expected" in str(info.value)
        assert not (tmp_path / "huge.bin.part").exists()


def test_an_oversized_part_is_not_resumed(server, release, tmp_path):
    """[#19 M5] A .part larger than the release can be is started over, not resumed."""
    with tally(FAULT, "bert download finding a .part larger than the release can be: started over"):
        server.files[TINY] = release
        cache = tmp_path / "cache"
        (cache / "downloads").mkdir(parents=True)
        part = cache / "downloads" / f"{TINY_ARCHIVE}.part"
        with open(part, "wb") as f:
            f.truncate(hub.find_release("bert-tiny").max_bytes + 1)  # what an endless stream left (sparse)
        folder = hub.resolve_model_dir("bert-tiny", cache_dir=cache, progress=False)
        assert (folder / "model.safetensors").is_file() and not part.exists()
        assert server.log == [(TINY, None)]  # from the start: no Range request


def test_a_pinned_release_refuses_another_file(server, release, tmp_path, monkeypatch):
    """[#19 M5] A release with a pinned size and sha256: another file is refused (values pinned by the test)."""
    with tally(BAD_INPUT, "bert download of a pinned release: a mirror serving another file is refused"):
        server.files[TINY] = release
        pinned = dataclasses.replace(hub.find_release("bert-tiny"), size=len(release),
                                     sha256=hashlib.sha256(b"another file").hexdigest())
        monkeypatch.setitem(hub.RELEASES, pinned.name, pinned)
        cache = tmp_path / "cache"
        with pytest.raises(hub.HubError, match="sha256 .* does not match the expected"):
            hub.resolve_model_dir("bert-tiny", cache_dir=cache, progress=False)
        assert list((cache / "downloads").iterdir()) == []
        monkeypatch.setitem(hub.RELEASES, pinned.name, dataclasses.replace(
            pinned, sha256=hashlib.sha256(release).hexdigest()))
        assert (hub.resolve_model_dir("bert-tiny", cache_dir=cache, progress=False) / "vocab.txt").is_file()


def test_download_to_a_long_file_name(server, tmp_path):
    """[#19 L11] A 252-byte destination name: its .part fits in 255 bytes too."""
    with tally(BAD_INPUT, "download() to a 252-byte file name (its .part must fit in 255 bytes too)"):
        server.files["/f.bin"] = b"x" * 1000
        dest = tmp_path / ("d" * 252)
        assert download(server.url + "/f.bin", dest, progress=False).read_bytes() == b"x" * 1000


# ----------------------------------------------------------------------------------------------
# L10: an empty name.


@pytest.mark.parametrize("name", ["", "   "])
def test_bert_download_of_an_empty_name(tmp_path, capsys, name):
    """[#19 L10] bert download '' is refused in one line."""
    from bert.cli.commands import main

    with tally(BAD_INPUT, f"bert download {name!r}"):
        rc = main(["download", name, "--cache-dir", str(tmp_path / "cache")])
        assert_one_clear_error(rc, capsys.readouterr().err, "empty model name")
        assert not (tmp_path / "cache").exists()


# ----------------------------------------------------------------------------------------------
# M6: an archive that cannot be converted leaves the cache.


BAD_ARCHIVES = {
    "no checkpoint in the archive": (zip_bytes({"uncased_L-2_H-32_A-4/README.txt": b"nothing here"}),
                                     "expected one TF checkpoint"),
    "a member name the file system cannot hold": (zip_bytes({"x/" + "n" * 300 + ".txt": b"x"}), "cannot be written"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARCHIVES))
def test_bad_archive_leaves_the_cache_and_the_fixed_mirror_is_used(server, release, tmp_path, case):
    """[#19 M6] A bad archive leaves the cache; once the mirror is fixed, the next call succeeds."""
    with tally(FAULT, f"bert download of a bad archive ({case}), then from the fixed mirror"):
        payload, fragment = BAD_ARCHIVES[case]
        server.files[TINY] = payload
        cache = tmp_path / "cache"
        with pytest.raises(hub.HubError) as info:
            hub.resolve_model_dir("bert-tiny", cache_dir=cache, progress=False)
        message = str(info.value)
        assert "\n" not in message and message.startswith(server.url + TINY) and fragment in message, message
        assert not (cache / "downloads" / TINY_ARCHIVE).exists()
        server.files[TINY] = release  # the mirror is fixed
        assert (hub.resolve_model_dir("bert-tiny", cache_dir=cache, progress=False) / "model.safetensors").is_file()


def test_bad_archive_placed_by_hand_is_named(release, tmp_path, monkeypatch):
    """[#19 M6] A bad archive in the cache that no download brought: the error names it, and it is removed."""
    with tally(BAD_INPUT, "a bad archive placed in the cache by hand: the error names it, not the mirror's URL"):
        monkeypatch.setenv(hub.MIRROR_ENV, "http://127.0.0.1:9")  # nothing listens there
        cache = tmp_path / "cache"
        (cache / "downloads").mkdir(parents=True)
        archive = cache / "downloads" / TINY_ARCHIVE
        archive.write_bytes(BAD_ARCHIVES["no checkpoint in the archive"][0])
        with pytest.raises(hub.HubError) as info:
            hub.resolve_model_dir("bert-tiny", cache_dir=cache, progress=False)
        assert str(info.value).startswith(f"{archive} (placed there earlier)"), str(info.value)
        assert not archive.exists()


# ----------------------------------------------------------------------------------------------
# L12: temporaries a killed process left.

KILL_IN_EXTRACTION = """
import os, signal, sys
import bert.formats.convert as convert
from bert.io import hub
def killed(folder, source=""):
    os.kill(os.getpid(), signal.SIGKILL)  # the archive is extracted: die with the scratch folder full
hub.locate_google_checkpoint = killed
hub.resolve_model_dir("bert-tiny", cache_dir=sys.argv[1], progress=False)
"""


def test_extraction_scratch_of_a_killed_download_is_removed(server, release, tmp_path):
    """[#19 L12] <cache>/tmp extraction left by a killed download: removed by the next call."""
    with tally(FAULT, "bert download killed while extracting: the next call removes its scratch folder") as rec:
        server.files[TINY] = release
        cache = tmp_path / "cache"
        done = subprocess.run([sys.executable, "-c", KILL_IN_EXTRACTION, str(cache)], cwd=REPO, timeout=120,
                              env=child_env(BERT_TOOLKIT_MIRROR=server.url), capture_output=True, text=True,
                              check=False)
        assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
        assert any((cache / "tmp").iterdir())  # what the kill left
        hub.resolve_model_dir("bert-tiny", cache_dir=cache, progress=False)
        left = sorted(p.name for p in (cache / "tmp").iterdir())
        rec["lost"] = len(left)
        assert left == [], left


def test_another_hosts_temporary_left_a_week_ago_is_removed(tmp_path):
    """[#19 L12] A .pretrained.*.tmp of another host, untouched a week: removed."""
    from bert.io.fileio import OTHER_HOST_STALE, atomic_write_text

    with tally(FAULT, "a temporary left by a writer on another host (a gone container) a week ago: removed"):
        old = tmp_path / ".pretrained.gone-container-7-123.abcdefgh.tmp"
        old.mkdir()
        (old / "model.safetensors").write_bytes(b"half")
        recent = tmp_path / ".pretrained.other-node-8-456.ijklmnop.tmp"
        recent.mkdir()
        week = time.time() - OTHER_HOST_STALE - 60
        for path in (old / "model.safetensors", old):
            os.utime(path, (week, week))
        atomic_write_text(tmp_path / "pretrained", "x")
        assert not old.exists() and recent.exists()  # a recent one may belong to a live writer over there


KILL_IN_FETCH = """
import os, signal, sys
from pathlib import Path
import bert.io.download
from stages import download as stage
import stages._lib.sources as sources
files = {remote.name: remote for remote in sources.SOURCES["squad1"].files}
def fetched(url, dest, sha256=None, **kw):
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    Path(dest).write_text(Path(sys.argv[2], Path(dest).name).read_text())
    return Path(dest)
bert.io.download.download = fetched
stage.git_blob_id = lambda path: files[path.name].git_blob
def killed(task, folder, out):
    os.kill(os.getpid(), signal.SIGKILL)  # inside the stage's scratch folder
if sys.argv[3] == "kill":
    stage.copy_local = killed
sys.exit(stage.main(["--params", sys.argv[1], "--task", "squad1", "--out", sys.argv[4]]))
"""


def test_download_stage_scratch_of_a_killed_run_is_removed(tmp_path):
    """[#19 L12] The download stage's scratch folder of a killed run: removed by the rerun."""
    from reliability_helpers import write_params
    from stages import download

    with tally(FAULT, "download stage killed while building the task folder: the rerun removes its scratch") as rec:
        demo = tmp_path / "demo"
        assert download.main(["--params", str(write_params(tmp_path / "demo.yaml")), "--task", "demo-qa",
                              "--out", str(demo)]) == 0
        params = write_params(tmp_path / "params.yaml", **{"source: builtin": "source: download"})
        raw = tmp_path / "data" / "raw"
        args = [str(params), str(demo), "kill", str(raw / "squad1")]
        env = child_env(BERT_TOOLKIT_CACHE=str(tmp_path / "cache"))
        killed = subprocess.run([sys.executable, "-c", KILL_IN_FETCH, *args], cwd=REPO, env=env, timeout=120,
                                capture_output=True, text=True, check=False)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        assert any(raw.iterdir())  # what the kill left
        args[2] = "run"
        rerun = subprocess.run([sys.executable, "-c", KILL_IN_FETCH, *args], cwd=REPO, env=env, timeout=120,
                               capture_output=True, text=True, check=False)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        left = sorted(p.name for p in raw.iterdir())
        rec["lost"] = len(left) - 1
        assert left == ["squad1"], left
