"""Table 1, inpaint: main task + inpaint with fixed λ = 0.5."""

from robust_ssl.configs import default


def get_config():
    config = default.get_config()
    config.tasks = "inpaint"
    return config
