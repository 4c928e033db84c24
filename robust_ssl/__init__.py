"""robust_ssl: robust image classifiers through self-supervision with learned λ.

Implements Kim, Lee & Suh (2019), "Improving Model Robustness via Automatically
Incorporating Self-supervision Tasks", on Keras 3 / TensorFlow.

`import robust_ssl` is light: it imports neither TensorFlow nor Keras, so
`robust-ssl --help` and a program that only reads run files start at once.
Each module imports what it needs. The model class registers itself with
Keras where it is defined: a saved run loads with plain
`keras.saving.load_model(path)` after `import robust_ssl.model`, or with
`robust_ssl.rundir.load_model(path)`, which imports it.
"""

import os

# Keras 3 picks its backend from the environment when it is first imported;
# this package is TensorFlow-only. Only a default: nothing is imported here.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"
