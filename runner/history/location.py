"""Where the results store is: `--store`, else $EXPRUN_STORE, else an SQLite file in the user's
data folder; a file path, `sqlite:///PATH` or `postgresql://...`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_data_path
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from runner.errors import BadInputError
from runner.history.names import STORE_VARIABLE

DEFAULT_FILE = "history.sqlite"
SCHEMES = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg"}


@dataclass(frozen=True)
class StoreLocation:
    """A store's URL, and whether the user asked for it (then a failure is theirs to see)."""

    url: URL
    explicit: bool

    @property
    def shown(self) -> str:
        """The URL as messages show it: never with its password."""
        return self.url.render_as_string(hide_password=True)

    @property
    def sqlite_file(self) -> Path | None:
        if self.url.get_backend_name() != "sqlite" or not self.url.database:
            return None
        return Path(self.url.database)


def default_store_file() -> Path:
    """The user's own store, where the platform keeps application data."""
    return user_data_path("exprun", appauthor=False) / DEFAULT_FILE


def store_location(option: str | None) -> StoreLocation:
    """The store `--store` names, or $EXPRUN_STORE, or the default file."""
    if option:
        return StoreLocation(parse_store(option, "--store"), explicit=True)
    from_environment = os.environ.get(STORE_VARIABLE, "").strip()
    if from_environment:
        return StoreLocation(parse_store(from_environment, f"${STORE_VARIABLE}"), explicit=True)
    return StoreLocation(make_url(f"sqlite:///{default_store_file()}"), explicit=False)


def parse_store(text: str, source: str) -> URL:
    """A store URL from what the user wrote (a path is an SQLite file); BadInputError if not."""
    text = text.strip()
    if "://" not in text:
        return make_url(f"sqlite:///{Path(text).expanduser().resolve()}")
    scheme = text.split("://", 1)[0]
    base = scheme.split("+", 1)[0]
    if base not in SCHEMES:
        raise BadInputError(
            f"{source}: unknown store scheme {scheme!r}: write a file path, sqlite:///PATH or "
            "postgresql://USER@HOST/DATABASE"
        )
    try:
        url = make_url(text)
    except ArgumentError:
        raise BadInputError(f"{source}: not a store URL: {_hidden(text)}") from None
    if base == "sqlite":
        if not url.database:
            raise BadInputError(f"{source}: sqlite:///PATH needs the file's path")
        return url
    return url.set(drivername=SCHEMES[base])


def _hidden(text: str) -> str:
    """The text with whatever stands between '://' and '@' (user:password) left out."""
    head, _, rest = text.partition("://")
    return f"{head}://***@{rest.split('@', 1)[1]}" if "@" in rest else text
