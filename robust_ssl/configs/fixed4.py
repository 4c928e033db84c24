"""The paper's four tasks (rotation, colour, IR, BIR) with fixed λ = 0.5: AutoML's baseline."""

from robust_ssl.configs import default


def get_config():
    config = default.get_config()
    config.tasks = "rotation,color,ir,bir"
    return config
