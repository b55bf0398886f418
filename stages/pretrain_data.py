"""Stage pretrain_data of the pre-training pipeline: corpus text -> masked LM + next sentence tensors.

    python -m stages.pretrain_data --params pretrain/params.yaml --corpus pretrain/data/corpus \\
        --model pretrain/data/model --out pretrain/data/instances

Google's create_pretraining_data (bert.data.pretraining_data) with the vocab of the model to pre-train.
The last ``instances.dev_documents`` documents of the corpus are held out: ``train`` holds the
instances of the others, made exactly as the original with ``random_seed`` (dupe_factor passes),
``dev`` those of the held-out ones (one pass, seed + 1), for the pre-training stage's MLM / NSP
figures. Each split is a bert.data.cache-format folder with a manifest (see bert.data.pretraining_data).
"""

from __future__ import annotations

import dataclasses
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from tqdm.auto import tqdm

from bert.data.cache import CacheManifest
from bert.io.download import sha256_of
from bert.data.pretraining_data import (
    MLM_LABELS,
    NSP_LABEL,
    Document,
    InstanceOptions,
    create_training_instances,
    instance_to_feature,
    read_documents,
    write_pretraining_cache,
)
from bert.tokenization import BertTokenizer
from bert.io.settings import at_least, between
from stages._lib.common import atomic_outputs, require_input, run_stage, stage_parser
from stages._lib.params import DEFAULT_PRETRAIN_PARAMS, load_section

logger = logging.getLogger("stages.pretrain_data")
CORPUS_FILE = "corpus.txt"
SPLITS = ("train", "dev")


@dataclass(frozen=True)
class InstancesParams:
    """Section ``instances``: the original's flags, plus the held-out documents."""

    max_seq_length: int = field(metadata=at_least(5))
    short_seq_prob: float = field(metadata=between(0.0, 1.0))
    masked_lm_prob: float = field(metadata=between(0.0, 1.0))
    max_predictions_per_seq: int = field(metadata=at_least(1))
    dupe_factor: int = field(metadata=at_least(1))
    whole_word_mask: bool
    do_lower_case: bool
    random_seed: int
    dev_documents: int = field(metadata=at_least(0))

    def options(self, dupe_factor: Optional[int] = None) -> InstanceOptions:
        return InstanceOptions(self.max_seq_length, self.short_seq_prob, self.masked_lm_prob,
                               self.max_predictions_per_seq, dupe_factor or self.dupe_factor, self.whole_word_mask)


def read_corpus(path: Path, tokenizer: BertTokenizer) -> list[Document]:
    """The corpus file's documents of WordPiece sentences (bert.data.pretraining_data.read_documents)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    return read_documents([tqdm(lines, desc="tokenize", unit="line", mininterval=2.0)], tokenizer.tokenize)


def make_split(name: str, documents: Sequence[Document], tokenizer: BertTokenizer, options: InstanceOptions,
               seed: int, out: Path, provenance: dict[str, Any]) -> CacheManifest:
    """Create one split's instances and write its cache folder `out`.

    Returns:
        The manifest written.
    """
    vocab_words = list(tokenizer.vocab.keys())
    instances = create_training_instances(documents, vocab_words, options, random.Random(seed), progress=True)
    features = [instance_to_feature(inst, tokenizer.vocab) for inst in instances]
    manifest = CacheManifest(
        task="pretrain", split=name, vocab_sha256=provenance["vocab_sha256"],
        do_lower_case=tokenizer.do_lower_case, max_seq_length=options.max_seq_length, doc_stride=None,
        max_query_length=None, num_examples=len(documents), num_features=len(features),
        num_truncated=sum(inst.truncated for inst in instances), label_keys=(NSP_LABEL,),
        extra={
            **dataclasses.asdict(options), "random_seed": seed, "corpus_sha256": provenance["corpus_sha256"],
            "sequence_label_keys": [MLM_LABELS], "num_tokens": sum(len(f.input_ids) for f in features),
            "num_predictions": sum(len(inst.masked_lm_positions) for inst in instances),
            "num_random_next": sum(f.next_sentence_label for f in features),
        })
    write_pretraining_cache(out, features, manifest)
    logger.info("%s: %d instances from %d documents (%d truncated, %d random next)", name, len(features),
                len(documents), manifest.num_truncated, manifest.extra["num_random_next"])
    return manifest


def build_instances(params: InstancesParams, corpus_dir: Path, model_dir: Path, out: Path) -> dict[str, CacheManifest]:
    """Tokenize the corpus with the model's vocab and write the train and dev splits under `out`."""
    corpus = require_input(corpus_dir / CORPUS_FILE, "builtin_corpus", "corpus text")
    vocab_file = require_input(model_dir / "vocab.txt", "convert", "model vocab")
    tokenizer = BertTokenizer(vocab_file, do_lower_case=params.do_lower_case)
    documents = read_corpus(corpus, tokenizer)
    held_out = params.dev_documents
    if len(documents) < held_out + 1:
        raise ValueError(f"{corpus}: {len(documents)} non-empty documents, instances.dev_documents holds out "
                         f"{held_out}: expected at least {held_out + 1}")
    provenance = {"vocab_sha256": sha256_of(vocab_file), "corpus_sha256": sha256_of(corpus)}
    cut = len(documents) - held_out
    return {
        "train": make_split("train", documents[:cut], tokenizer, params.options(), params.random_seed,
                            out / "train", provenance),
        "dev": make_split("dev", documents[cut:], tokenizer, params.options(dupe_factor=1),
                          params.random_seed + 1, out / "dev", provenance),
    }


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = stage_parser("pretrain_data", __doc__, DEFAULT_PRETRAIN_PARAMS)
    parser.add_argument("--corpus", required=True, type=Path, help="the corpus folder (corpus.txt)")
    parser.add_argument("--model", required=True, type=Path, help="the model folder whose vocab.txt to use")
    parser.add_argument("--out", required=True, type=Path, help="the instances folder to write (train/, dev/)")
    args = parser.parse_args(argv)

    def body() -> None:
        params = load_section("instances", InstancesParams, args.params)
        with atomic_outputs(args.out) as (tmp,):
            tmp.mkdir()
            build_instances(params, args.corpus, args.model, tmp)

    return run_stage("pretrain_data", body, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
