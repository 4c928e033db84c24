"""Benchmarks of training (`robust-ssl benchmark`).

benchmark.py   the run: every mode (in subprocesses), the pipeline, the breakdowns
modes.py       what to time: the modes, the settings, a mode's config and data
runner.py      one mode's step timed: ms/step, images/s, FLOPs, memory, load
pipeline.py    input-pipeline rate and the task transforms' cost
breakdown.py   the pieces of a step timed apart
measure.py     timing statistics, peak memory, cores, load, versions
report.py      the markdown tables and benchmark.json / benchmark.md
flops.py       the FLOP count of a traced graph (the one module that uses
               TensorFlow internals, see there)
"""
