"""Training data: token shard files, corpus preparation and the batch loader.

TensorFlow (for the tf.data pipeline) is imported lazily inside this package only.
"""
