"""Faults done by the run to an embedded broker's nodes, when a trial reaches their points.

The run owns the nodes' processes: it finds the leader, kills (SIGKILL), pauses (SIGSTOP, and
SIGCONT after the pause) and brings nodes back, and tells the trial which node it hit and when.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from runner.execution.brokers import BrokerNode, LeaderUnknown, RunningBroker
from runner.execution.measure.messages import now_ns
from runner.execution.trial.request import FaultDone, FaultOrder
from schemas.spec import Fault

LEADER_TIMEOUT_S = 5.0


class FaultExecutor:
    """Does one trial's faults on its broker instance."""

    def __init__(self, broker: RunningBroker, faults: Sequence[Fault]) -> None:
        self.broker, self.faults = broker, list(faults)
        self.pauses: list[threading.Timer] = []

    def __call__(self, order: FaultOrder) -> FaultDone:
        fault = self.faults[order.fault]
        try:
            node = self._target(fault, order.destination)
        except LeaderUnknown as error:
            return FaultDone(error=f"no leader to hit: {error}")
        if fault.action == "restart":
            self._restart()
            return FaultDone(done_ns=now_ns())
        assert node is not None
        # The fault's moment is the signal's, not the end of reaping or of waiting for the
        # stop: a killed JVM takes up to a third of a second to be reaped.
        done_ns = now_ns()
        if fault.action.startswith("kill_"):
            node.kill()
        else:
            assert fault.pause is not None
            node.pause()
            timer = threading.Timer(fault.pause, node.resume)
            timer.daemon = True
            timer.start()
            self.pauses.append(timer)
        return FaultDone(node=node.number, done_ns=done_ns)

    def _target(self, fault: Fault, destination: str) -> BrokerNode | None:
        if fault.action.endswith("_leader"):
            return self.broker.leader(destination, LEADER_TIMEOUT_S)
        if fault.node is not None:
            return self.broker.nodes[fault.node - 1]
        return None

    def _restart(self) -> None:
        """Every killed node back in place (with its data, so it rejoins); paused ones resumed."""
        for node in self.broker.nodes:
            if node.paused:
                node.resume()
            elif not node.alive():
                node.start()
