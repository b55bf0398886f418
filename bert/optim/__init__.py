"""Optimizers beyond the public BertAdam/OpenAIAdam (bert/optimization.py): LAMB for large batches; and the
learning-rate schedules they all share (schedules: the original's classes and names)."""
