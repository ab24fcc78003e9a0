"""What security costs a trial: the same unpaced trials on a plaintext embedded broker and on
secured ones (TLS; TLS with a login), interleaved (the order turns each round), per broker.

Every broker runs throughout and only one takes a trial at a time, so each round compares the
sides under the same machine load. No goal: the cost is the broker's and the client's, shown.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from benchmarks.exprun_side import kafka_config, nats_config, run, trial_request
from runner.analysis.statistics import compare
from runner.execution.brokers import RunningBroker, start_kafka, start_nats
from runner.execution.trial.parent import prestart
from schemas.spec import KafkaBroker, KafkaSecurity, NatsBroker, NatsSecurity

KAFKA_PRODUCER: dict[str, str | int] = {"acks": "all", "linger.ms": 5}
# The secured sides of each broker (the baseline is plaintext), by the harness row they feed.
SIDES: dict[str, dict[str, KafkaSecurity | NatsSecurity]] = {
    "nats": {"nats_tls_cost": NatsSecurity(tls=True, auth="nkey")},
    "kafka": {
        "kafka_tls_cost": KafkaSecurity(tls=True),
        "kafka_sasl_ssl_cost": KafkaSecurity(tls=True, sasl="scram-sha-512"),
    },
}


@dataclass
class SecurityCost:
    """End-to-end msg/s of the plaintext trials and of each secured side's."""

    plain: list[float] = field(default_factory=list)
    secured: dict[str, list[float]] = field(default_factory=dict)

    def details(self, row: str) -> dict[str, Any]:
        """A secured side against plaintext, with exprun's U test of the two."""
        side = self.secured[row]
        out: dict[str, Any] = {"plain_msg_s": self.plain, "secured_msg_s": side}
        if len(side) >= 2 and len(self.plain) >= 2:
            test = compare(self.plain, side, better="higher")
            out.update(test=test.test, p_value=test.p_value, significant=test.significant)
        return out


def measure(kind: str, rounds: int, seconds: float) -> SecurityCost:
    """`rounds` rounds of one unpaced trial of `seconds` per side, after one that warms all."""
    cost = SecurityCost(secured={row: [] for row in SIDES[kind]})
    with _brokers(kind) as (plain, secured, config):
        prestart()
        sides: list[tuple[str | None, RunningBroker]] = [(None, plain), *secured.items()]
        for number in range(-1, rounds):
            order = sides if number % 2 == 0 else sides[::-1]
            for row, broker in order:
                result = run(trial_request(broker, config, None, duration=seconds))
                if number < 0:
                    continue
                throughput = result.metrics.throughput or 0.0
                (cost.plain if row is None else cost.secured[row]).append(throughput)
    return cost


@contextlib.contextmanager
def _brokers(
    kind: str,
) -> Iterator[tuple[RunningBroker, dict[str, RunningBroker], NatsBroker | KafkaBroker]]:
    """The plaintext broker, a secured one per side, and the trials' config."""
    with contextlib.ExitStack() as stack:
        secured: dict[str, RunningBroker] = {}
        if kind == "nats":
            plain = stack.enter_context(start_nats())
            for row, security in SIDES[kind].items():
                assert isinstance(security, NatsSecurity)
                secured[row] = stack.enter_context(start_nats(security=security))
            yield plain, secured, nats_config()
            return
        plain = stack.enter_context(start_kafka())
        for row, security in SIDES[kind].items():
            assert isinstance(security, KafkaSecurity)
            secured[row] = stack.enter_context(start_kafka(security=security))
        yield plain, secured, kafka_config(KAFKA_PRODUCER)
