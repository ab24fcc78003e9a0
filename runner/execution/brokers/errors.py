"""The exceptions of broker lifecycle and control."""

from __future__ import annotations


class BrokerStartError(Exception):
    """A broker could not be started or reached.

    str(e) is one user-readable message: what failed, why, and the broker's log tail.
    """


class LeaderUnknown(Exception):
    """No node was reported as the leader of a topic partition or stream in time.

    str(e) is a one-line reason.
    """
