"""AugMix (Hendrycks et al., ICLR 2020) on WRN-40-2: CE on clean images + 12 · JSD.

Follows the AugMix paper's CIFAR recipe: WRN-40-2, SGD with Nesterov momentum
0.9, learning rate 0.1 annealed by a cosine per step to 1e-6, weight decay
5e-4, batch 128, 100 epochs, pad-4 crop and flip before the views; two views
per image (3 chains of 1–3 operations, severity 3, the operations that do not
overlap CIFAR-10-C), JSD weight 12 (`task_weights.augmix`), fixed.

Batch norm as the AugMix code: clean image and both views in one forward pass,
normalised together (`task_options.augmix.joint_bn=True`; False gives the
views a forward of their own). Where it takes the package's behaviour
instead: the views are made by the package's stateless, per-image AugMix in
`tf.data`, and the coupled weight decay is PyTorch's (as in the AugMix code,
which uses torch SGD's `weight_decay`).
"""

from robust_ssl.configs import default


def get_config():
    config = default.get_config()
    config.tasks = "augmix"
    config.task_weights.augmix = 12.0
    config.train.batch_size = 128
    config.train.epochs = 100
    return config
