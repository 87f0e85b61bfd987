"""ringlab experiment runner: suites as data, runner, results, reports, compare.

Entry point: experiments/run.py (or bin/ringlab). See experiments/README.md.
"""
