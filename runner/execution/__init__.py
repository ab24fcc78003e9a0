"""Stage 2, execution: the plan, the run loop, and each trial in a process of its own.

plan.py expands a spec into ordered trials; run.py starts the brokers and runs the trials,
appending each result to the run folder as it finishes. trial/ is the trial process (request:
the contract both sides share; parent: starts and watches it; child: runs it); brokers/
starts embedded brokers, drivers/ talks to them, measure/ keeps the books inside a trial.
"""
