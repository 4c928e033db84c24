"""The subcommands of the `robust-ssl` console script, one module each.

Every module defines its absl flags at import time and a `main(argv)` that
reads them and calls a library function. `robust_ssl.cli` imports only the
module of the command it runs, so flags of different commands never meet.
"""

# command -> (module in this package, one-line summary), in the order of the usage text.
COMMANDS = {
    "train": ("train", "train a model (a config by name or file; resumes an interrupted run)"),
    "evaluate": ("evaluate", "score a run on CIFAR-10-C: accuracy, CE/mCE, calibration per cell"),
    "export": ("export", "export a run's classifier as a versioned SavedModel for TF Serving"),
    "tune": ("tune", "search fixed λ with keras-tuner; writes best_config.py"),
    "compare": ("compare", "compare runs and searches: λ, device-hours, clean and corruption accuracy"),
    "study": ("study", "train several recipes under one budget and compare their robustness"),
    "benchmark": ("benchmark", "time training steps per mode and the input pipeline"),
    "show-tasks": ("show_tasks", "draw what each self-supervision task sees (Fig. 1) into a PNG"),
    "plot-lambdas": ("plot_lambdas", "plot λ of each task against the training step (Fig. 2b)"),
    "make-cifar10c": ("make_cifar10c", "write a CIFAR-10-C-style corrupted set from any 32x32 images"),
    "predict": ("predict", "classify image files with a run's model or an export: class and probability"),
    "show-config": ("show_config", "list every config key with its value and meaning (--config=NAME)"),
}
