"""Offline λ-search smoke run: the setting of `smoke_automl.py` with AutoML off.

Same data (1,600 generated images), tiny WRN, the paper's four tasks and the
same meta-validation settings (64 held-out images corrupted with the 4 extra
corruptions), so `robust-ssl tune` scores every fixed-λ trial on exactly the
images AutoML's meta loss uses in `smoke_automl.py`:

  robust-ssl tune --config=smoke_tune --workdir=runs/smoke_tune --max_trials=4
"""

from robust_ssl.configs import smoke_automl


def get_config():
    config = smoke_automl.get_config()
    # `robust-ssl tune` turns AutoML off in every trial anyway; off here too, so that
    # training this file directly gives the fixed-λ (0.5) baseline.
    config.automl.enabled = False
    return config
