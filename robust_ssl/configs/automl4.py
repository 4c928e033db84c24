"""AutoML λ with the paper's four tasks (rotation, colour, IR, BIR): Fig. 2.

Meta-validation is leak-free by default: 1,000 held-out training images
corrupted with the 4 extra CIFAR-10-C corruptions only, so the 15 benchmark
corruptions are never seen by the meta loss. the `paper_automl4` config keeps
the paper's protocol (1% of CIFAR-10-C itself).
"""

from robust_ssl.configs import default


def get_config():
    config = default.get_config()
    config.tasks = "rotation,color,ir,bir"
    config.automl.enabled = True
    config.automl.validation.source = "corrupted_holdout"
    # 1,000 images x 4 corruptions x 5 severities = 20,000 meta-validation images.
    config.automl.validation.holdout = 1000
    return config
