"""WordPiece tokenization exactly as Google's BERT ``tokenization.py`` does it.

The algorithm is the original one (google-research/bert, with pytorch-pretrained-bert's
``never_split`` and HF's ``strip_accents`` / ``tokenize_chinese_chars`` options) running on Python's
``unicodedata``: its two stages are in ``bert.text.wordpiece``, BertTokenizer (vocabulary, ids, special
tokens, loading and saving) is here; ``bert.text.fast_tokenization`` gives the same ids much faster for
whole corpora.

    text ──BasicTokenizer──► words ──WordpieceTokenizer──► pieces ──vocab──► ids
    "UNwant\u00e9d,running" ► un want ed , running ► un ##want ##ed , runn ##ing
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlparse

from bert.file_utils import cached_path
from bert.text.truncation import truncate_seq_pair  # noqa: F401 (a public name here too)
from bert.io.releases import archive_map
from bert.text.wordpiece import (  # noqa: F401  (the two stages' own module; here under their original names)
    NEVER_SPLIT,
    BasicTokenizer,
    WordpieceTokenizer,
    _is_chinese_char,
    _is_control,
    _is_punctuation,
    _is_whitespace,
    convert_to_unicode,
    whitespace_tokenize,
)

logger = logging.getLogger(__name__)

VOCAB_NAME = "vocab.txt"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
# The original's names: every shortcut name -> the archive bert.io.hub downloads (its vocab.txt is inside; the
# original's S3 addresses are gone), and the positions of each model (how long a sequence may be).
PRETRAINED_VOCAB_ARCHIVE_MAP = archive_map()
PRETRAINED_VOCAB_POSITIONAL_EMBEDDINGS_SIZE_MAP = {name: 512 for name in PRETRAINED_VOCAB_ARCHIVE_MAP}
MAX_LEN = 512  # BERT's number of position embeddings
NO_MAX_LEN = int(1e12)  # the original's max_len when none is given: no warning on length


def load_vocab(vocab_file: str | os.PathLike) -> "collections.OrderedDict[str, int]":
    """Read a one-token-per-line vocabulary file; the line number (from 0) is the id.

    Args:
        vocab_file: path of vocab.txt (UTF-8).
    Returns:
        OrderedDict token -> id.
    Raises:
        ValueError: the file is not UTF-8, a token appears twice, or [UNK] is missing.
    """
    vocab: collections.OrderedDict[str, int] = collections.OrderedDict()
    try:
        with open(vocab_file, "r", encoding="utf-8", newline="\n") as reader:
            lines = reader.readlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{vocab_file}: not UTF-8 text ({e})") from e
    for index, line in enumerate(lines):
        token = line.strip()  # the original strips, so "\r\n" files load the same
        if token in vocab:
            raise ValueError(
                f"{vocab_file}, line {index + 1}: duplicate token {token!r} "
                f"(first at line {vocab[token] + 1}); every token must be unique"
            )
        vocab[token] = index
    if "[UNK]" not in vocab:
        raise ValueError(f"{vocab_file}: no [UNK] token in {len(vocab)} lines; a BERT vocab needs one")
    return vocab


def vocab_is_cased(vocab: Iterable[str]) -> bool | None:
    """Guess from a vocab whether its model was trained on cased text.

    Uncased vocabs (made from lower-cased text) hold no upper-case letters outside the
    bracketed special tokens; cased ones hold thousands ("The", "New", ...). A letter counts as upper
    case only when lower-casing changes it: uncased vocabs keep symbols such as 'ℝ' (an upper-case
    letter to Unicode, with no lower case), which lower-casing leaves as they are.

    Args:
        vocab: the tokens.
    Returns:
        True (cased), False (uncased) or None when unclear (a few upper-case tokens).
    """
    cased = lettered = 0
    for token in vocab:
        if token.startswith("[") and token.endswith("]"):
            continue
        if any(c.isalpha() for c in token):
            lettered += 1
            cased += any(c.isupper() and c.lower() != c for c in token)
    if cased == 0:
        return False
    if cased > 0.05 * lettered:
        return True
    return None


def validate_case_matches_vocab(vocab: Iterable[str], do_lower_case: bool, vocab_file: str = "") -> None:
    """Warn when the casing flag contradicts the vocab, as Google's validate_case_matches_checkpoint.

    Args:
        vocab: the tokens.
        do_lower_case: the flag the tokenizer will use.
        vocab_file: named in the warning.
    """
    cased = vocab_is_cased(vocab)
    if cased is False and not do_lower_case:
        logger.warning(
            "%s looks like an uncased vocab (no token has an upper-case letter) but do_lower_case=False: "
            "capitalised words will not match how the model was pre-trained; pass do_lower_case=True",
            vocab_file,
        )
    elif cased is True and do_lower_case:
        logger.warning(
            "%s looks like a cased vocab but do_lower_case=True: the case the model was pre-trained "
            "with is thrown away; pass do_lower_case=False",
            vocab_file,
        )


@dataclasses.dataclass
class Encoding:
    """One model input: [CLS] A [SEP] (B [SEP]) as ids, segment ids and attention mask."""

    input_ids: list[int]
    token_type_ids: list[int]
    attention_mask: list[int]


# Contractions and punctuation glued back on decoding (the `tokenizers` WordPiece decoder's cleanup).
_DECODE_CLEANUP = (
    (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
    (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
)  # fmt: skip


class BertTokenizer:
    """End-to-end tokenization: BasicTokenizer, then WordpieceTokenizer, then ids."""

    def __init__(
        self,
        vocab_file: str | os.PathLike,
        do_lower_case: bool = True,
        max_len: int | None = None,
        do_basic_tokenize: bool = True,
        never_split: Iterable[str] = NEVER_SPLIT,
        *,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
    ):
        """Args:
        vocab_file: vocab.txt, one token per line.
        do_lower_case: True for uncased models; a mismatch with the vocab's casing logs a warning.
        max_len: sequences longer than this log a warning (None: no limit, as the original; encode()
            then cuts at 512, BERT's positions).
        do_basic_tokenize: run BasicTokenizer before WordPiece (False: WordPiece on whitespace-split text).
        never_split: whitespace-delimited words kept whole (special tokens).
        strip_accents: None follows do_lower_case.
        tokenize_chinese_chars: split CJK ideographs into single-character words.
        """
        if not os.path.isfile(vocab_file):
            raise ValueError(f"{vocab_file}: no such vocabulary file (expected a vocab.txt path). To load the "
                             "vocabulary of a pretrained model use BertTokenizer.from_pretrained(NAME_OR_FOLDER)")
        self.vocab_file = str(vocab_file)
        self.vocab = load_vocab(vocab_file)
        self.ids_to_tokens = collections.OrderedDict((i, tok) for tok, i in self.vocab.items())
        self.do_basic_tokenize = do_basic_tokenize
        self.basic_tokenizer = BasicTokenizer(
            do_lower_case=do_lower_case,
            never_split=never_split,
            tokenize_chinese_chars=tokenize_chinese_chars,
            strip_accents=strip_accents,
        )
        self.wordpiece_tokenizer = WordpieceTokenizer(vocab=self.vocab, unk_token="[UNK]")
        self.max_len = NO_MAX_LEN if max_len is None else int(max_len)
        self._encode_max_length = MAX_LEN if max_len is None else self.max_len
        validate_case_matches_vocab(self.vocab, do_lower_case, self.vocab_file)

    @property
    def do_lower_case(self) -> bool:
        """Whether text is lower-cased before WordPiece."""
        return self.basic_tokenizer.do_lower_case

    @property
    def vocab_size(self) -> int:
        """Number of tokens in the vocab."""
        return len(self.vocab)

    def tokenize(self, text: str | bytes) -> list[str]:
        """Split text into WordPiece tokens.

        Args:
            text: str (or UTF-8 bytes).
        Returns:
            Tokens, e.g. "UNwant\u00e9d,running" -> ["un", "##want", "##ed", ",", "runn", "##ing"].
        """
        if not self.do_basic_tokenize:
            return self.wordpiece_tokenizer.tokenize(text)
        split_tokens = []
        for token in self.basic_tokenizer.tokenize(text):
            split_tokens.extend(self.wordpiece_tokenizer.tokenize(token))
        return split_tokens

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        """Map tokens to ids; a token outside the vocab maps to [UNK]'s id.

        Args:
            tokens: WordPiece tokens.
        Returns:
            Their ids (a warning is logged beyond max_len).
        """
        ids = self._lookup(tokens)
        if len(ids) > self.max_len:
            logger.warning(
                "Token indices sequence length is longer than the specified maximum sequence length "
                "for this BERT model (%d > %d). Running this sequence through BERT will result in "
                "indexing errors",
                len(ids),
                self.max_len,
            )
        return ids

    def _lookup(self, tokens: Iterable[str]) -> list[int]:
        unk = self.vocab["[UNK]"]
        return [self.vocab.get(token, unk) for token in tokens]

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        """Map ids back to tokens.

        Args:
            ids: ids in [0, vocab_size).
        Returns:
            The tokens.
        Raises:
            ValueError: an id outside the vocab.
        """
        tokens = []
        for i in ids:
            token = self.ids_to_tokens.get(int(i))
            if token is None:
                raise ValueError(f"id {i} is not in the vocab {self.vocab_file} (size {len(self.vocab)})")
            tokens.append(token)
        return tokens

    def encode(
        self,
        text_a: str,
        text_b: str | None = None,
        max_length: int | None = None,
        truncation: bool = True,
    ) -> Encoding:
        """Build one model input (unpadded).

        # tokens:         [CLS] is this jack ##son ##ville ? [SEP] no it is not . [SEP]
        # token_type_ids:   0   0  0    0    0     0       0   0   1  1  1  1   1   1

        Args:
            text_a: first text.
            text_b: optional second text (a pair even when empty).
            max_length: total length with special tokens; default max_len if it was given, else 512.
            truncation: cut the longer text first (Google's _truncate_seq_pair) to fit max_length.
        Returns:
            Encoding with input_ids, token_type_ids and attention_mask (all ones).
        Raises:
            ValueError: max_length too small to hold the special tokens.
        """
        ids_a = self._lookup(self.tokenize(text_a))  # no length warning before truncation
        ids_b = None if text_b is None else self._lookup(self.tokenize(text_b))
        return self.build_encoding(ids_a, ids_b, max_length, truncation)

    def build_encoding(
        self, ids_a: list[int], ids_b: list[int] | None = None, max_length: int | None = None, truncation: bool = True
    ) -> Encoding:
        """Frame already converted ids (e.g. from FastWordpiece) as encode() does; arguments as encode()."""
        max_length = self._encode_max_length if max_length is None else max_length
        n_special = 2 if ids_b is None else 3
        ids_a, ids_b = list(ids_a), None if ids_b is None else list(ids_b)
        if truncation:
            if max_length < n_special:
                raise ValueError(f"max_length={max_length} cannot hold the {n_special} special tokens")
            truncate_seq_pair(ids_a, [] if ids_b is None else ids_b, max_length - n_special)
        cls, sep = self.vocab["[CLS]"], self.vocab["[SEP]"]
        input_ids = [cls, *ids_a, sep] + ([] if ids_b is None else [*ids_b, sep])
        token_type_ids = [0] * (len(ids_a) + 2) + [1] * (len(input_ids) - len(ids_a) - 2)
        if len(input_ids) > self.max_len:
            logger.warning("sequence of %d tokens is longer than max_len=%d", len(input_ids), self.max_len)
        return Encoding(input_ids, token_type_ids, [1] * len(input_ids))

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Turn ids back into text: glue ## pieces, re-attach punctuation and contractions.

        Args:
            ids: token ids.
            skip_special_tokens: drop [CLS], [SEP], [PAD], [UNK], [MASK] and never_split tokens.
        Returns:
            The text ("[CLS] un ##want ##ed , running [SEP]" -> "unwanted, running").
        """
        tokens = self.convert_ids_to_tokens(ids)
        if skip_special_tokens:
            special = self.basic_tokenizer.never_split.union(NEVER_SPLIT)
            tokens = [t for t in tokens if t not in special]
        out = []
        for i, token in enumerate(tokens):
            if i > 0:
                token = token[2:] if token.startswith("##") else " " + token
            for dirty, clean in _DECODE_CLEANUP:
                token = token.replace(dirty, clean)
            out.append(token)
        return "".join(out)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write vocab.txt and tokenizer_config.json (do_lower_case, ...) atomically.

        Args:
            directory: created if missing.
        Returns:
            The vocab.txt path.
        """
        from bert.io.fileio import atomic_write_text

        directory = Path(directory)
        ordered = sorted(self.vocab.items(), key=lambda kv: kv[1])
        if [i for _, i in ordered] != list(range(len(ordered))):
            raise ValueError(f"vocab of {self.vocab_file} has non-consecutive ids; refusing to save")
        atomic_write_text(directory / VOCAB_NAME, "".join(tok + "\n" for tok, _ in ordered))
        config = {
            "do_lower_case": self.do_lower_case,
            "strip_accents": self.basic_tokenizer.strip_accents,
            "tokenize_chinese_chars": self.basic_tokenizer.tokenize_chinese_chars,
            "model_max_length": self.max_len,
        }
        atomic_write_text(directory / TOKENIZER_CONFIG_NAME, json.dumps(config, indent=2) + "\n")
        return directory / VOCAB_NAME

    def save_vocabulary(self, vocab_path: str | os.PathLike) -> str:
        """Write the vocabulary, one token per line in id order (atomically), as the original.

        Args:
            vocab_path: a folder (the file is then ``vocab.txt`` in it) or a file path.
        Returns:
            The path of the file written.
        """
        from bert.io.fileio import atomic_write_text

        vocab_file = os.path.join(vocab_path, VOCAB_NAME) if os.path.isdir(vocab_path) else os.fspath(vocab_path)
        ordered = sorted(self.vocab.items(), key=lambda kv: kv[1])
        if [i for _, i in ordered] != list(range(len(ordered))):
            logger.warning("Saving vocabulary to %s: vocabulary indices are not consecutive. Please check that the "
                           "vocabulary is not corrupted!", vocab_file)
        atomic_write_text(Path(vocab_file), "".join(tok + "\n" for tok, _ in ordered))
        return vocab_file

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike,
                        cache_dir: str | os.PathLike | None = None, *inputs: Any, **kwargs: Any) -> "BertTokenizer":
        """Load from a folder holding vocab.txt, a vocab file (path or URL), or a model name known to bert.io.hub.

        do_lower_case, when not given, comes from the folder's tokenizer_config.json, else from the
        vocab's casing (an uncased vocab lower-cases). For the original's seven shortcut names it follows
        the name, as the original does: ``-cased`` models never lower-case, the others always (a
        contradicting do_lower_case is overridden with a warning); their max_len is at most 512.

        Args:
            pretrained_model_name_or_path: folder, vocab.txt path or URL, or name (e.g. "bert-base-uncased").
            cache_dir: where bert.io.hub caches downloads.
            inputs, kwargs: passed to BertTokenizer (do_lower_case, max_len, never_split, ...).
        Returns:
            The tokenizer.
        Raises:
            ValueError: no vocabulary there (the original logged an error and returned None).
        """
        name = str(pretrained_model_name_or_path)
        if name in PRETRAINED_VOCAB_ARCHIVE_MAP and not Path(name).exists():
            _follow_name_casing(name, kwargs)
            kwargs["max_len"] = min(kwargs.get("max_len") or NO_MAX_LEN,
                                    PRETRAINED_VOCAB_POSITIONAL_EMBEDDINGS_SIZE_MAP[name])
        if urlparse(name).scheme in ("http", "https", "s3"):
            name = cached_path(name, cache_dir=cache_dir)
        path = Path(name)
        if path.is_file():
            vocab_file, folder = path, path.parent
        else:
            if not path.is_dir():
                from bert.io.hub import (
                    resolve_model_dir,  # lazy: downloads are not a tokenizer concern
                )

                path = Path(resolve_model_dir(name, cache_dir))
            vocab_file, folder = path / VOCAB_NAME, path
            if not vocab_file.is_file():
                raise ValueError(f"{path}: no {VOCAB_NAME} in this folder")
        config = _read_tokenizer_config(folder / TOKENIZER_CONFIG_NAME)
        do_lower_case = kwargs.pop("do_lower_case", None)
        if do_lower_case is None and not inputs:
            do_lower_case = config.get("do_lower_case")
            if do_lower_case is None:
                do_lower_case = vocab_is_cased(load_vocab(vocab_file)) is not True
        if do_lower_case is not None:
            kwargs["do_lower_case"] = bool(do_lower_case)
        for key in ("strip_accents", "tokenize_chinese_chars"):
            if config.get(key) is not None:
                kwargs.setdefault(key, config[key])
        if isinstance(config.get("model_max_length"), int) and config["model_max_length"] < 10**6:
            kwargs.setdefault("max_len", config["model_max_length"])
        return cls(vocab_file, *inputs, **kwargs)


def _follow_name_casing(name: str, kwargs: dict) -> None:
    """The original's rule for its shortcut names: the name decides do_lower_case (with a warning when the
    caller asked for the other)."""
    cased = "-cased" in name
    if cased and kwargs.get("do_lower_case", True):
        if "do_lower_case" in kwargs:
            logger.warning("The pre-trained model you are loading is a cased model but you have not set "
                           "`do_lower_case` to False. We are setting `do_lower_case=False` for you but "
                           "you may want to check this behavior.")
        kwargs["do_lower_case"] = False
    elif not cased and not kwargs.get("do_lower_case", True):
        logger.warning("The pre-trained model you are loading is an uncased model but you have set "
                       "`do_lower_case` to False. We are setting `do_lower_case=True` for you "
                       "but you may want to check this behavior.")
        kwargs["do_lower_case"] = True


def _read_tokenizer_config(path: Path) -> dict:
    """The settings in a tokenizer_config.json, or {} when there is none."""
    if not path.is_file():
        return {}
    from bert.io.jsonfile import read_json_object

    config = read_json_object(path)
    for key in ("do_lower_case", "strip_accents", "tokenize_chinese_chars"):
        if key in config and config[key] is not None and not isinstance(config[key], bool):
            raise ValueError(f"{path}: key {key!r} must be true or false, got {config[key]!r}")
    return config
