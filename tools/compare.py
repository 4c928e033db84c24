r"""Compares runs: how λ was set, what it cost, clean and corruption accuracy.

  python tools/compare.py runs/automl runs/tune runs/tuned_best
  python tools/compare.py runs/a runs/b --output=reports/a_vs_b.md --names=AutoML,search

Each argument is a workdir of tools/train.py (fixed λ or AutoML) or of
tools/tune.py (a λ search). Prints a markdown table (λ per task, device-hours,
clean accuracy, corruption accuracy where tools/evaluate.py scored the run) and
writes it to --output, with the λ trajectories of all runs side by side in a
PNG of the same name.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from robust_ssl import cli  # noqa: E402

_OUTPUT = flags.DEFINE_string("output", "comparison.md", "Markdown file to write; the PNG goes beside it.")
_NAMES = flags.DEFINE_list("names", None, "Labels of the runs, in order (default: directory names).")


def main(argv):
    from robust_ssl import compare
    from robust_ssl.errors import UserError

    with cli.user_errors():
        if len(argv) < 2:
            raise UserError("give the run directories to compare: tools/compare.py RUN [RUN ...]")
        text, markdown, png = compare.write_report(argv[1:], _OUTPUT.value, _NAMES.value)
    print(text)
    print(f"wrote {os.path.abspath(markdown)} and {os.path.abspath(png)}")


if __name__ == "__main__":
    app.run(main)
