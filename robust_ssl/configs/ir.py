"""Table 1, ir: main task + ir with fixed λ = 0.5."""

from robust_ssl.configs import default


def get_config():
    config = default.get_config()
    config.tasks = "ir"
    return config
