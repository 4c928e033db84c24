r"""Plots λ of each task against the training step (the paper's Figure 2b).

  robust-ssl plot-lambdas --workdir=runs/automl
  robust-ssl plot-lambdas --csv=runs/automl/lambdas.csv --output=lambdas.png
  robust-ssl plot-lambdas --output=weighting.png \
      --workdir=runs/study/automl4/seed_0 --workdir=runs/study/automl4/seed_1 \
      --workdir=gradnorm=runs/study/gradnorm4/seed_0

One --workdir: reads <workdir>/lambdas.csv (written during training by
robust_ssl.callbacks.LambdaLogger) and writes <workdir>/lambdas.png (with --csv:
the CSV's name with .png) unless --output says otherwise. A dashed line marks
where λ first moves (the end of the warm-up).

Several --workdir (or a labelled one, `label=directory`): the runs side by
side in --output, one panel per label, each task in the same colour in every
panel, the weighting method (results.json) in each panel's title. Runs under
one label are seeds of one recipe, drawn as their mean with a min–max band; a
study's <recipe>/seed_<s> are labelled <recipe> unless labelled otherwise.
"""

import os

from absl import flags

from robust_ssl import cli

# It reads run files and draws with matplotlib: robust_ssl.cli starts no TensorFlow for it.
USES_TENSORFLOW = False
_WORKDIR = flags.DEFINE_multi_string(
    "workdir",
    None,
    "Run directory holding lambdas.csv, `label=directory` to name its panel; repeat for several runs "
    "side by side (runs under one label are seeds of one panel).",
)
_CSV = flags.DEFINE_string("csv", None, "λ CSV file (instead of --workdir).")
_OUTPUT = flags.DEFINE_string(
    "output",
    None,
    "PNG file to write; default <workdir>/lambdas.png (or the CSV path with .png); "
    "required with several --workdir.",
)
_TITLE = flags.DEFINE_string("title", None, "Title of the figure (default: says what is drawn).")


def main(argv):
    from robust_ssl import figures, rundir
    from robust_ssl.errors import UserError

    with cli.user_errors():
        cli.no_arguments(argv)
        workdirs = _WORKDIR.value or []
        if bool(workdirs) == bool(_CSV.value):
            raise UserError(
                "give --workdir=<run directory> (repeat it for several runs) or --csv=<lambdas.csv>, not both"
            )
        # One unlabelled run: its own figure, beside its lambdas.csv by default.
        single = bool(_CSV.value) or (len(workdirs) == 1 and figures.split_run_spec(workdirs[0])[0] is None)
        if single:
            csv_path = _CSV.value or os.path.join(workdirs[0], rundir.LAMBDAS)
            # <workdir>/lambdas.csv -> <workdir>/lambdas.png; x.csv -> x.png beside it.
            output = _OUTPUT.value or os.path.splitext(csv_path)[0] + ".png"
            path, end = figures.plot_lambdas(csv_path, output, title=_TITLE.value)
        else:
            runs = figures.group_runs(workdirs)
            if not _OUTPUT.value:
                raise UserError("several runs draw into one figure: give --output=<file.png>")
            path, end = figures.plot_lambda_trajectories(runs, _OUTPUT.value, title=_TITLE.value), None
    print(f"wrote {os.path.abspath(path)}")
    if single:
        if end is not None:
            print(f"λ first moves after step {end} (end of warm-up)")
    else:
        for label, dirs in runs.items():
            print(f"{label}: {len(dirs)} run(s)")
