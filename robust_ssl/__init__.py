"""robust_ssl: robust image classifiers through self-supervision with learned λ.

Implements Kim, Lee & Suh (2019), "Improving Model Robustness via Automatically
Incorporating Self-supervision Tasks", on Keras 3 / TensorFlow.
"""

import os

# Keras 3 picks its backend from the environment; this package is TensorFlow-only.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"
