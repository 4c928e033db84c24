"""robust_ssl: robust image classifiers through self-supervision with learned λ.

Implements Kim, Lee & Suh (2019), "Improving Model Robustness via Automatically
Incorporating Self-supervision Tasks", on Keras 3 / TensorFlow.

Importing the package registers every Keras-serializable class it defines, so
that a saved run loads with plain `keras.saving.load_model(path)` after
`import robust_ssl`.
"""

import os

# Keras 3 picks its backend from the environment; this package is TensorFlow-only.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"

# The command-line tools hide TensorFlow's C++ start-up logs (--log_level): set
# before the import below brings in TensorFlow.
from robust_ssl import _quiet  # noqa: E402

_quiet.at_import()

# The modules whose classes carry @keras.saving.register_keras_serializable
# (tests/test_cli.py checks that none is missing here).
from robust_ssl import model  # noqa: E402, F401
