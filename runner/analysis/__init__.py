"""Stage 3, analysis: from recorded trials to a Report (pure functions, no I/O).

analyse.py builds the report; cells.py groups trials per cell; statistics.py holds the tests
(Mann-Whitney U, Welch) and summaries; anomalies.py and targets.py judge the cells; diff.py
compares two runs.
"""
