"""The folder bert.compat puts on sys.path: it holds the ``pytorch_pretrained_bert`` alias package."""
