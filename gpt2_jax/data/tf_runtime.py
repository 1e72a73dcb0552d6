"""TensorFlow for input pipelines only: imported lazily, kept off accelerators, few threads.

TensorFlow is imported by the data package alone and only when a tf.data pipeline or a TFDS
dataset is used (the import costs seconds; the model and the command line never pay it).
Before TensorFlow's runtime starts, `tensorflow()` hides every GPU and TPU from it (it would
otherwise reserve accelerator memory that JAX needs) and bounds its inter- and intra-op thread
pools, so the input pipeline leaves the host's cores to JAX and to other processes.

References:
  JAX FAQ / big_vision input pipeline (tf.config.set_visible_devices([], "GPU")).
"""

from __future__ import annotations

import os

DEFAULT_THREADS = 2
_tf = None


def tensorflow(threads: int = DEFAULT_THREADS):
    """The configured `tensorflow` module (imported and configured once per process)."""
    global _tf
    if _tf is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no banner about CPU instructions
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # input pipelines do no float math; no oneDNN notice
        import tensorflow as tf

        for kind in ("GPU", "TPU"):
            try:
                tf.config.set_visible_devices([], kind)
            except (RuntimeError, ValueError):
                pass  # no such device type, or the runtime already started (then it is too late)
        try:
            tf.config.threading.set_inter_op_parallelism_threads(threads)
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        except RuntimeError:
            pass  # someone else started TensorFlow's runtime first; its settings stay
        _tf = tf
    return _tf
