"""Fitting a pair of texts into a length budget as Google's run_classifier does (``_truncate_seq_pair``):
its own module, so that readers of task files need not import the tokenizer."""

from __future__ import annotations


def truncate_seq_pair(tokens_a: list, tokens_b: list, max_length: int) -> None:
    """Truncate in place, one token at a time from the longer list (B on ties), as Google does.

    Args:
        tokens_a: first sequence.
        tokens_b: second sequence.
        max_length: the most tokens both may have together.
    """
    while len(tokens_a) + len(tokens_b) > max_length:
        if len(tokens_a) > len(tokens_b):
            tokens_a.pop()
        else:
            tokens_b.pop()
