"""Table 1, rgb: main task + rgb with fixed λ = 0.5."""

from robust_ssl.configs import default


def get_config():
    config = default.get_config()
    config.tasks = "rgb"
    return config
