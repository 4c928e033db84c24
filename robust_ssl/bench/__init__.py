"""Benchmarks of training (`robust-ssl benchmark`).

benchmark.py   step time per training mode, input-pipeline rate, the pieces of a step
flops.py       the FLOP count of a traced graph (the one module that uses
               TensorFlow internals, see there)
"""
