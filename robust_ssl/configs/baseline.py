"""Table 1, baseline: no self-supervision."""

from robust_ssl.configs import default


def get_config():
    config = default.get_config()
    config.tasks = ""
    return config
