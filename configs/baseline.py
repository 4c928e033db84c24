"""Table 1, baseline: no self-supervision."""

from configs import default


def get_config():
    config = default.get_config()
    config.tasks = ""
    return config
