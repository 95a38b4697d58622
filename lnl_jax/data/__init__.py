"""Datasets: readers of the real on-disk formats, splits, synthetic faces and the tf.data pipeline."""
