"""Contextual token vectors from chosen layers, as Google's ``extract_features.py`` writes them.

Input: a text file, one example per line: a sentence, or a pair written ``A ||| B``.
Output: JSON lines, one per input line, in Google's format (values rounded to 6 decimals):

    {"linex_index": 0, "features": [{"token": "[CLS]", "layers": [{"index": -1, "values": [0.1, ...]}, ...]}, ...]}
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch
from tqdm.auto import tqdm

from bert.data.cache import pad_collate
from bert.engine.batch import to_device
from bert.io.fileio import atomic_path
from bert.modeling import BertModel
from bert.tokenization import BertTokenizer, truncate_seq_pair

logger = logging.getLogger(__name__)

_PAIR = re.compile(r"^(.*) \|\|\| (.*)$")


@dataclass
class InputExample:
    unique_id: int
    text_a: str
    text_b: Optional[str] = None


@dataclass
class InputFeatures:
    unique_id: int
    tokens: list[str]  # [CLS] a b [SEP] (c d [SEP])
    input_ids: list[int]
    input_type_ids: list[int]


def read_examples(input_file: str | os.PathLike) -> list[InputExample]:
    """One example per line (blank lines included, so output line i answers input line i).

    Raises:
        ValueError: the file is not UTF-8 text (naming the line).
    """
    examples = []
    with open(input_file, "rb") as reader:
        for number, raw in enumerate(reader):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as err:
                raise ValueError(f"{input_file}: line {number + 1} is not UTF-8 text ({err.reason})") from None
            match = _PAIR.match(line)
            examples.append(InputExample(number, match.group(1), match.group(2)) if match
                            else InputExample(number, line))
    return examples


def convert_examples_to_features(examples: Sequence[InputExample], seq_length: int,
                                 tokenizer: BertTokenizer) -> list[InputFeatures]:
    """Tokenize, truncate (longest first for pairs) and add [CLS]/[SEP] as Google's script does.

    Args:
        examples: from read_examples.
        seq_length: the most tokens per example, special tokens included.
        tokenizer: the model's tokenizer.
    Returns:
        One InputFeatures per example, unpadded.
    """
    if seq_length < 3:
        raise ValueError(f"max_seq_length must be at least 3 (for [CLS] A [SEP] B [SEP]), got {seq_length}")
    features = []
    for example in examples:
        tokens_a = tokenizer.tokenize(example.text_a)
        tokens_b = tokenizer.tokenize(example.text_b) if example.text_b is not None else None
        if tokens_b is not None:
            truncate_seq_pair(tokens_a, tokens_b, seq_length - 3)
        else:
            tokens_a = tokens_a[: seq_length - 2]
        tokens = ["[CLS]", *tokens_a, "[SEP]"]
        input_type_ids = [0] * len(tokens)
        if tokens_b is not None:
            tokens += [*tokens_b, "[SEP]"]
            input_type_ids += [1] * (len(tokens_b) + 1)
        features.append(InputFeatures(example.unique_id, tokens, tokenizer.convert_tokens_to_ids(tokens),
                                      input_type_ids))
    return features


def parse_layers(text: str, num_layers: int) -> list[int]:
    """``"-1,-2,-3,-4"`` -> [-1, -2, -3, -4], checked against the model's depth."""
    try:
        layers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--layers must be comma-separated integers, got {text!r}") from None
    bad = [layer for layer in layers if not -num_layers <= layer < num_layers]
    if not layers or bad:
        raise ValueError(f"--layers {text!r}: each must be in [-{num_layers}, {num_layers - 1}] for this model")
    return layers


def check_paths(input_file: str | os.PathLike, output_file: str | os.PathLike) -> None:
    """Refuse an output that would replace a folder or the input itself (the rename would destroy it).

    Raises:
        ValueError: naming the path.
    """
    output = Path(output_file)
    if output.is_dir():
        raise ValueError(f"--output-file {output} is a folder; expected a file name (e.g. {output}/features.jsonl)")
    if output.exists() and Path(input_file).exists() and output.resolve() == Path(input_file).resolve():
        raise ValueError(f"--output-file {output} is the input file; choose another name")


CHUNK_BATCHES = 8  # batches per chunk: the span inside which lines are sorted by length (their vectors wait there)


@torch.inference_mode()
def extract(model: BertModel, features: Sequence[InputFeatures], layers: Sequence[int], batch_size: int = 32,
            device: str | torch.device = "cpu", progress: bool = True) -> Iterator[dict]:
    """Run the model on real tokens only and yield Google's JSON records, in input order.

    Within each chunk of lines, batches are made of lines of similar length (sorted), padded to their longest
    and packed (bert/model/plan.py): the dense layers compute real tokens alone. Outputs are unchanged.

    Yields:
        {"linex_index": ..., "features": [{"token": ..., "layers": [{"index": ..., "values": [...]}]}]}
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    model.eval().to(device)
    chunk = batch_size * CHUNK_BATCHES
    with tqdm(total=len(features), desc="extract-features", unit="line", disable=not progress) as bar:
        for begin in range(0, len(features), chunk):
            part = features[begin:begin + chunk]
            order = sorted(range(len(part)), key=lambda i: -len(part[i].input_ids))
            vectors: list[Optional[torch.Tensor]] = [None] * len(part)  # [L, T, H] per line, float32 on the CPU
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                batch = to_device(pad_collate([{"input_ids": torch.tensor(part[i].input_ids),
                                                "token_type_ids": torch.tensor(part[i].input_type_ids)}
                                               for i in rows]), torch.device(device))
                encoded, _ = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                                   output_all_encoded_layers=True, skip_padding=True, packing=batch.get("packing"))
                chosen = torch.stack([encoded[layer] for layer in layers], 1).float().cpu()  # [B, L, T, H]
                for row, i in enumerate(rows):
                    vectors[i] = chosen[row, :, : len(part[i].input_ids)]
            for feature, values in zip(part, vectors):
                tokens = []
                for position, token in enumerate(feature.tokens):
                    tokens.append({"token": token, "layers": [
                        {"index": layer, "values": [round(x, 6) for x in values[k, position].tolist()]}
                        for k, layer in enumerate(layers)]})
                yield {"linex_index": feature.unique_id, "features": tokens}
            bar.update(len(part))


def extract_features(input_file: str | os.PathLike, output_file: str | os.PathLike,
                     model_name_or_path: str | os.PathLike, layers: str = "-1,-2,-3,-4",
                     max_seq_length: int = 128, batch_size: int = 32, do_lower_case: Optional[bool] = None,
                     device: Optional[str] = None, cache_dir: str | os.PathLike | None = None,
                     progress: bool = True) -> int:
    """The whole command: read lines, tokenize, run the model, write JSON lines atomically.

    Args:
        input_file: text, one sentence or ``A ||| B`` pair per line.
        output_file: JSON lines (written under a temp name, then renamed).
        model_name_or_path: a model folder or name (see bert.io.hub.resolve_model_dir).
        layers: comma-separated layer indexes, negative from the top.
        max_seq_length: tokens per example, special tokens included.
        batch_size: examples per forward pass.
        do_lower_case: None follows the model folder's tokenizer settings.
        device: "cpu", "cuda", ...; None picks CUDA when available.
        cache_dir: download cache for model names.
        progress: show a progress bar.
    Returns:
        The number of lines written.
    """
    check_paths(input_file, output_file)
    if batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {batch_size}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = BertModel.from_pretrained(model_name_or_path, cache_dir=cache_dir)
    tokenizer = BertTokenizer.from_pretrained(model_name_or_path, do_lower_case=do_lower_case, cache_dir=cache_dir)
    missing = [token for token in ("[CLS]", "[SEP]") if token not in tokenizer.vocab]
    if missing:  # every line is framed with them; without, they would silently become [UNK]
        raise ValueError(f"{tokenizer.vocab_file}: no {' or '.join(missing)} token; a BERT vocab frames every "
                         "input as [CLS] A [SEP] (B [SEP])")
    if len(tokenizer.vocab) > model.config.vocab_size:  # ids past the embedding matrix: wrong vocab for the model
        raise ValueError(f"{tokenizer.vocab_file}: {len(tokenizer.vocab)} tokens, but the model's config has "
                         f"vocab_size {model.config.vocab_size}; the vocab does not belong to this model")
    chosen = parse_layers(layers, model.config.num_hidden_layers)
    if max_seq_length > model.config.max_position_embeddings:
        raise ValueError(f"--max-seq-length {max_seq_length} exceeds the model's "
                         f"max_position_embeddings ({model.config.max_position_embeddings})")
    examples = read_examples(input_file)
    if not examples:
        raise ValueError(f"{input_file}: no lines to extract features from (expected one sentence, "
                         "or 'A ||| B', per line)")
    features = convert_examples_to_features(examples, max_seq_length, tokenizer)
    with atomic_path(output_file) as tmp, open(tmp, "w", encoding="utf-8") as writer:
        for record in extract(model, features, chosen, batch_size, device, progress):
            writer.write(json.dumps(record) + "\n")
    logger.info("%s: %d lines -> %s", input_file, len(features), output_file)
    return len(features)
