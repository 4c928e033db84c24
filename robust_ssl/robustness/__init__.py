"""Robustness of a trained classifier on CIFAR-10-C: scoring and reports.

  evaluation.py   scores a model cell by cell (accuracy, CE/mCE, calibration)
                  with the leak guard; `evaluate_run` is `robust-ssl evaluate`
  reports.py      the outputs of an evaluation: CSV, JSON, markdown tables,
                  heat map and comparison chart

`reports` never imports `evaluation`: an evaluation hands it the results (and
the comparison with a baseline) to write.
"""
