"""Input side of satracker-jax: data set readers, the synthetic generator and the tf.data sampler.

`readers`, `synthetic` and `crop`-free helpers import without TensorFlow (eval and the tracker use
them); only `sampler` and `tfds_synthetic` import TensorFlow (and `files`, lazily, for a data root
that is a bucket URL).
"""
