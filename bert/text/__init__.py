"""Tokenization beyond the public tokenizer (bert/tokenization.py): Google's two stages (wordpiece: BasicTokenizer,
WordpieceTokenizer) and the fast corpus path."""
