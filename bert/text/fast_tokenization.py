"""A fast batch path to WordPiece ids: the same ids as ``BertTokenizer``, bit for bit.

Why it is exact: after cleaning and CJK spacing, the original algorithm treats every
whitespace-delimited word on its own (case folding, accent stripping, punctuation splitting,
WordPiece). So the ids of a text are the concatenation of the ids of its words, and a word's ids
can be computed once, by the slow path's own per-word code, and remembered:

    text ──clean + CJK spacing (str.translate)──► str.split() ──► word ──cache──► ids (chained)
                                                                     └─miss─► BasicTokenizer.split_word
                                                                              + WordpieceTokenizer

Corpora repeat their words (the, of, "and", ...), so nearly every word is a dict hit and the loop
runs in C (``map`` over ``dict.__getitem__``). Cleaning is one ``str.translate`` with a table
filled lazily by the slow path's character predicates (so its output is the original's cleaned,
CJK-spaced text, character for character), and is skipped for printable ASCII text, which it
cannot change.

Use: ``FastWordpiece(BertTokenizer(...)).tokenize_to_ids(["text one", "text two"]) -> [[ids], [ids]]``.
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterable

from bert.tokenization import (
    BertTokenizer,
    _is_chinese_char,
    _is_control,
    _is_whitespace,
    convert_to_unicode,
)


class _CleanTable(dict):
    """A str.translate table doing BasicTokenizer's _clean_text and CJK spacing in one pass.

    Each code point is classified once, by the slow path's own predicates, then remembered, so
    translating is a C loop of dict hits.
    """

    def __init__(self, tokenize_chinese_chars: bool):
        super().__init__()
        self.tokenize_chinese_chars = tokenize_chinese_chars

    def __missing__(self, cp: int) -> str | None:
        char = chr(cp)
        if cp == 0 or cp == 0xFFFD or _is_control(char):
            out = None  # deleted
        elif _is_whitespace(char):
            out = " "
        elif self.tokenize_chinese_chars and _is_chinese_char(cp):
            out = f" {char} "
        else:
            out = char
        self[cp] = out
        return out


class _WordIds(dict):
    """word -> ids, computing (and remembering) a missing word with `compute`; cleared when full."""

    def __init__(self, compute: Callable[[str], list[int]], max_size: int):
        super().__init__()
        self.compute = compute
        self.max_size = max_size

    def __missing__(self, word: str) -> list[int]:
        if len(self) >= self.max_size:  # bounded memory on endless corpora; a refill is cheap
            self.clear()
        ids = self[word] = self.compute(word)
        return ids


class FastWordpiece:
    """Batch tokenization to ids with a word cache; identical to BertTokenizer.tokenize + convert_tokens_to_ids."""

    def __init__(self, tokenizer: BertTokenizer, max_cache_words: int = 1 << 20):
        """Args:
        tokenizer: the BertTokenizer whose vocab and options (casing, never_split, ...) to follow.
        max_cache_words: words remembered before the cache starts afresh.
        """
        self.tokenizer = tokenizer
        self._words = _WordIds(self._compute_word_ids, max_cache_words)
        self._clean = _CleanTable(tokenizer.basic_tokenizer.tokenize_chinese_chars)

    def _compute_word_ids(self, word: str) -> list[int]:
        """Ids of one whitespace-delimited word of cleaned text, by the slow path's own code."""
        pieces = []
        for token in self.tokenizer.basic_tokenizer.split_word(word):
            pieces.extend(self.tokenizer.wordpiece_tokenizer.tokenize(token))
        vocab = self.tokenizer.vocab
        return [vocab[piece] for piece in pieces]

    def words(self, text: str) -> list[str]:
        """The whitespace-delimited words BasicTokenizer sees after cleaning and CJK spacing.

        Args:
            text: raw text.
        Returns:
            The words, before case folding and punctuation splitting.
        """
        # Printable ASCII (no control, tab or newline) is left as it is by cleaning; the rest is
        # translated. Whitespace of any kind becomes " " either way when split.
        if not (text.isascii() and text.isprintable()):
            text = text.translate(self._clean)
        return text.split()

    def tokenize_to_ids(self, texts: Iterable[str]) -> list[list[int]]:
        """WordPiece ids (no [CLS]/[SEP]) of each text.

        Args:
            texts: raw texts (str, or UTF-8 bytes).
        Returns:
            One list of ids per text, equal to tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text)).
        """
        lookup = self._words.__getitem__
        chain = itertools.chain.from_iterable
        out = []
        for text in texts:
            if not isinstance(text, str):
                text = convert_to_unicode(text)
            out.append(list(chain(map(lookup, self.words(text)))))
        return out

    def cache_info(self) -> dict:
        """How many words the cache holds and its limit."""
        return {"words": len(self._words), "max_size": self._words.max_size}


class FastTokenIds:
    """FastWordpiece behind the Tokenizer protocol of bert.tasks' feature converters: ``tokenize`` returns a text's
    ids, ``convert_tokens_to_ids`` passes ids through and maps the special tokens the converters insert ([CLS],
    [SEP]). The converters only cut, frame and convert lists, so their features equal the slow path's."""

    def __init__(self, tokenizer: BertTokenizer):
        self.fast = FastWordpiece(tokenizer)
        self.vocab = tokenizer.vocab

    def tokenize(self, text: str) -> list[int]:
        return self.fast.tokenize_to_ids([text])[0]

    def convert_tokens_to_ids(self, tokens) -> list[int]:
        return [t if isinstance(t, int) else self.vocab[t] for t in tokens]
