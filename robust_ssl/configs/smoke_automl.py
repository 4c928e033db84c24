"""Offline AutoML smoke run: tiny WRN, the paper's four tasks, generated data.

Warm-up of 1 epoch with fixed λ, then a meta step every step on 256 held-out
images corrupted with the 4 extra corruptions. A few minutes on 2 cores.
"""

from robust_ssl.configs import smoke


def get_config():
    config = smoke.get_config()
    config.tasks = "rotation,color,ir,bir"
    config.data.num_train = 1536 + 64
    config.automl.enabled = True
    config.automl.warmup_epochs = 1
    config.automl.validation.source = "corrupted_holdout"
    config.automl.validation.holdout = 64
    return config
