"""Broker client drivers, found by broker type in the entry-point group `exprun.drivers`."""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from runner.execution.drivers.base import (
    Driver,
    DriverError,
    MessageSink,
    PublishPlan,
    PublishStalled,
)

DRIVER_GROUP = "exprun.drivers"


class UnknownDriver(LookupError):
    """No installed package provides a driver for a broker type."""


@cache
def available_drivers() -> dict[str, str]:
    """Broker type -> "module:Class" of every installed driver."""
    return {ep.name: ep.value for ep in entry_points(group=DRIVER_GROUP)}


@cache
def load_driver(broker_type: str) -> type[Driver]:
    """The driver class registered for `broker_type` (cached: a forkserver loads them once)."""
    for ep in entry_points(group=DRIVER_GROUP, name=broker_type):
        driver = ep.load()
        if not (isinstance(driver, type) and issubclass(driver, Driver)):
            raise UnknownDriver(f"entry point {ep.value} ({DRIVER_GROUP}) is not a Driver class")
        return driver
    known = ", ".join(sorted(available_drivers())) or "none"
    raise UnknownDriver(
        f"no driver for broker type {broker_type!r} in entry-point group {DRIVER_GROUP} "
        f"(installed: {known}); is exprun installed (pip install -e .)?"
    )


__all__ = [
    "DRIVER_GROUP",
    "Driver",
    "DriverError",
    "MessageSink",
    "PublishPlan",
    "PublishStalled",
    "UnknownDriver",
    "available_drivers",
    "load_driver",
]
