"""The broker's own view of a trial: read on the run's side, every second of the measured phase."""
