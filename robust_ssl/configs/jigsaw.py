"""Table 1, jigsaw: main task + jigsaw with fixed λ = 0.5."""

from robust_ssl.configs import default


def get_config():
    config = default.get_config()
    config.tasks = "jigsaw"
    return config
