"""Robustness of a trained classifier on CIFAR-10-C: scoring and reports.

  evaluation.py   `robust-ssl evaluate` end to end (`EvaluationSpec`,
                  `evaluate`): the run's model loaded, scored, reported
  loading.py      the model as a predictor (Keras, SavedModel), the
                  CIFAR-10-C sources and blocks, the input checks
  leak_guard.py   which test images the meta loss saw, left out of scoring
  scoring.py      the scoring loop, cell by cell (`evaluate_robustness`)
  metrics.py      accuracy, ECE, NLL per cell; CE/mCE; against a baseline
  progress.py     the progress over the cells
  adaptation.py   test-time adaptation (bn, tent, ttt, …) of the scored model:
                  the `Adapter` that runs a mode, `predict_cell`
  adaptation_modes.py  the modes by name (`MODES`) and their `Settings`
  adaptation_norm.py   batch norm at test time: the batch-statistics trunk,
                  the weights TENT updates, its entropy
  adaptation_image.py  `ttt`'s per-image steps (crops, flips, probes)
  reports.py      the outputs of an evaluation: CSV, JSON, markdown tables,
                  heat map and comparison chart

`reports` never imports the evaluation: an evaluation hands it the results
(and the comparison with a baseline) to write.
"""
