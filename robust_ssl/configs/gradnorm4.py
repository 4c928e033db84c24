"""The four tasks of `automl4` (rotation, colour, IR, BIR), λ by GradNorm.

Chen et al. 2018: λ that equalise the tasks' gradient norms at the trunk's
last convolution, asymmetry α = 1.5, renormalised so that the main weight 1
and the four λ sum to 5 (docs/weighting.md). Everything else is `automl4`'s:
warm-up, meta_every, the meta optimiser, and the 1,000-image hold-out, which
this method does not read but which stays out of training, so that the
methods compared in a study train on the same images.
"""

from robust_ssl.configs import automl4


def get_config():
    config = automl4.get_config()
    config.automl.method = "gradnorm"
    config.automl.method_options.gradnorm.alpha = 1.5
    return config
