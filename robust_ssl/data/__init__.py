"""Input data: sources (tfds, folders, generated) and tf.data pipelines."""
