"""AutoML λ over the paper's four self-supervised tasks and AugMix consistency.

Rotation, colourisation, IR, BIR and `augmix`, with λ learned by the
lookahead meta-gradient after the warm-up (the package's defaults: the
paper's schedule, β = 0.01, meta batch 25). λ starts at 0.5 for the
self-supervised tasks and at 12 (the AugMix paper's weight) for the JSD term.
Meta-validation is the corrupted hold-out: 1,000 training images, stratified
by class, corrupted with the 4 extra CIFAR-10-C corruptions (speckle noise,
Gaussian blur, spatter, saturate), so none of the 15 benchmark corruptions is
seen by the meta loss.
"""

from robust_ssl.configs import default


def get_config():
    config = default.get_config()
    config.tasks = "rotation,color,ir,bir,augmix"
    config.task_weights.augmix = 12.0
    config.automl.enabled = True
    config.automl.validation.source = "corrupted_holdout"
    config.automl.validation.holdout = 1000
    return config
