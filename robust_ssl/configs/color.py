"""Table 1, color: main task + color with fixed λ = 0.5."""

from robust_ssl.configs import default


def get_config():
    config = default.get_config()
    config.tasks = "color"
    return config
