r"""Plots λ of each task against the training step (the paper's Figure 2b).

  robust-ssl plot-lambdas --workdir=runs/automl
  robust-ssl plot-lambdas --csv=runs/automl/lambdas.csv --output=lambdas.png

Reads <workdir>/lambdas.csv (written during training by
robust_ssl.callbacks.LambdaLogger) and writes <workdir>/lambdas.png (with --csv:
the CSV's name with .png) unless --output says otherwise. A dashed line marks where λ first moves (the end of
the warm-up).
"""

import os

from absl import flags

from robust_ssl import cli

# It reads run files and draws with matplotlib: robust_ssl.cli starts no TensorFlow for it.
USES_TENSORFLOW = False
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory holding lambdas.csv.")
_CSV = flags.DEFINE_string("csv", None, "λ CSV file (instead of --workdir).")
_OUTPUT = flags.DEFINE_string(
    "output", None, "PNG file to write; default <workdir>/lambdas.png (or the CSV path with .png)."
)


def main(argv):
    from robust_ssl import figures, rundir
    from robust_ssl.errors import UserError

    with cli.user_errors():
        cli.no_arguments(argv)
        if bool(_WORKDIR.value) == bool(_CSV.value):
            raise UserError("give exactly one of --workdir=<run directory> or --csv=<lambdas.csv>")
        csv_path = _CSV.value or os.path.join(_WORKDIR.value, rundir.LAMBDAS)
        # <workdir>/lambdas.csv -> <workdir>/lambdas.png; x.csv -> x.png beside it.
        output = _OUTPUT.value or os.path.splitext(csv_path)[0] + ".png"
        path, end = figures.plot_lambdas(csv_path, output)
    print(f"wrote {os.path.abspath(path)}")
    if end is not None:
        print(f"λ first moves after step {end} (end of warm-up)")
