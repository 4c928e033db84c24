"""Table 1, rotation: main task + rotation with fixed λ = 0.5."""

from robust_ssl.configs import default


def get_config():
    config = default.get_config()
    config.tasks = "rotation"
    return config
