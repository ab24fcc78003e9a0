"""exprun's runner, one folder per stage of the flow: spec -> plan -> trials -> analysis -> reports.

    cli/         the `exprun` commands (app.py: the group and the entry point)
    spec/        reading a spec with positions, and every check of it (loader.load_spec)
    execution/   plan.py, the run loop (run.py), and one process per trial:
                 trial/parent.py starts a trial process, trial/child.py is that process;
                 brokers/ (embedded brokers), drivers/ (clients), measure/ (the books)
    analysis/    statistics.py (Mann-Whitney U, Welch, CIs), anomalies, targets, diff
    reporting.py runs the reporter plugins (package `reporters`) over a run folder

Shared by every stage: errors (exit codes), files (atomic writes), process (child processes),
redaction (secrets), run_folder (the on-disk run), versions.
"""
