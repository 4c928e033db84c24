"""Searching fixed λ with keras-tuner (`robust-ssl tune`): the baseline that AutoML competes with.

hypermodel.py    what a trial varies (`SearchSpace`), the data it trains on
                 (`load_search_data`: the AutoML meta-validation split) and how
                 it trains (`make_hypermodel`)
search.py        the search: the tuner, search.json's account of time,
                 resuming, and the best trial's files (`search`, `summary`)
trials.py        the trials as rows: markdown table and trials.csv
best_config.py   best_config.py: the base config + the search's overrides + the best λ
"""
