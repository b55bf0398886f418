"""Stage tokenize: a task's raw train and dev files to cached, unpadded tensors (bert.data.cache).

    python -m stages.tokenize --task demo-pair --data data/raw/demo-pair --model models/pretrained \
        --out data/features/demo-pair

Writes ``<out>/train`` and ``<out>/dev``, each a bert.data.cache folder whose manifest records the vocab's
sha256, the casing, the lengths, the counts and how many examples were truncated. finetune and
evaluate read these and never tokenize again. With ``tokenize.windows.stride`` N > 0, a classification or
regression input longer than max_seq_length becomes several windows N tokens apart (bert.tasks.windows), each a
row with its example's label; metadata.json's ``example_index`` says whose, and the manifest's ``window`` how
evaluate combines them. GLUE and SWAG text goes through the fast batch path
(bert.text.fast_tokenization: the same ids as BertTokenizer); SQuAD keeps WordPiece token strings for
post-processing, so it uses BertTokenizer with a word cache.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from bert.data.cache import CacheManifest, write_cache
from bert.model.config import BertConfig
from bert.io.download import sha256_of
from bert.text.fast_tokenization import FastWordpiece
from bert.tasks import TaskKind, TaskSpec
from bert.tasks import glue, squad, swag
from bert.tasks.records import CachedTokenizer
from bert.tasks.windows import COMBINE, convert_examples_to_windows
from bert.io.settings import at_least, one_of
from bert.io.jsonfile import read_json_object
from bert.tokenization import BertTokenizer, vocab_is_cased
from stages._lib.common import atomic_outputs, require_input, run_stage, stage_parser
from stages._lib.params import load_section
from stages._lib.tasks import get_task, recorded_labels

logger = logging.getLogger("stages.tokenize")
SPLITS = ("train", "dev")


@dataclass(frozen=True)
class WindowParams:
    """Section ``tokenize.windows``: long classification inputs as windows (stride 0: truncated instead)."""

    stride: int = field(metadata=at_least(0))  # tokens between window starts; 0: cut to max_seq_length
    combine: str = field(metadata=one_of(*COMBINE))  # how evaluate and predict combine a text's windows' logits


@dataclass(frozen=True)
class TokenizeParams:
    """Section ``tokenize``."""

    max_seq_length: int = field(metadata=at_least(8))
    doc_stride: int = field(metadata=at_least(1))  # SQuAD: tokens between window starts
    max_query_length: int = field(metadata=at_least(1))  # SQuAD: question tokens kept
    do_lower_case: bool
    windows: WindowParams

    def window(self, spec: TaskSpec) -> Optional[dict[str, Any]]:
        """The manifest's ``window`` entry for `spec` ({stride, combine}), or None (truncated; SQuAD and
        multiple choice have their own windows or none)."""
        if self.windows.stride == 0 or spec.kind in (TaskKind.SQUAD, TaskKind.MULTIPLE_CHOICE):
            return None
        return {"stride": self.windows.stride, "combine": self.windows.combine}


class FastIds:
    """Runs the GLUE and SWAG feature converters on FastWordpiece ids instead of token strings.

    ``tokenize`` returns a text's ids; ``convert_tokens_to_ids`` passes ids through and maps the
    special tokens the converters insert ([CLS], [SEP]). The converters only truncate lists, frame
    them and convert, so the features equal the slow path's (tests/test_stages_tokenize.py checks).
    """

    def __init__(self, tokenizer: BertTokenizer):
        self.fast = FastWordpiece(tokenizer)
        self.vocab = tokenizer.vocab

    def tokenize(self, text: str) -> list[int]:
        return self.fast.tokenize_to_ids([text])[0]

    def convert_tokens_to_ids(self, tokens: Sequence[Any]) -> list[int]:
        return [t if isinstance(t, int) else self.vocab[t] for t in tokens]


def _manifest(task: str, split: str, params: TokenizeParams, vocab_sha: str, spec: TaskSpec, source: Path,
              **counts) -> CacheManifest:
    is_squad = spec.kind is TaskKind.SQUAD
    return CacheManifest(
        task=task, split=split, vocab_sha256=vocab_sha, do_lower_case=params.do_lower_case,
        max_seq_length=params.max_seq_length,
        doc_stride=params.doc_stride if is_squad else None,
        max_query_length=params.max_query_length if is_squad else None,
        # source_sha256: evaluate scores SQuAD against the raw dev file, which must be the one read here
        extra={"kind": spec.kind.value, "metric": spec.metric, "labels": list(spec.labels or []) or None,
               "source_sha256": sha256_of(source), "window": params.window(spec)},
        **counts,
    )


def tokenize_split(spec: TaskSpec, task: str, split: str, data: Path, out: Path, tokenizer: BertTokenizer,
                   params: TokenizeParams, vocab_sha: str) -> CacheManifest:
    """Featurise one split of `task` into the cache folder `out`; returns its manifest."""
    examples = spec.processor.get_examples(data, split)
    source = spec.processor.path(data, split)
    if not examples:
        raise ValueError(f"{source}: no examples")
    n = len(examples)
    if spec.kind is TaskKind.SQUAD:
        words = CachedTokenizer(tokenizer)
        training = split == "train"
        features = squad.convert_examples_to_features(
            examples, words, params.max_seq_length, params.doc_stride, params.max_query_length, training)
        windows: dict[int, int] = {}
        for f in features:
            windows[f.example_index] = windows.get(f.example_index, 0) + 1
        cut_query = sum(len(words.tokenize(e.question_text)) > params.max_query_length for e in examples)
        truncated = max(cut_query, sum(count > 1 for count in windows.values()))
        labels = ({"start_positions": [f.start_position for f in features],
                   "end_positions": [f.end_position for f in features]} if training else {})
        metadata = None if training else [
            {"unique_id": f.unique_id, "example_index": f.example_index, "doc_span_index": f.doc_span_index,
             "tokens": f.tokens, "token_to_orig_map": f.token_to_orig_map,
             "token_is_max_context": f.token_is_max_context} for f in features]
        manifest = _manifest(task, split, params, vocab_sha, spec, source, num_examples=n, num_features=len(features),
                             num_truncated=truncated, label_keys=tuple(labels))
        write_cache(out, [f.input_ids for f in features], [f.segment_ids for f in features], labels, manifest, metadata)
        return manifest
    fast = FastIds(tokenizer)
    if spec.kind is TaskKind.MULTIPLE_CHOICE:
        mc = swag.convert_examples_to_features(examples, fast, params.max_seq_length)
        ids = [[c.input_ids for c in f.choices] for f in mc]
        types = [[c.segment_ids for c in f.choices] for f in mc]
        labels = {"labels": [f.label for f in mc]}
        truncated = sum(any(c.truncated for c in f.choices) for f in mc)
        metadata = {"ids": [f.example_id for f in mc]}
        manifest = _manifest(task, split, params, vocab_sha, spec, source, num_examples=n, num_features=n,
                             num_truncated=truncated, label_keys=("labels",), num_choices=len(ids[0]))
    elif params.window(spec):
        windows = convert_examples_to_windows(examples, spec.labels, params.max_seq_length, params.windows.stride,
                                              fast)
        ids, types = [w.input_ids for w in windows], [w.segment_ids for w in windows]
        labels = {"labels": [w.label_id for w in windows]}
        metadata = {"ids": [examples[w.example_index].guid for w in windows],
                    "example_index": [w.example_index for w in windows]}
        cut = {w.example_index for w in windows if w.truncated}  # examples that needed more than one window
        manifest = _manifest(task, split, params, vocab_sha, spec, source, num_examples=n, num_features=len(ids),
                             num_truncated=len(cut), label_keys=("labels",))
    else:
        features = glue.convert_examples_to_features(examples, spec.labels, params.max_seq_length, fast)
        ids, types = [f.input_ids for f in features], [f.segment_ids for f in features]
        labels = {"labels": [f.label_id for f in features]}
        metadata = {"ids": [e.guid for e in examples]}
        manifest = _manifest(task, split, params, vocab_sha, spec, source, num_examples=n, num_features=n,
                             num_truncated=sum(f.truncated for f in features), label_keys=("labels",))
    write_cache(out, ids, types, labels, manifest, metadata)
    return manifest


def check_model_fits(model: Path, vocab: Path, tokenizer: BertTokenizer, params: TokenizeParams,
                     params_file: Path) -> None:
    """Refuse, before any work, features the model could not read: every input is framed with [CLS]
    and [SEP], and no sequence may be longer than the model's position embeddings."""
    missing = [t for t in ("[CLS]", "[SEP]") if t not in tokenizer.vocab]
    if missing:
        raise ValueError(f"{vocab}: no {' or '.join(missing)} token; every input is framed as "
                         "[CLS] A [SEP] B [SEP]: use the vocabulary the model was trained with")
    config_file = model / "config.json"
    if config_file.is_file():
        positions = BertConfig.from_json_file(config_file).max_position_embeddings
        if params.max_seq_length > positions:
            raise ValueError(f"{params_file}: tokenize.max_seq_length {params.max_seq_length} is more than the "
                             f"model's max_position_embeddings ({positions}, {config_file})")


def check_casing(model: Path, tokenizer: BertTokenizer, params: TokenizeParams, params_file: Path) -> None:
    """Refuse a do_lower_case that contradicts the model: its tokenizer_config.json when it has one, else its
    vocab's casing (bert.tokenization.vocab_is_cased). Lower-casing for a cased vocab loses what it was trained
    on; keeping the case for an uncased one turns every capitalised word into [UNK] (19% of MRPC's ids)."""
    config_file = model / "tokenizer_config.json"
    said = read_json_object(config_file).get("do_lower_case") if config_file.is_file() else None
    if isinstance(said, bool):
        evidence, lower = f"{config_file} says do_lower_case: {str(said).lower()}", said
    else:
        cased = vocab_is_cased(tokenizer.vocab)
        if cased is None:
            return
        lower = not cased
        evidence = f"{tokenizer.vocab_file} is {'a cased' if cased else 'an uncased'} vocabulary" + (
            "" if cased else " (no token has an upper-case letter)")
    if lower != params.do_lower_case:
        raise ValueError(f"{params_file}: tokenize.do_lower_case is {str(params.do_lower_case).lower()}, but "
                         f"{evidence}; set tokenize.do_lower_case: {str(lower).lower()} (the model's own casing)")


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = stage_parser("tokenize", __doc__)
    parser.add_argument("--task", required=True)
    parser.add_argument("--data", required=True, type=Path, help="the task's raw data folder (stage download)")
    parser.add_argument("--model", required=True, type=Path, help="the model folder with vocab.txt (stage convert)")
    parser.add_argument("--out", required=True, type=Path, help="the task's feature folder to write")
    args = parser.parse_args(argv)

    def body() -> None:
        params = load_section("tokenize", TokenizeParams, args.params)
        require_input(args.data, "download", f"raw data of {args.task}")
        spec = get_task(args.task, args.params, labels=recorded_labels(args.data))
        vocab = require_input(args.model / "vocab.txt", "convert", "vocabulary")
        tokenizer = BertTokenizer(vocab, do_lower_case=params.do_lower_case)
        check_model_fits(args.model, vocab, tokenizer, params, args.params)
        check_casing(args.model, tokenizer, params, args.params)
        vocab_sha = sha256_of(vocab)
        with atomic_outputs(args.out) as (tmp,):
            tmp.mkdir()
            for split in SPLITS:
                m = tokenize_split(spec, args.task, split, args.data, tmp / split, tokenizer, params, vocab_sha)
                logger.info("%s %s: %d examples -> %d features, %d truncated (max_seq_length %d)",
                            args.task, split, m.num_examples, m.num_features, m.num_truncated, m.max_seq_length)

    return run_stage("tokenize", body, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
