"""The four tasks of `automl4` (rotation, colour, IR, BIR), λ by uncertainty weighting.

Kendall, Gal & Cipolla 2018: λ_i = exp(−s_i), s_i a learned log-variance
(docs/weighting.md). Everything else is `automl4`'s: warm-up, meta_every, the
meta optimiser (here it trains s), and the 1,000-image hold-out, which this
method does not read but which stays out of training, so that the methods
compared in a study train on the same images.
"""

from robust_ssl.configs import automl4


def get_config():
    config = automl4.get_config()
    config.automl.method = "uncertainty"
    return config
