"""Offline smoke run: a tiny WRN, all seven tasks, generated data, minutes on 2 cores.

The generated set (`robust_ssl.data.synthetic`) holds class-dependent shapes,
colours and textures, so accuracy rises well above chance in 3 epochs.
"""

from robust_ssl.configs import default


def get_config():
    config = default.get_config()
    config.data.source = "synthetic"
    config.data.num_train = 1536
    config.data.num_test = 512
    config.model.depth = 10
    config.model.width = 1
    config.tasks = "rotation,color,ir,bir,inpaint,rgb,jigsaw"
    config.train.epochs = 3
    config.train.batch_size = 32
    config.train.eval_batch_size = 256
    config.train.learning_rate = 0.05
    config.train.log_every_steps = 1
    return config
