"""Installed versions of exprun and of the libraries whose versions a run records."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def package_version(name: str) -> str | None:
    """The installed distribution's version, or None when it is not installed."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None
