"""Stage 0, the command line: `exprun` and its commands (run, plan, validate, new, report, ...).

app.py holds the click group and the entry point; one module per family of commands.
"""
