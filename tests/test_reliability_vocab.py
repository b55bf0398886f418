"""Broken vocabularies through the tokenizer, ``bert extract-features`` and the tokenize stage.

A vocab with a repeated token, without [UNK] (or the [CLS] / [SEP] every input is framed with), in
another encoding, empty, or not belonging to the model is refused in one line naming the file (and
the line where there is one); nothing is written.
"""

from __future__ import annotations

import shutil

import pytest

from bert.tokenization import BertTokenizer
from reliability_helpers import BAD_INPUT, SMALL_DATA, assert_one_clear_error, assert_stage_failed, tally, write_params

BASE = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "##s", ".", ","]


def _lines(words):
    return "".join(w + "\n" for w in words).encode()


CASES = {  # case -> (vocab.txt bytes, fragments of the error)
    "repeated token": (_lines(BASE + ["cat"]), ["line 14", "duplicate token 'cat'", "first at line 7"]),
    "two blank lines": (_lines(BASE[:8] + ["", ""] + BASE[8:]), ["line 10", "duplicate token ''"]),
    "no [UNK]": (_lines([w for w in BASE if w != "[UNK]"]), ["no [UNK] token"]),
    "empty file": (b"", ["no [UNK] token in 0 lines"]),
    "latin-1 bytes": (_lines(BASE).replace(b"mat", b"m\xe2t"), ["not UTF-8"]),
    "utf-16": ("".join(w + "\n" for w in BASE).encode("utf-16"), ["not UTF-8"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_tokenizer_refuses(tmp_path, case):
    with tally(BAD_INPUT, f"vocab.txt {case}: BertTokenizer"):
        content, fragments = CASES[case]
        (tmp_path / "vocab.txt").write_bytes(content)
        with pytest.raises(ValueError) as info:
            BertTokenizer.from_pretrained(tmp_path)
        message = str(info.value)
        assert "\n" not in message and str(tmp_path / "vocab.txt") in message, message
        for fragment in fragments:
            assert fragment in message, (fragment, message)


def test_windows_line_endings_and_long_tokens_load_the_same(tmp_path):
    with tally(BAD_INPUT, "vocab.txt with CRLF line endings and a 100 000-character token"):
        words = BASE + ["x" * 100_000]
        (tmp_path / "lf.txt").write_bytes(_lines(words))
        (tmp_path / "crlf.txt").write_bytes(_lines(words).replace(b"\n", b"\r\n"))
        lf, crlf = BertTokenizer(tmp_path / "lf.txt"), BertTokenizer(tmp_path / "crlf.txt")
        assert lf.vocab == crlf.vocab and len(lf.vocab) == len(words)
        assert crlf.tokenize("The cats sat.") == ["the", "cat", "##s", "sat", "."]


def _model_with_vocab(tmp_path, minilm_dir, content: bytes):
    model = tmp_path / "model"
    model.mkdir()
    for name in ("config.json", "model.safetensors"):
        (model / name).symlink_to(minilm_dir / name)
    (model / "vocab.txt").write_bytes(content)
    return model


EXTRACT_CASES = {
    **{case: (content, fragments) for case, (content, fragments) in CASES.items()},
    "no [CLS]": (_lines([w for w in BASE if w != "[CLS]"]), ["[CLS]"]),
    "no [SEP]": (_lines([w for w in BASE if w != "[SEP]"]), ["[SEP]"]),
    "bigger than the model": (_lines(BASE + [f"w{i}" for i in range(30_600)]),
                              ["30613 tokens", "vocab_size 30522"]),
}


@pytest.mark.parametrize("case", sorted(EXTRACT_CASES))
def test_extract_features_refuses(tmp_path, capsys, minilm_dir, case):
    from bert.cli.commands import main

    with tally(BAD_INPUT, f"vocab.txt {case}: bert extract-features"):
        content, fragments = EXTRACT_CASES[case]
        model = _model_with_vocab(tmp_path, minilm_dir, content)
        (tmp_path / "in.txt").write_text("the cat sat on the mat.\n")
        rc = main(["extract-features", "-q", "--input-file", str(tmp_path / "in.txt"),
                   "--output-file", str(tmp_path / "o.jsonl"), "--model", str(model)])
        assert_one_clear_error(rc, capsys.readouterr().err, str(model / "vocab.txt"), *fragments)
        assert not (tmp_path / "o.jsonl").exists()


@pytest.fixture(scope="module")
def raw_pair(tmp_path_factory):
    from stages import download

    root = tmp_path_factory.mktemp("raw")
    params = write_params(root / "params.yaml", **SMALL_DATA)
    for task in ("demo-pair", "demo-qa"):
        assert download.main(["--params", str(params), "--task", task, "--out", str(root / task)]) == 0
    return root


STAGE_CASES = ["repeated token", "no [UNK]", "latin-1 bytes"]


@pytest.mark.parametrize("case", STAGE_CASES)
def test_tokenize_stage_refuses(tmp_path, caplog, raw_pair, minilm_dir, case):
    from stages import tokenize

    with tally(BAD_INPUT, f"vocab.txt {case}: tokenize stage"):
        content, fragments = CASES[case]
        model = _model_with_vocab(tmp_path, minilm_dir, content)
        rc = tokenize.main(["--params", str(raw_pair / "params.yaml"), "--task", "demo-pair", "--data",
                            str(raw_pair / "demo-pair"), "--model", str(model), "--out", str(tmp_path / "f" / "x")])
        assert_stage_failed(rc, caplog, str(model / "vocab.txt"), *fragments)
        assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("task", ["demo-pair", "demo-qa"])
@pytest.mark.parametrize("missing", ["[CLS]", "[SEP]"])
def test_tokenize_stage_without_special_tokens(tmp_path, caplog, raw_pair, minilm_dir, task, missing):
    """Every input is framed with [CLS] and [SEP]: a vocab without them cannot make features."""
    from stages import tokenize

    with tally(BAD_INPUT, f"vocab.txt without {missing}: tokenize stage, {task}"):
        vocab = (minilm_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
        model = _model_with_vocab(tmp_path, minilm_dir, _lines([w for w in vocab if w != missing]))
        rc = tokenize.main(["--params", str(raw_pair / "params.yaml"), "--task", task, "--data",
                            str(raw_pair / task), "--model", str(model), "--out", str(tmp_path / "f" / "x")])
        assert_stage_failed(rc, caplog, str(model / "vocab.txt"), f"no {missing} token")
        assert not (tmp_path / "f").exists()


def test_broken_tokenizer_config(tmp_path, capsys, minilm_dir):
    from bert.cli.commands import main

    with tally(BAD_INPUT, "tokenizer_config.json not JSON / do_lower_case not a bool: bert extract-features"):
        model = _model_with_vocab(tmp_path, minilm_dir, (minilm_dir / "vocab.txt").read_bytes())
        (tmp_path / "in.txt").write_text("hello\n")
        args = ["extract-features", "-q", "--input-file", str(tmp_path / "in.txt"), "--output-file",
                str(tmp_path / "o.jsonl"), "--model", str(model)]
        for content, fragment in (('{"do_lower_case": tru', "not valid JSON"),
                                  ('{"do_lower_case": "yes"}', "'do_lower_case' must be true or false")):
            (model / "tokenizer_config.json").write_text(content)
            assert_one_clear_error(main(args), capsys.readouterr().err, "tokenizer_config.json", fragment)
        assert not (tmp_path / "o.jsonl").exists()


def test_vocab_is_not_a_file(tmp_path, capsys, minilm_dir):
    shutil.copytree(minilm_dir, tmp_path / "model", ignore=shutil.ignore_patterns("vocab.txt"))
    (tmp_path / "model" / "vocab.txt").mkdir()
    with tally(BAD_INPUT, "vocab.txt is a folder: bert extract-features"):
        from bert.cli.commands import main

        (tmp_path / "in.txt").write_text("hello\n")
        rc = main(["extract-features", "-q", "--input-file", str(tmp_path / "in.txt"), "--output-file",
                   str(tmp_path / "o.jsonl"), "--model", str(tmp_path / "model")])
        assert_one_clear_error(rc, capsys.readouterr().err, "vocab.txt")


def test_uncased_vocab_with_symbol_letters_is_uncased(minilm_dir):
    """[#19 M10] 'ℝ' is an upper-case letter to Unicode with no lower case: lower-casing keeps it, so it says nothing of
    the vocab's casing (the default model's vocab holds 'ℝ' and '##ℝ')."""
    from bert.tokenization import load_vocab, vocab_is_cased

    with tally(BAD_INPUT, "casing check of the default (uncased) vocab, which holds 'ℝ'"):
        assert vocab_is_cased(load_vocab(minilm_dir / "vocab.txt")) is False


@pytest.mark.parametrize("config", ["tokenizer_config.json", "vocab only"])
def test_tokenize_stage_refuses_keeping_case_for_an_uncased_model(tmp_path, caplog, raw_pair, minilm_dir, config):
    """[#19 M10] do_lower_case: false with the uncased default model turns 19% of MRPC's ids into [UNK]."""
    from stages import convert, tokenize

    with tally(BAD_INPUT, f"tokenize.do_lower_case: false with the uncased default model ({config})"):
        params = write_params(tmp_path / "params.yaml", **SMALL_DATA, **{"do_lower_case: true": "do_lower_case: false"})
        model = tmp_path / "model"
        if config == "tokenizer_config.json":
            assert convert.main(["--params", str(params), "--out", str(model)]) == 0  # the default model.name
            assert (model / "tokenizer_config.json").is_file()
            evidence = str(model / "tokenizer_config.json")
        else:
            model = _model_with_vocab(tmp_path, minilm_dir, (minilm_dir / "vocab.txt").read_bytes())
            evidence = "an uncased vocabulary"
        rc = tokenize.main(["--params", str(params), "--task", "demo-pair", "--data", str(raw_pair / "demo-pair"),
                            "--model", str(model), "--out", str(tmp_path / "f" / "x")])
        assert_stage_failed(rc, caplog, str(params), "tokenize.do_lower_case is false", evidence,
                            "set tokenize.do_lower_case: true")
        assert not (tmp_path / "f").exists()
