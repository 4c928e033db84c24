"""The paper's AutoML protocol exactly: meta-validation on 1% of CIFAR-10-C.

The first 100 images of every (corruption, severity) block of the 19 CIFAR-10-C
corruptions (9,500 images) form the meta-validation set, as the authors' code;
`robust-ssl evaluate` then scores only the remaining images. Needs CIFAR-10-C
from tfds (`cifar10_corrupted`) or an official `.npy` directory
(`--config.automl.validation.cifar10c_source=npy
 --config.automl.validation.cifar10c_dir=<dir>`).
"""

from robust_ssl.configs import automl4


def get_config():
    config = automl4.get_config()
    config.automl.validation.source = "cifar10c"
    config.automl.validation.cifar10c_source = "tfds"
    config.automl.validation.per_block = 100
    return config
