"""Paper hyper-parameters (Kim, Lee & Suh 2019, Sec. 3-4 and A.1).

Every other config imports this one and changes little. Override anything on
the command line, e.g. `--config.train.epochs=1 --config.tasks=rotation,color`.
"""

import ml_collections
from ml_collections import config_dict

from robust_ssl.tasks import TASKS
from robust_ssl.weighting import METHODS


def get_config():
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.source = "tfds"  # "tfds" | "folder" | "synthetic"
    config.data.name = "cifar10"  # any 32x32 tfds classification set, e.g. cifar100
    config.data.data_dir = ""  # tfds data_dir ("" = tfds default)
    config.data.manual_dir = ""  # tfds manual_dir for offline archives
    config.data.download = True
    config.data.folder = ""  # source=folder: <folder>/{train,test}/<class>/*.jpg
    # source=folder: decode the training images into memory ("auto": when they
    # take at most 512 MiB as uint8) or stream them from disk per batch.
    config.data.in_memory = config_dict.FieldReference("auto", field_type=object)
    config.data.skip_bad_images = False  # source=folder: leave unreadable images out (counted)
    config.data.test_fraction = 0.1  # source=folder without test/: held-out share
    config.data.num_train = 2000  # source=synthetic
    config.data.num_test = 500
    config.data.num_classes = 10
    config.data.augment = True  # pad-4 random crop + horizontal flip
    # Leave out of training the N images an AutoML run of the same seed holds
    # out for its meta loss (stratified, drawn by the seed): recipes compared
    # in a study then train on the same images. 0 = train on all.
    config.data.exclude_holdout = 0
    # (height, width) every source's images are resized to (tfds CIFAR-10 is
    # 32x32 already); e.g. --config.data.image_size=64,64. The CIFAR-10-C
    # corruptions are defined for 32x32 only.
    config.data.image_size = (32, 32)

    config.model = ml_collections.ConfigDict()
    # "wrn" (the paper's WideResNet), a keras.applications model name built
    # untrained at the data's image size (e.g. "ResNet50V2", "MobileNetV3Small",
    # "EfficientNetV2B0"), or "module.path:function" (function(image_shape) ->
    # keras.Model returning [N, F] features).
    config.model.backbone = "wrn"
    config.model.depth = 40  # wrn: WRN-40-2 has 2,243,546 parameters with the FC(128, 10) head
    config.model.width = 2
    config.model.dropout = 0.0
    # All-reduce batch-norm statistics across replicas (exact N-replica ==
    # 1-device equivalence); off = per-replica statistics, cheaper.
    config.model.sync_batch_norm = False

    # "none" | "mirrored" (local GPUs, or `devices`) | "multi_worker" (TF_CONFIG)
    config.distribute = "none"
    config.devices = ""  # mirrored: e.g. "/gpu:0,/gpu:1"; "" = all local GPUs

    # Comma-separated task names, "" for the baseline (no self-supervision).
    config.tasks = ""
    # λ of each task (fixed, or the starting point of AutoML). Paper: 0.5.
    config.task_weights = ml_collections.ConfigDict(
        {name: task.default_weight for name, task in TASKS.items()}
    )
    config.task_options = ml_collections.ConfigDict(
        {name: dict(task.DEFAULT_OPTIONS) for name, task in TASKS.items()}
    )

    config.train = ml_collections.ConfigDict()
    # May be raised on a finished (or interrupted) run to continue it: the
    # cosine schedule is then recomputed over the new total, so the learning
    # rate goes up again from where the old schedule had brought it.
    config.train.epochs = 100
    config.train.batch_size = 64
    config.train.eval_batch_size = 500
    config.train.steps_per_epoch = 0  # 0 = one pass over the training set
    config.train.learning_rate = 0.1  # cosine annealing per step to min_learning_rate
    config.train.min_learning_rate = 1e-6
    config.train.momentum = 0.9
    config.train.nesterov = True
    config.train.weight_decay = 5e-4
    # XLA: "auto" = on a single GPU/TPU; off on CPUs, where it slows these steps
    # down (docs/performance.md), and under tf.distribute (Keras' rule).
    # True/False force it; True works under MirroredStrategy too.
    config.train.jit_compile = config_dict.FieldReference("auto", field_type=object)
    # Keras dtype policy: "auto" | "float32" | "mixed_bfloat16" | "mixed_float16" | "float64".
    # "auto" = mixed_bfloat16 where the device computes bfloat16 natively (GPU of
    # compute capability >= 8.0, TPU, CPU with AVX512_BF16 or AMX), else float32
    # (robust_ssl/precision.py); config.json records what it resolved to, and a
    # resumed run keeps that.
    config.train.precision = "auto"
    # Same seed, same numbers: TensorFlow op determinism and single-threaded op
    # pools (about 2x slower on a 2-core CPU; README: what is bit-reproducible).
    config.train.deterministic = False
    config.train.eval_every_epoch = True  # clean test accuracy in the per-epoch log
    config.train.log_every_steps = 10  # λ trajectory (lambdas.csv) resolution
    # Checkpoints (checkpoints/) after every epoch, and within an epoch every
    # `checkpoint_every_steps` global steps (0 = off) or once
    # `checkpoint_every_minutes` passed since the last one (0 = off); a run
    # resumes exactly from either kind. One WRN-40-2 checkpoint (weights, λ,
    # optimiser state) is 18.4 MB and takes 0.5-1.1 s to write (busy 2-core
    # CPU), so one every 15 minutes costs about 0.1% of the run's time.
    # The newest `keep_checkpoints` (of both kinds) are kept; these three may
    # change when a run is resumed.
    config.train.checkpoint_every_steps = 0
    config.train.checkpoint_every_minutes = 15.0
    config.train.keep_checkpoints = 2
    # "auto": a Keras progress bar (1) on a terminal, one line per epoch (2)
    # when the output is redirected; 0 = silent.
    config.train.verbose = config_dict.FieldReference("auto", field_type=object)
    config.train.overwrite = False  # allow a workdir that holds a different run

    config.automl = ml_collections.ConfigDict()
    config.automl.enabled = False
    # How λ is learned (docs/weighting.md): "lookahead" (the paper's meta-gradient)
    # | "uncertainty" (Kendall et al. 2018) | "gradnorm" (Chen et al. 2018)
    # | "auto_lambda" (the lookahead by Liu et al. 2022's finite difference).
    # Warm-up, meta_every, meta_lr and meta_optimizer apply to every method.
    config.automl.method = "lookahead"
    # Each method's options, e.g. --config.automl.method_options.gradnorm.alpha=1.5
    config.automl.method_options = ml_collections.ConfigDict(
        {name: dict(method.DEFAULT_OPTIONS) for name, method in METHODS.items()}
    )
    config.automl.mode = "fast"  # lookahead: "fast" (exact first-order) | "naive" (Algorithm 1 literally)
    config.automl.warmup_epochs = 5  # τ: fixed λ before the first meta step
    config.automl.meta_every = 1  # meta step every k-th training step
    config.automl.meta_lr = 0.01  # β
    config.automl.meta_optimizer = "sgd"  # "sgd" | "adam"
    config.automl.meta_batch_size = 25
    config.automl.alpha = "multiplier"  # lookahead step: lr / base lr (reference) | "lr"
    config.automl.validation = ml_collections.ConfigDict()
    # "train_holdout": a clean held-out part of the training set (no test data);
    # "corrupted_holdout": that part corrupted with `corruptions` (default: the 4
    #   extra CIFAR-10-C corruptions, so the 15 benchmark ones stay unseen);
    # "cifar10c": the paper's first `per_block` images of each CIFAR-10-C block.
    config.automl.validation.source = "train_holdout"
    config.automl.validation.holdout = 1000
    config.automl.validation.corruptions = "speckle_noise,gaussian_blur,spatter,saturate"
    config.automl.validation.severities = "1,2,3,4,5"
    config.automl.validation.cifar10c_source = "tfds"  # "tfds" | "npy"
    config.automl.validation.cifar10c_dir = ""  # npy directory or tfds data_dir
    config.automl.validation.per_block = 100
    return config
