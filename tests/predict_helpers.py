"""Tiny fine-tuned model folders for the prediction tests: a hand-written vocab, a tiny BERT with seeded random
weights (large enough to make the outputs differ between inputs) and the task metadata of bert/tasks/folder.py."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from bert import BertConfig
from bert.modeling import BertForMultipleChoice, BertForQuestionAnswering, BertForSequenceClassification
from bert.tasks.folder import TaskMetadata, write_task_metadata
from bert.tasks.registry import TaskKind
from bert.tasks.windows import WindowSettings
from bert.tokenization import BertTokenizer

WORDS = ("the a cat dog sat on mat is was who what where when why red blue green big small house car tree ran "
         "jumped over under and or not no yes sun moon river hill town road , . ? ! 1 2 3").split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "##s", "##ed", "##ing", "##ly"]

SENTENCES = [
    "the cat sat on the mat",
    "a dog ran over the hill and the big red car jumped under the green tree",
    "who sat ?",
    "the sun was big and the moon was small",
    "yes",
    "the river ran under the road to the town , and the cats jumped over the blue house",
    "no , not the car !",
    "where is the small dog ?",
]


def tiny_config(vocab_size: int = len(VOCAB), max_positions: int = 64) -> BertConfig:
    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=37, max_position_embeddings=max_positions, initializer_range=0.3,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def tiny_folder(root: Path, kind: TaskKind, labels: tuple[str, ...] = (), max_seq_length: int = 32,
                window: Optional[WindowSettings] = None, seed: int = 0, **settings) -> Path:
    """A model folder as the finetune stage writes it, with the task metadata; returns it."""
    folder = root / f"{kind.value}-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    torch.manual_seed(seed)
    config = tiny_config()
    if kind is TaskKind.SQUAD:
        model = BertForQuestionAnswering(config)
    elif kind is TaskKind.MULTIPLE_CHOICE:
        model = BertForMultipleChoice(config, num_choices=settings.get("num_choices") or 3)
    else:
        model = BertForSequenceClassification(config, num_labels=max(len(labels), 1))
    model.save_pretrained(folder)
    BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    write_task_metadata(folder, TaskMetadata(kind, "tiny", labels, max_seq_length, window, **settings),
                        do_lower_case=True)
    return folder
