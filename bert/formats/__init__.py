"""Foreign weight formats: Google's TensorFlow checkpoints (name map, reading, writing, whole conversions) and
safe loading of torch's pickles."""
