"""Reads the broker's nodes on the trial's own ticks, from the run's process.

The run, not the trial process, does the reading: the load generator's loop and threads never
see it, so what telemetry costs the trial is the broker's share of answering, not exprun's. The
trial tells the run its phase's clock (PHASE_STARTED); readings are taken at the phase's start,
at every tick of its per-second windows, and once more as the trial settles.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from runner.execution.measure.messages import NS_PER_S, now_ns
from runner.execution.telemetry.kafka_reading import kafka_reading
from runner.execution.telemetry.nats_reading import JSZ_QUERY, nats_reading
from runner.execution.telemetry.samples import Sample, Source
from runner.execution.telemetry.windows import broker_telemetry, telemetry_metrics
from runner.execution.trial.request import PhaseStarted
from schemas.results import Metrics, TrialResult

READ_TIMEOUT_S = 0.5  # a paused node must not hold up the others' readings for long
# A reading missed now and then (a timeout on a busy machine) is no finding; more than this
# share of a node's readings is (one in 3,602 of an hour's soak is not).
MISSED_SHARE = 0.01
# Monitoring ports are on loopback or named hosts: never through a proxy from the environment.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Unreadable(Exception):
    """The node did not answer, or answered something that is not its figures."""


def read_source(source: Source, topic: str, timeout: float = READ_TIMEOUT_S) -> dict[str, float]:
    """One reading of the node; Unreadable with the reason."""
    if source.kind == "nats":
        try:
            varz = json.loads(_get(f"{source.url}/varz", timeout))
            jsz = json.loads(_get(f"{source.url}{JSZ_QUERY}", timeout))
        except ValueError as error:
            raise Unreadable(f"{source.url} answered something that is not JSON") from error
        if not isinstance(varz, dict) or not isinstance(jsz, dict):
            raise Unreadable(f"{source.url} did not answer with NATS monitoring JSON")
        return nats_reading(varz, jsz, topic)
    try:
        return kafka_reading(_get(source.url, timeout).decode(errors="replace"), topic)
    except ValueError as error:
        raise Unreadable(f"{source.url} did not answer in the Prometheus text format") from error


def _get(url: str, timeout: float) -> bytes:
    try:
        with _HTTP.open(url, timeout=timeout) as response:
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as error:
        raise Unreadable(f"{url} answered HTTP {error.code}") from error
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise Unreadable(f"{url} did not answer ({reason})") from error


class TelemetrySampler:
    """Reads every source at the phase's start, on each of its ticks, and as it ends."""

    def __init__(
        self, sources: list[Source], topic: str, *, faults: bool = False, interval_s: float = 1.0
    ) -> None:
        self.sources, self.topic, self.faults = sources, topic, faults
        self.interval_ns = round(interval_s * NS_PER_S)
        self.samples: list[Sample] = []
        self.started: PhaseStarted | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._ended = False

    def begin(self, started: PhaseStarted) -> None:
        if self._thread is not None or self._ended:
            return
        self.started = started
        self._pool = ThreadPoolExecutor(len(self.sources), thread_name_prefix="exprun-telemetry")
        self._thread = threading.Thread(target=self._run, name="exprun-telemetry", daemon=True)
        self._thread.start()

    def end(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._stop.set()
        if self._thread is None:
            return
        self._thread.join()
        self._read_all(now_ns())  # the phase ended a moment ago: its last window's end
        assert self._pool is not None
        self._pool.shutdown(wait=True)

    def attach(self, result: TrialResult) -> TrialResult:
        """The result with the broker's signals on its windows, their metrics and warnings."""
        self.end()
        if self.started is None or result.series is None or not self.samples:
            return result
        kind = self.sources[0].kind
        telemetry = broker_telemetry(kind, self.samples, self.started.start_ns, result.series)
        ramp_s = (self.started.ramp_end_ns - self.started.start_ns) / NS_PER_S
        figures = telemetry_metrics(telemetry, result.series, ramp_s)
        metrics = Metrics.model_validate({**result.metrics.model_dump(), **figures})
        return result.model_copy(
            update={
                "telemetry": telemetry,
                "metrics": metrics,
                "warnings": [*result.warnings, *self.warnings()],
            }
        )

    def warnings(self) -> list[str]:
        """Nodes that never answered; or, in a trial without faults, that missed more than
        MISSED_SHARE of their readings."""
        out = []
        for source in self.sources:
            mine = [s for s in self.samples if s.node == source.node]
            failed = [s for s in mine if s.reading is None]
            if not failed:
                continue
            if len(failed) == len(mine):
                out.append(f"telemetry of node {source.node}: {failed[-1].error}; no figures")
            elif not self.faults and len(failed) > MISSED_SHARE * len(mine):
                out.append(
                    f"telemetry of node {source.node}: {len(failed)} of {len(mine)} readings "
                    f"missed ({failed[-1].error})"
                )
        return out

    def _run(self) -> None:
        assert self.started is not None
        at = self.started.start_ns
        while not self._wait_until(at):
            self._read_all(at)
            at = self._next_tick(now_ns())

    def _next_tick(self, after_ns: int) -> int:
        """The first tick of the phase's windows after `after_ns` (ticks: ramp end + k s)."""
        assert self.started is not None
        origin = self.started.ramp_end_ns
        return origin + ((after_ns - origin) // self.interval_ns + 1) * self.interval_ns

    def _wait_until(self, at_ns: int) -> bool:
        """Sleep until at_ns; True if told to stop meanwhile."""
        return self._stop.wait(max(0.0, (at_ns - now_ns()) / NS_PER_S))

    def _read_all(self, at_ns: int) -> None:
        assert self._pool is not None
        reads = [(s, self._pool.submit(read_source, s, self.topic)) for s in self.sources]
        for source, future in reads:
            try:
                self.samples.append(Sample(at_ns, source.node, future.result()))
            except Unreadable as error:
                self.samples.append(Sample(at_ns, source.node, None, str(error)))
            except Exception as error:  # a malformed answer must cost the reading, not the run
                why = f"{source.url}: {type(error).__name__}: {error}"
                self.samples.append(Sample(at_ns, source.node, None, why))
