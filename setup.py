"""Installable package for robust_ssl (plain setuptools, no Bazel)."""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "tensorflow==2.21.*",
    "keras==3.15.*",
    "tensorflow-datasets>=4.9",
    # tfds prepares a download through etils' epath, which needs these (not
    # pulled in by tensorflow-datasets 4.9.10 itself).
    "importlib_resources",
    "etils[epath]",
    "keras-tuner>=1.4,<1.5",
    "scikit-learn>=1.3",  # keras-tuner's bayesian oracle
    "absl-py>=2.0",
    "ml-collections>=1.0",
    "matplotlib>=3.8",
    # TF 2.21 no longer pulls TensorBoard in, yet keras.callbacks.TensorBoard and
    # keras-tuner need it.
    "tensorboard>=2.20",
    "numpy",
    "scipy",
    "pillow",  # JPEG and pixelate corruptions
]

setup(
    name="robust_ssl",
    version="0.1.0",
    description=(
        "Robust image classifiers trained with self-supervised auxiliary tasks "
        "whose loss weights are learned by a lookahead meta-gradient."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # robust_ssl.configs (the experiment configs) and robust_ssl.commands (the
    # console script's subcommands) are subpackages of plain modules.
    packages=find_packages(include=["robust_ssl", "robust_ssl.*"]),
    install_requires=INSTALL_REQUIRES,
    entry_points={"console_scripts": ["robust-ssl = robust_ssl.cli:main"]},
    extras_require={
        "test": ["pytest>=8", "scikit-image>=0.22", "ruff>=0.5"],
        "gpu": ["tensorflow[and-cuda]==2.21.*"],
    },
)
