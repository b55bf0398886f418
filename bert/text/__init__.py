"""Tokenization beyond the public tokenizer (bert/tokenization.py): the fast corpus path."""
