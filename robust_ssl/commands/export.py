r"""Exports a trained robust_ssl classifier as a versioned SavedModel for TF Serving.

  robust-ssl export --workdir=runs/smoke --export_dir=exports/robust_ssl
  robust-ssl export --workdir=runs/rot --export_dir=exports/rot --with_ssl_heads
  robust-ssl export --workdir=runs/rot --export_dir=exports/rot --with_batch_stats
  robust-ssl export --workdir=runs/rot --export_dir=exports/rot --version=1 --overwrite

The model is <workdir>/model.keras, else the newest <workdir>/checkpoints/epoch_NNN.keras
(`robust_ssl.rundir.load_model`).
It is written to <export_dir>/<version>/ (default version: max existing + 1).
See docs/serving.md of the repository for the signatures and how to serve them.
"""

import os

from absl import flags

from robust_ssl import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Training run directory (or a .keras model file).")
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "Base directory of the versioned exports.")
_VERSION = flags.DEFINE_integer(
    "version", None, "Version to write; default: max existing + 1.", lower_bound=1
)
_WITH_SSL_HEADS = flags.DEFINE_bool(
    "with_ssl_heads", False, "Add the `ssl_heads` signature (rotation, rgb, jigsaw heads)."
)
_WITH_BATCH_STATS = flags.DEFINE_bool(
    "with_batch_stats",
    False,
    "Add `serving_batch_stats`: batch norm with the request batch's statistics (send many images per request).",
)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing version.")
_VERIFY = flags.DEFINE_bool(
    "verify", True, "Reload the export and compare its probabilities with the Keras model's."
)
flags.mark_flags_as_required(["workdir", "export_dir"])


def main(argv):
    from robust_ssl import export, killpoints, rundir

    with cli.user_errors():
        cli.no_arguments(argv)
        model = rundir.load_model(_WORKDIR.value)
        path = export.export_saved_model(
            model,
            _EXPORT_DIR.value,
            version=_VERSION.value,
            with_ssl_heads=_WITH_SSL_HEADS.value,
            overwrite=_OVERWRITE.value,
            with_batch_stats=_WITH_BATCH_STATS.value,
        )
        killpoints.mark("export.written")  # the benchmark's time to the first result
    print(f"exported version {os.path.basename(path)} to {path}")
    for line in export.describe(path):
        print(f"  {line}")
    if _VERIFY.value:
        diff = export.verify_export(path, model, export.sample_images(model))
        print(f"verified: max |probability difference| vs the Keras model = {diff:.3g}")
