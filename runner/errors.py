"""User-facing failures and the exit codes they map to (documented in README and --help)."""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_TRIALS_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INFRASTRUCTURE = 3
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\b
Exit codes:
  0    all trials ok (and targets met under --check-targets)
  1    finished with failed trials (or unmet targets under --check-targets)
  2    bad input: invalid spec, unknown option value, missing file
  3    broker or infrastructure failure
  130  interrupted
"""


class ExprunError(Exception):
    """An error the CLI prints as one readable message, with its exit code."""

    exit_code = EXIT_INFRASTRUCTURE


@dataclass(frozen=True)
class SpecIssue:
    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.path}: {self.message}"


class SpecError(ExprunError):
    """A spec that does not validate; every issue is located in its file."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, issues: list[SpecIssue]) -> None:
        super().__init__("\n".join(map(str, issues)))
        self.issues = issues


class BadInputError(ExprunError):
    exit_code = EXIT_BAD_INPUT
