"""bert.file_utils, pytorch-pretrained-bert's URL cache, against a local HTTP server on 127.0.0.1 (and a fake
boto3 for s3:// URLs: the real one would need AWS)."""

from __future__ import annotations

import hashlib
import json
import sys
import types

import pytest

from bert import file_utils
from bert.file_utils import (
    cached_path,
    filename_to_url,
    get_file_extension,
    get_from_cache,
    http_get,
    read_set_from_file,
    split_s3_path,
    url_to_filename,
)
from local_http import Server


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    srv = Server()
    yield srv
    srv.stop()


def test_url_to_filename_is_the_originals_sha256_naming():
    url, etag = "https://example.com/vocab.txt", '"abc"'
    assert url_to_filename(url) == hashlib.sha256(url.encode()).hexdigest()
    assert url_to_filename(url, etag) == (hashlib.sha256(url.encode()).hexdigest() + "."
                                          + hashlib.sha256(etag.encode()).hexdigest())


def test_cached_path_fetches_once_per_etag_and_records_the_url(server, tmp_path):
    server.files["/vocab.txt"] = b"[PAD]\n[UNK]\nhello\n"
    server.etags["/vocab.txt"] = '"v1"'
    url = f"{server.url}/vocab.txt"
    first = cached_path(url, cache_dir=tmp_path)
    assert open(first, "rb").read() == b"[PAD]\n[UNK]\nhello\n"
    assert first == str(tmp_path / url_to_filename(url, '"v1"'))
    assert filename_to_url(url_to_filename(url, '"v1"'), cache_dir=tmp_path) == (url, '"v1"')
    gets = [entry for entry in server.log if not entry[0].startswith("HEAD")]
    assert cached_path(url, cache_dir=tmp_path) == first  # cached: a HEAD, no second GET
    assert [e for e in server.log if not e[0].startswith("HEAD")] == gets
    # A new ETag (the file changed on the server): a new cache entry.
    server.files["/vocab.txt"] = b"[PAD]\n[UNK]\nworld\n"
    server.etags["/vocab.txt"] = '"v2"'
    second = cached_path(url, cache_dir=tmp_path)
    assert second != first and open(second, "rb").read().endswith(b"world\n")
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*tmp*"))


def test_offline_uses_the_newest_cached_copy_and_missing_files_are_errors(server, tmp_path):
    server.files["/model.bin"] = b"weights"
    server.etags["/model.bin"] = '"e"'
    url = f"{server.url}/model.bin"
    cached = cached_path(url, cache_dir=tmp_path)
    server.stop()  # offline: no answer to HEAD
    assert get_from_cache(url, cache_dir=tmp_path) == cached
    with pytest.raises(OSError, match="model2.bin"):
        cached_path(f"{server.url}/model2.bin", cache_dir=tmp_path)


def test_http_errors_and_local_paths(server, tmp_path):
    with pytest.raises(OSError, match=r"404.*missing\.txt|missing\.txt.*404"):
        cached_path(f"{server.url}/missing.txt", cache_dir=tmp_path)
    local = tmp_path / "vocab.txt"
    local.write_text("a\n")
    assert cached_path(local) == str(local)
    with pytest.raises(OSError, match="not found"):
        cached_path(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="unable to parse"):
        cached_path("ftp://host/file")


def test_http_get_writes_the_body_into_an_open_file(server, tmp_path):
    server.files["/data"] = bytes(range(256)) * 100
    with open(tmp_path / "out", "wb") as out:
        http_get(f"{server.url}/data", out)
    assert (tmp_path / "out").read_bytes() == bytes(range(256)) * 100


def test_filename_to_url_errors(tmp_path):
    with pytest.raises(OSError, match="not found"):
        filename_to_url("abc", cache_dir=tmp_path)
    (tmp_path / "abc").write_text("x")
    (tmp_path / "abc.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"abc\.json: not a cache metadata file"):
        filename_to_url("abc", cache_dir=tmp_path)


def test_s3_urls_go_through_boto3(monkeypatch, tmp_path):
    """A fake boto3 stands in for AWS: the bucket and key reach it, a 404 is an OSError naming the URL."""
    objects = {("bucket", "models/vocab.txt"): b"[UNK]\nhi\n"}

    class ClientError(Exception):
        def __init__(self, code):
            self.response = {"Error": {"Code": code}}

    class Resource:
        def Object(self, bucket, key):  # noqa: N802 (boto3's name)
            if (bucket, key) not in objects:
                raise ClientError("404")
            return types.SimpleNamespace(e_tag='"s3etag"')

        def Bucket(self, bucket):  # noqa: N802
            return types.SimpleNamespace(download_fileobj=lambda key, f: f.write(objects[(bucket, key)]))

    monkeypatch.setitem(sys.modules, "boto3", types.SimpleNamespace(resource=lambda name: Resource()))
    assert split_s3_path("s3://bucket/models/vocab.txt") == ("bucket", "models/vocab.txt")
    path = cached_path("s3://bucket/models/vocab.txt", cache_dir=tmp_path)
    assert open(path, "rb").read() == b"[UNK]\nhi\n"
    assert json.loads(open(path + ".json").read()) == {"url": "s3://bucket/models/vocab.txt", "etag": '"s3etag"'}
    with pytest.raises(OSError, match="file s3://bucket/nope not found"):
        cached_path("s3://bucket/nope", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="bad s3 path"):
        split_s3_path("s3://bucket")
    monkeypatch.setitem(sys.modules, "boto3", None)  # not installed
    with pytest.raises(OSError, match="need boto3"):
        cached_path("s3://bucket/other", cache_dir=tmp_path)


def test_small_helpers(tmp_path):
    (tmp_path / "set.txt").write_text("a\nb \na\n", encoding="utf-8")
    assert read_set_from_file(tmp_path / "set.txt") == {"a", "b"}
    assert get_file_extension("x/Model.BIN") == ".bin"
    assert get_file_extension("x/Model.BIN", dot=False, lower=False) == "BIN"
    assert file_utils.WEIGHTS_NAME == "pytorch_model.bin" and file_utils.CONFIG_NAME == "config.json"
