"""Table 1, bir: main task + bir with fixed λ = 0.5."""

from robust_ssl.configs import default


def get_config():
    config = default.get_config()
    config.tasks = "bir"
    return config
