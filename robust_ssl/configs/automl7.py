"""AutoML λ with all seven self-supervision tasks (leak-free meta-validation)."""

from robust_ssl.configs import automl4


def get_config():
    config = automl4.get_config()
    config.tasks = "rotation,color,ir,bir,inpaint,rgb,jigsaw"
    return config
