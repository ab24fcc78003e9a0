"""The load-generator hosts of a run (engine: dask): Dask workers offering the resource loadgen=1.

exprun stays the coordinator. It reaches the scheduler before anything starts; for each trial
it picks `hosts` workers, opens a port the trial process takes over, and submits one task per
host (runner.execution.trial.remote.run_shares) that starts the host's load-generator processes,
which connect back to the trial. Dask only places the shares and says how they ended: nothing
of it runs in a measured process. Workers that die take their trial down (the link breaks), and
the next trial picks from the workers left.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import psutil

from runner.errors import BadInputError, ExprunError
from runner.execution.environment import host_facts
from runner.execution.trial.links import ClockReading, best_reading, listen
from runner.execution.trial.parent import start_trial
from runner.execution.trial.remote import ShareExit, ShareLaunch, run_shares
from runner.execution.trial.request import RemoteHost, RemoteShares, TrialRequest
from schemas.results import TrialResult
from schemas.spec import SCHEDULER_ADDRESS, ExecutionSettings

RESOURCE = "loadgen"
SCHEDULER_VARIABLE = "EXPRUN_DASK_SCHEDULER"
PROBE_TIMEOUT_S = 2.0  # a scheduler's port that does not answer this fast is not reachable
CONNECT_TIMEOUT_S = 5.0  # then the scheduler itself: all of it within 10 s of exprun's start
HOSTS_WAIT_S = 20.0  # a worker its nanny restarts is back within this
HOSTS_POLL_S = 0.25
FINISH_TIMEOUT_S = 10.0  # for a trial's share processes to end once it reported
CLOSE_TIMEOUT_S = 5.0
WALL_CLOCK_ROUNDS = 5  # through the scheduler: each round trip costs milliseconds


class HostsUnavailable(ExprunError):
    """The scheduler cannot be reached, or fewer load-generator hosts are left than needed."""


@dataclass
class TrialShares:
    """One trial's shares on other hosts, as the run launched them."""

    listener: socket.socket
    futures: list[Any] = field(default_factory=list)


class LoadHosts:
    """A run's connection to its Dask scheduler, and the hosts its trials' shares ran on."""

    def __init__(self, client: Any, scheduler: str, settings: ExecutionSettings) -> None:
        self.client, self.scheduler, self.settings = client, scheduler, settings
        self.hosts = settings.hosts
        self.coordinator = _address_towards(scheduler)
        self.facts: dict[str, dict[str, Any]] = {}  # by worker address: every host that ran
        self.clock_skew_ns = 0  # self-test: hosts after the first run that far ahead

    def environment(self) -> dict[str, Any]:
        """What environment.json says of the load generators."""
        return {
            "engine": "dask",
            "scheduler": self.scheduler,
            "hosts": self.hosts,
            "processes": self.settings.processes,
            "machines": [{"worker": worker, **facts} for worker, facts in self.facts.items()],
        }

    def choose(self) -> list[str]:
        """`hosts` workers offering loadgen=1, waiting a while for restarted ones."""
        deadline = time.monotonic() + HOSTS_WAIT_S
        while True:
            workers = self._offering()
            if len(workers) >= self.hosts:
                return workers[: self.hosts]
            if time.monotonic() >= deadline:
                raise HostsUnavailable(
                    f"only {len(workers)} of the {self.hosts} load-generator hosts this run "
                    f"needs are left (Dask workers offering {RESOURCE}=1 at {self.scheduler}); "
                    "the trials recorded so far are in the run folder"
                )
            time.sleep(HOSTS_POLL_S)

    def launch(self, request: TrialRequest) -> tuple[TrialRequest, TrialShares]:
        """The trial's shares started on its hosts; the request that tells it where they are."""
        hosts = []
        for worker in self.choose():
            facts = self._facts(worker)
            if request.broker_config.embedded:
                self.check_reaches_embedded(worker)
            cores = facts["machine"]["cpu_count"] or 1
            hosts.append(
                RemoteHost(
                    worker=worker,
                    hostname=facts["machine"]["hostname"],
                    processes=self.settings.process_count(cores),
                )
            )
        remote = RemoteShares(authkey=secrets.token_bytes(32), hosts=tuple(hosts))
        request = request.model_copy(update={"processes": remote.processes, "remote": remote})
        # What the clients read from files travels with the request (never written elsewhere).
        shipped = request.model_copy(update={"access": request.access.shipped()})
        listener = listen(self.coordinator)
        shares = TrialShares(listener)
        address = listener.getsockname()[:2]
        first = 0
        for number, host in enumerate(hosts):
            launch = ShareLaunch(
                address=address,
                authkey=remote.authkey,
                request_json=shipped.model_dump_json(exclude={"remote"}),
                shares=tuple(range(first, first + host.processes)),
                processes=remote.processes,
                skew_ns=self.clock_skew_ns if number else 0,
            )
            first += host.processes
            shares.futures.append(
                self.client.submit(
                    run_shares,
                    launch,
                    key=f"exprun-{request.topic}-host-{number}",
                    workers=[host.worker],
                    allow_other_workers=False,
                    resources={RESOURCE: 1},
                    pure=False,
                )
            )
        return request, shares

    def check_reaches_embedded(self, worker: str) -> None:
        """Embedded brokers listen on this machine's loopback: the worker must be here too."""
        if not _is_this_machine(worker):
            raise BadInputError(
                f"load-generator host {self._facts(worker)['machine']['hostname']} ({worker}) is "
                "another machine, and embedded brokers listen on 127.0.0.1 only: give each "
                "broker an endpoint every load host reaches (an external broker)"
            )

    def run_trial(self, request: TrialRequest) -> TrialResult:
        """One trial on these hosts, start to end (the run overlaps trials' settle waits)."""
        request, shares = self.launch(request)
        return self.finish(shares, start_trial(request, listener=shares.listener).result())

    def finish(self, shares: TrialShares, result: TrialResult) -> TrialResult:
        """Once the trial reported: how its share processes ended (a failed trial says why one
        crashed, when it did), and no task of it left on the cluster."""
        from distributed import wait

        timeout = FINISH_TIMEOUT_S if result.status == "ok" else 1.0
        with contextlib.suppress(Exception):
            wait(shares.futures, timeout=timeout)
        crashes = []
        for future in shares.futures:
            if future.status != "finished":
                continue
            exits: list[ShareExit] = future.result()
            crashes += [e for e in exits if e.code != 0 and e.stderr_tail]
        self.client.cancel([f for f in shares.futures if not f.done()], force=True)
        if result.status == "failed" and crashes:
            last = crashes[0].stderr_tail.splitlines()[-1][:300]
            error = f"{result.error} (load-generator process {crashes[0].share}: {last})"
            return result.model_copy(update={"error": error})
        return result

    def cancel(self, launched: list[TrialShares]) -> None:
        """Interrupted: the trials' tasks cancelled (their processes end with their links)."""
        for shares in launched:
            shares.listener.close()
            with contextlib.suppress(Exception):
                self.client.cancel(shares.futures, force=True)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close(timeout=CLOSE_TIMEOUT_S)

    def _offering(self) -> list[str]:
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        return sorted(
            address
            for address, info in workers.items()
            if (info.get("resources") or {}).get(RESOURCE, 0) >= 1
        )

    def _facts(self, worker: str) -> dict[str, Any]:
        if worker not in self.facts:
            facts = self.client.run(host_facts, workers=[worker])[worker]
            offset_ms, uncertainty_ms = self._wall_clock_offset_ms(worker)
            facts["wall_clock_offset_ms"] = offset_ms
            facts["wall_clock_uncertainty_ms"] = uncertainty_ms
            self.facts[worker] = facts
        return self.facts[worker]

    def _wall_clock_offset_ms(self, worker: str) -> tuple[float, float]:
        """The host's wall clock minus ours and its uncertainty (the best of a few round trips
        through Dask), for the record: trials measure their own offsets, on their own links."""

        def probe() -> ClockReading:
            sent = time.time_ns()
            theirs = self.client.run(time.time_ns, workers=[worker])[worker]
            return ClockReading.of(sent, theirs, time.time_ns())

        best = best_reading(probe() for _ in range(WALL_CLOCK_ROUNDS))
        return round(best.offset_ns / 1e6, 3), round(best.uncertainty_ns / 1e6, 3)


@contextlib.contextmanager
def load_hosts(
    settings: ExecutionSettings, scheduler_override: str | None, embedded: bool = False
) -> Iterator[LoadHosts | None]:
    """The run's load-generator hosts (None: engine local), checked to reach the brokers when
    some are `embedded`; the client closed on the way out."""
    if not settings.distributed:
        yield None
        return
    given = [
        ("--scheduler", scheduler_override),
        (SCHEDULER_VARIABLE, os.environ.get(SCHEDULER_VARIABLE)),
        ("execution.scheduler", settings.scheduler),
    ]
    source, scheduler = next(((s, a) for s, a in given if a), ("", None))
    if not scheduler:
        raise BadInputError(
            "engine: dask needs a scheduler: execution.scheduler in the spec, --scheduler ADDR, "
            f"or {SCHEDULER_VARIABLE}"
        )
    if not re.match(SCHEDULER_ADDRESS, scheduler):
        raise BadInputError(
            f"{source} {scheduler!r} is not a Dask scheduler address like tcp://10.0.0.5:8786"
        )
    _probe(scheduler)
    try:
        from distributed import Client
    except ImportError:
        raise HostsUnavailable(
            "engine: dask needs Dask distributed: pip install 'exprun[dask]'"
        ) from None
    _ask_identity(scheduler)
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except Exception as error:  # distributed raises what its transport met
        raise HostsUnavailable(
            f"cannot reach the Dask scheduler at {scheduler} within {CONNECT_TIMEOUT_S:g}s: "
            f"{_first_line(error)}"
        ) from None
    hosts = LoadHosts(client, scheduler, settings)
    try:
        for worker in hosts.choose():
            if embedded:
                hosts.check_reaches_embedded(worker)
        yield hosts
    finally:
        hosts.close()


def _probe(scheduler: str) -> None:
    """Fail fast where nothing listens: Dask's client retries a refused port until its timeout."""
    address = urlsplit(scheduler)
    try:
        with socket.create_connection((address.hostname, address.port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise HostsUnavailable(
            f"cannot reach the Dask scheduler at {scheduler}: {reason}"
        ) from None


def _ask_identity(scheduler: str) -> None:
    """Something listens there: it must answer as a Dask scheduler, and quickly (a failed
    Client would spend seconds more closing itself)."""
    from distributed.comm import connect

    async def identity() -> Any:
        comm = await connect(scheduler, timeout=PROBE_TIMEOUT_S)
        try:
            await comm.write({"op": "identity"})
            return await asyncio.wait_for(comm.read(), PROBE_TIMEOUT_S)
        finally:
            await comm.close()

    reason = None
    try:
        reply = asyncio.run(identity())
    except TimeoutError:
        reason = f"no answer within {PROBE_TIMEOUT_S:g}s"
    except Exception as error:  # whatever the other side sent, read as Dask's protocol
        reason = f"what listens there does not speak Dask's protocol ({type(error).__name__})"
    if reason is not None:
        raise HostsUnavailable(f"no Dask scheduler answers at {scheduler}: {reason}")
    if not isinstance(reply, dict) or reply.get("type") != "Scheduler":
        raise HostsUnavailable(f"what answers at {scheduler} is not a Dask scheduler")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _address_towards(scheduler: str) -> str:
    """This machine's address on the way to the scheduler: where load hosts reach us."""
    host = urlsplit(scheduler).hostname or "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host, 9))  # UDP: no packet is sent, the route is looked up
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def _is_this_machine(worker: str) -> bool:
    host = urlsplit(worker).hostname or ""
    if host.startswith("127."):
        return True
    ours = {a.address for addresses in psutil.net_if_addrs().values() for a in addresses}
    return host in ours
