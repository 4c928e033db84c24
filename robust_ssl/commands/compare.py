r"""Compares runs: how λ was set, what it cost, clean and corruption accuracy.

  robust-ssl compare runs/automl runs/tune runs/tuned_best
  robust-ssl compare runs/a runs/b --output=reports/a_vs_b.md --names=AutoML,search

Each argument is a workdir of `robust-ssl train` (fixed λ or AutoML) or of
`robust-ssl tune` (a λ search). Prints a markdown table (λ per task,
device-hours, clean accuracy, corruption accuracy where `robust-ssl evaluate`
scored the run) and writes it to --output, with the λ trajectories of all runs
side by side in a PNG of the same name.
"""

import os

from absl import flags

from robust_ssl import cli

# It reads run files and draws with matplotlib: robust_ssl.cli starts no TensorFlow for it.
USES_TENSORFLOW = False
_OUTPUT = flags.DEFINE_string("output", "comparison.md", "Markdown file to write; the PNG goes beside it.")
_NAMES = flags.DEFINE_list("names", None, "Labels of the runs, in order (default: directory names).")


def main(argv):
    from robust_ssl import compare
    from robust_ssl.errors import UserError

    with cli.user_errors():
        if len(argv) < 2:
            raise UserError("give the run directories to compare: robust-ssl compare RUN [RUN ...]")
        text, markdown, png = compare.write_report(argv[1:], _OUTPUT.value, _NAMES.value)
    print(text)
    print(f"wrote {os.path.abspath(markdown)} and {os.path.abspath(png)}")
