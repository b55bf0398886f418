"""bert.data.cache: ragged tensors round-trip exactly; dynamic padding changes no model output."""

from __future__ import annotations

import json
import random

import pytest
import torch

from bert import BertForMultipleChoice, BertForSequenceClassification
from bert.data.cache import CacheManifest, CachedFeatures, pad_collate, read_manifest, write_cache


def _manifest(n, label_keys=("labels",), num_choices=0):
    return CacheManifest(task="t", split="train", vocab_sha256="0" * 64, do_lower_case=True, max_seq_length=16,
                         doc_stride=None, max_query_length=None, num_examples=n, num_features=n, num_truncated=0,
                         label_keys=label_keys, num_choices=num_choices)


def _ragged(rng, n, vocab=99):
    ids = [[rng.randrange(1, vocab) for _ in range(rng.randint(3, 16))] for _ in range(n)]
    types = [[int(j >= len(row) // 2) for j in range(len(row))] for row in ids]
    return ids, types


def test_round_trip_classification(tmp_path):
    rng = random.Random(0)
    ids, types = _ragged(rng, 23)
    labels = [rng.randrange(3) for _ in ids]
    write_cache(tmp_path / "c", ids, types, {"labels": labels}, _manifest(23), metadata={"ids": list(range(23))})
    ds = CachedFeatures(tmp_path / "c")
    assert len(ds) == 23 and ds.lengths == [len(r) for r in ids]
    for i in range(23):
        item = ds[i]
        assert item["input_ids"].tolist() == ids[i] and item["token_type_ids"].tolist() == types[i]
        assert item["labels"].item() == labels[i] and item["input_ids"].dtype == torch.long
    assert ds.metadata == {"ids": list(range(23))}
    assert read_manifest(tmp_path / "c") == _manifest(23)
    with pytest.raises(IndexError):
        ds[23]


def test_round_trip_regression_and_squad_labels(tmp_path):
    rng = random.Random(1)
    ids, types = _ragged(rng, 5)
    write_cache(tmp_path / "r", ids, types, {"labels": [0.5, 1.0, 2.25, 3.0, 4.75]}, _manifest(5))
    assert CachedFeatures(tmp_path / "r").labels().tolist() == [0.5, 1.0, 2.25, 3.0, 4.75]
    keys = ("start_positions", "end_positions")
    write_cache(tmp_path / "q", ids, types, {"start_positions": [1, 2, 0, 1, 2], "end_positions": [2, 2, 0, 3, 2]},
                _manifest(5, keys))
    item = CachedFeatures(tmp_path / "q")[3]
    assert (item["start_positions"].item(), item["end_positions"].item()) == (1, 3)


def test_multiple_choice_items(tmp_path):
    rng = random.Random(2)
    feats = [_ragged(rng, 4) for _ in range(6)]
    ids, types = [f[0] for f in feats], [f[1] for f in feats]
    write_cache(tmp_path / "m", ids, types, {"labels": [0, 1, 2, 3, 0, 1]}, _manifest(6, num_choices=4))
    ds = CachedFeatures(tmp_path / "m")
    for i in range(6):
        item = ds[i]
        longest = max(len(r) for r in ids[i])
        assert item["input_ids"].shape == (4, longest) and ds.lengths[i] == longest
        for c in range(4):
            n = len(ids[i][c])
            assert item["input_ids"][c, :n].tolist() == ids[i][c]
            assert item["attention_mask"][c].tolist() == [1] * n + [0] * (longest - n)
    batch = pad_collate([ds[i] for i in range(6)])
    assert batch["input_ids"].shape == (6, 4, max(ds.lengths))
    assert batch["attention_mask"].sum().item() == sum(len(r) for f in ids for r in f)


def test_pad_collate_builds_the_mask():
    items = [{"input_ids": torch.tensor([101, 7, 102]), "token_type_ids": torch.tensor([0, 0, 0]),
              "labels": torch.tensor(1)},
             {"input_ids": torch.tensor([101, 102]), "token_type_ids": torch.tensor([0, 1]), "labels": torch.tensor(0)}]
    batch = pad_collate(items, pad_id=5)
    assert batch["input_ids"].tolist() == [[101, 7, 102], [101, 102, 5]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0], [0, 1, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [1, 0]


@pytest.mark.parametrize("head", ["classification", "multiple_choice"])
def test_dynamic_padding_does_not_change_logits(tmp_path, tiny_config, head):
    """Each item alone (no padding) gives the same logits as inside a padded batch."""
    torch.manual_seed(0)
    rng = random.Random(3)
    if head == "classification":
        model = BertForSequenceClassification(tiny_config, num_labels=3).eval()
        ids, types = _ragged(rng, 8)
        write_cache(tmp_path / "d", ids, types, {"labels": [0] * 8}, _manifest(8))
    else:
        model = BertForMultipleChoice(tiny_config, num_choices=4).eval()
        feats = [_ragged(rng, 4) for _ in range(8)]
        write_cache(tmp_path / "d", [f[0] for f in feats], [f[1] for f in feats], {"labels": [0] * 8},
                    _manifest(8, num_choices=4))
    ds = CachedFeatures(tmp_path / "d")
    strip = lambda b: {k: v for k, v in b.items() if k != "labels"}  # noqa: E731
    with torch.no_grad():
        batched = model(**strip(pad_collate([ds[i] for i in range(8)])))
        for i in range(8):
            alone = model(**strip(pad_collate([ds[i]])))
            torch.testing.assert_close(batched[i], alone[0], atol=1e-5, rtol=0)


def test_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a feature cache"):
        CachedFeatures(tmp_path)
    rng = random.Random(4)
    ids, types = _ragged(rng, 3)
    write_cache(tmp_path / "c", ids, types, {"labels": [0, 1, 0]}, _manifest(3))
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    (tmp_path / "c" / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version 2, found 99"):
        CachedFeatures(tmp_path / "c")
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "c" / "features.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="not a readable feature file"):
        CachedFeatures(tmp_path / "c")
    with pytest.raises(ValueError, match="labels"):
        write_cache(tmp_path / "x", ids, types, {"labels": [0, 1]}, _manifest(3))
    assert not (tmp_path / "x").exists()
