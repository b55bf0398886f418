"""What bert/modeling.py builds on: the config, the packed (real-tokens-only) execution plan, the fast CPU
dropout mask, and reading, adapting and writing weights."""
