"""Searching fixed λ with keras-tuner (`robust-ssl tune`): the baseline that AutoML competes with.

hypermodel.py    what a trial varies (`SearchSpace`), the data it trains on
                 (`load_search_data`: the AutoML meta-validation split) and how
                 it trains (`make_hypermodel`)
search.py        the search, from its settings to the best trial's files
                 (`search`, `summary`); refuses to resume with other settings
tuner.py         the keras-tuner tuner (`make_tuner`, `TUNERS`) and its trial callbacks
resume.py        surviving a kill: state files written whole, a project mended
                 before it is reloaded
recorder.py      search.json's account of time (`Recorder`)
trials.py        the trials as rows: markdown table and trials.csv
best_config.py   best_config.py: the base config + the search's overrides + the best λ
"""
