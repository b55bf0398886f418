"""Optimizers beyond the public BertAdam/OpenAIAdam (bert/optimization.py): LAMB for large batches."""
