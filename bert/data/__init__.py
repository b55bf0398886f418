"""On-disk data: the tokenized feature cache (tensors + manifest) and pre-training instances."""
