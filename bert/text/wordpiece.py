"""The two stages of Google's WordPiece tokenization (google-research/bert ``tokenization.py``), and the
character classes they use; bert.tokenization's BertTokenizer runs them and exports them under their
original names.

    text ──BasicTokenizer──► words ──WordpieceTokenizer──► pieces
    "UNwant\u00e9d,running" ► un want ed , running ► un ##want ##ed , runn ##ing
"""

from __future__ import annotations

import unicodedata
from typing import Iterable

NEVER_SPLIT = ("[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]")


def convert_to_unicode(text: str | bytes) -> str:
    """Return `text` as str, decoding bytes as UTF-8 and dropping invalid bytes (as the original).

    Args:
        text: a str or UTF-8 bytes.
    Returns:
        The text as str.
    """
    if isinstance(text, str):
        return text
    if isinstance(text, bytes):
        return text.decode("utf-8", "ignore")
    raise ValueError(f"Unsupported string type: {type(text).__name__} (expected str or bytes)")


def whitespace_tokenize(text: str) -> list[str]:
    """Split on whitespace (Python's notion: also U+2028/U+2029), dropping empty strings."""
    return text.split()


# ----------------------------------------------------------------------------- character classes
def _is_whitespace(char: str) -> bool:
    """\\t, \\n, \\r and the Unicode space separators (Zs), NBSP included."""
    if char == " " or char == "\t" or char == "\n" or char == "\r":
        return True
    return unicodedata.category(char) == "Zs"


def _is_control(char: str) -> bool:
    """Categories C* (control, format, surrogate, private use, unassigned), except \\t \\n \\r."""
    if char == "\t" or char == "\n" or char == "\r":
        return False
    return unicodedata.category(char).startswith("C")


def _is_punctuation(char: str) -> bool:
    """Unicode P* categories plus every non-alphanumeric printable ASCII symbol ($, ^, `, ...)."""
    cp = ord(char)
    if (33 <= cp <= 47) or (58 <= cp <= 64) or (91 <= cp <= 96) or (123 <= cp <= 126):
        return True
    return unicodedata.category(char).startswith("P")


def _is_chinese_char(cp: int) -> bool:
    """Whether `cp` is in a CJK Unified Ideographs block (each such character becomes a word).

    Not Hangul, not kana: those languages put spaces between words.
    """
    if cp < 0x3400:  # fast exit for Latin text
        return False
    return (
        (0x4E00 <= cp <= 0x9FFF)
        or (0x3400 <= cp <= 0x4DBF)
        or (0x20000 <= cp <= 0x2A6DF)
        or (0x2A700 <= cp <= 0x2B73F)
        or (0x2B740 <= cp <= 0x2B81F)
        or (0x2B820 <= cp <= 0x2CEAF)
        or (0xF900 <= cp <= 0xFAFF)
        or (0x2F800 <= cp <= 0x2FA1F)
    )


# ----------------------------------------------------------------------------- the two stages
class BasicTokenizer:
    """Cleaning, CJK splitting, lower-casing, accent stripping and punctuation splitting."""

    def __init__(
        self,
        do_lower_case: bool = True,
        never_split: Iterable[str] = NEVER_SPLIT,
        tokenize_chinese_chars: bool = True,
        strip_accents: bool | None = None,
    ):
        """Args:
        do_lower_case: lower-case every word (except never_split ones).
        never_split: whitespace-delimited words kept whole and in their case.
        tokenize_chinese_chars: put each CJK ideograph in a word of its own.
        strip_accents: NFD and drop combining marks (Mn); None means "as do_lower_case".
        """
        self.do_lower_case = do_lower_case
        self.never_split = frozenset(never_split or ())
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.strip_accents = strip_accents
        self._strip = do_lower_case if strip_accents is None else bool(strip_accents)

    def tokenize(self, text: str | bytes) -> list[str]:
        """Split `text` into words and punctuation marks.

        Args:
            text: str (or UTF-8 bytes).
        Returns:
            The words, e.g. "Hello, World!" -> ["hello", ",", "world", "!"].
        """
        text = self._clean_text(convert_to_unicode(text))
        # Added by Google on 2018-11-01 for the multilingual and Chinese models; harmless for English.
        if self.tokenize_chinese_chars:
            text = self._tokenize_chinese_chars(text)
        split_tokens = []
        for token in whitespace_tokenize(text):
            split_tokens.extend(self.split_word(token))
        return whitespace_tokenize(" ".join(split_tokens))

    def split_word(self, token: str) -> list[str]:
        """Case-fold and punctuation-split one whitespace-delimited word of cleaned text.

        Args:
            token: a word without whitespace, already cleaned.
        Returns:
            Its pieces (a never_split word stays whole).
        """
        if token in self.never_split:
            return [token]
        if self.do_lower_case:
            token = token.lower()
        if self._strip:
            token = self._run_strip_accents(token)
        return self._run_split_on_punc(token)

    @staticmethod
    def _run_strip_accents(text: str) -> str:
        """Strip accents: NFD, then drop the nonspacing marks (Mn): "café" -> "cafe"."""
        text = unicodedata.normalize("NFD", text)
        return "".join(char for char in text if unicodedata.category(char) != "Mn")

    @staticmethod
    def _run_split_on_punc(text: str) -> list[str]:
        """Make every punctuation character a word of its own: "don't" -> ["don", "'", "t"]."""
        output: list[list[str]] = []
        start_new_word = True
        for char in text:
            if _is_punctuation(char):
                output.append([char])
                start_new_word = True
            else:
                if start_new_word:
                    output.append([])
                start_new_word = False
                output[-1].append(char)
        return ["".join(x) for x in output]

    @staticmethod
    def _tokenize_chinese_chars(text: str) -> str:
        """Put spaces around every CJK ideograph."""
        output = []
        for char in text:
            if _is_chinese_char(ord(char)):
                output.extend((" ", char, " "))
            else:
                output.append(char)
        return "".join(output)

    @staticmethod
    def _clean_text(text: str) -> str:
        """Drop NUL, U+FFFD and control characters; turn every whitespace character into " "."""
        output = []
        for char in text:
            cp = ord(char)
            if cp == 0 or cp == 0xFFFD or _is_control(char):
                continue
            output.append(" " if _is_whitespace(char) else char)
        return "".join(output)


class WordpieceTokenizer:
    """Greedy longest-match-first split of words into vocabulary pieces."""

    def __init__(self, vocab: dict[str, int], unk_token: str = "[UNK]", max_input_chars_per_word: int = 100):
        """Args:
        vocab: token -> id (only membership is used).
        unk_token: what a word becomes when it cannot be split or is too long.
        max_input_chars_per_word: longer words become unk_token whole.
        """
        self.vocab = vocab
        self.unk_token = unk_token
        self.max_input_chars_per_word = max_input_chars_per_word

    def tokenize(self, text: str) -> list[str]:
        """Split whitespace-separated words into pieces.

        Args:
            text: words from BasicTokenizer, e.g. "unaffable".
        Returns:
            Pieces, e.g. ["un", "##aff", "##able"]; [unk] for a word with an unmatched rest.
        """
        output_tokens = []
        for token in whitespace_tokenize(convert_to_unicode(text)):
            if len(token) > self.max_input_chars_per_word:
                output_tokens.append(self.unk_token)
                continue
            sub_tokens = []
            start = 0
            while start < len(token):
                end = len(token)
                cur_substr = None
                while start < end:
                    substr = token[start:end]
                    if start > 0:
                        substr = "##" + substr
                    if substr in self.vocab:
                        cur_substr = substr
                        break
                    end -= 1
                if cur_substr is None:  # one unmatched rest makes the whole word unknown
                    sub_tokens = [self.unk_token]
                    break
                sub_tokens.append(cur_substr)
                start = end
            output_tokens.extend(sub_tokens)
        return output_tokens
