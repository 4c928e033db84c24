"""The four tasks of `automl4` (rotation, colour, IR, BIR), λ by Auto-Lambda's finite difference.

Liu, Liu & Davison 2022: the lookahead's hypergradient approximated by a
central difference of the task losses at ψ ± εv, ε = 0.01 / ‖v‖
(docs/weighting.md). Everything else is `automl4`'s, so the two rows differ
only in exact vs finite-difference hypergradient.
"""

from robust_ssl.configs import automl4


def get_config():
    config = automl4.get_config()
    config.automl.method = "auto_lambda"
    config.automl.method_options.auto_lambda.epsilon = 0.01
    return config
