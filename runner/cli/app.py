"""The `exprun` command group and its entry point: every failure one message and exit code."""

from __future__ import annotations

import os
import signal
import sys
import warnings
from types import FrameType

import click

from runner.cli.authoring import new, schema, validate
from runner.cli.history import history
from runner.cli.reports import diff_command, report_command
from runner.cli.run import plan, run
from runner.errors import EXIT_BAD_INPUT, EXIT_CODES_HELP, EXIT_INTERRUPTED, ExprunError, SpecError
from runner.execution.brokers import stop_all_brokers
from runner.process import (
    become_subreaper,
    kill_descendants,
    reap_children,
    stop_multiprocessing_helpers,
)


class _SpecShorthand(click.Group):
    """`exprun SPEC.yaml ...` means `exprun run SPEC.yaml ...`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_SpecShorthand, epilog=EXIT_CODES_HELP)
@click.version_option(package_name="exprun")
def cli() -> None:
    """Run declarative message-broker experiments and compare variants with statistics.

    `exprun SPEC.yaml` is short for `exprun run SPEC.yaml`.
    """


for command in (run, plan, validate, schema, new, report_command, diff_command, history):
    cli.add_command(command)


def _warning_line(message: Warning | str, *args: object, **kwargs: object) -> None:
    click.echo(f"exprun: warning: {message}", err=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """First Ctrl-C or SIGTERM: stop in order (finished trials kept, brokers stopped)."""
    signal.signal(signal.SIGINT, _exit_now)
    signal.signal(signal.SIGTERM, _exit_now)
    raise KeyboardInterrupt


def _exit_now(signum: int, frame: FrameType | None) -> None:
    """Second one: exit at once, killing (not stopping) everything we started, and reaping it."""
    os.write(2, b"\nexprun: interrupted again: exiting now\n")
    kill_descendants()
    os._exit(EXIT_INTERRUPTED)


def main() -> None:
    """Console entry point: one readable message and a documented exit code on failure."""
    warnings.showwarning = _warning_line
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    # A file-size limit (or a full quota) then fails the write with an error we report,
    # instead of killing exprun with its brokers still to stop.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # Orphans of our tree (a NATS publisher whose trial process was killed) come back to us.
    become_subreaper()
    try:
        _run_cli()
    finally:
        # Past this point everything is stopped: a late signal must not turn the exit status
        # into "killed by SIGINT" (Python restores the default handlers while it shuts down).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # No process of ours outlives us, not even as a zombie: stop and wait for each.
        stop_all_brokers()
        stop_multiprocessing_helpers()
        reap_children()


def _run_cli() -> None:
    try:
        cli.main(standalone_mode=False)
    except ExprunError as error:
        click.echo(f"exprun: {error}" if not isinstance(error, SpecError) else str(error), err=True)
        sys.exit(error.exit_code)
    except click.exceptions.Abort:
        click.echo("exprun: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as error:
        error.show()
        sys.exit(EXIT_BAD_INPUT if error.exit_code == 2 else error.exit_code)
    except KeyboardInterrupt:
        click.echo("exprun: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
