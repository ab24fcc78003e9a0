"""Client policies: what each broker's producers do on a failed publish, and whether brokers
compared through faults met them with the same one."""

from __future__ import annotations

from collections.abc import Iterable

from runner.analysis.cells import measured
from runner.analysis.context import AnalysisContext
from schemas.report import Anomaly, ClientPolicy
from schemas.results import TrialResult


def publish_policies(trials: Iterable[TrialResult]) -> list[ClientPolicy]:
    """The policy each (broker, variant) recorded, in the order the trials ran."""
    found: dict[tuple[str, str], ClientPolicy] = {}
    for trial in trials:
        key = (trial.broker, trial.variant)
        if trial.publish_policy is not None and key not in found:
            found[key] = ClientPolicy(
                broker=trial.broker, variant=trial.variant, policy=trial.publish_policy
            )
    return list(found.values())


def policy_anomalies(ctx: AnalysisContext, policies: list[ClientPolicy]) -> list[Anomaly]:
    """Brokers compared through faults whose producers did not retry alike."""
    of = {(p.broker, p.variant): p.policy for p in policies}
    faulted = {(t.broker, t.variant) for t in measured(ctx.trials) if t.faults}
    out: list[Anomaly] = []
    for variant in ctx.variants:
        sides = [b for b in ctx.brokers if (b, variant) in faulted and (b, variant) in of]
        first = sides[0] if sides else None
        for other in sides[1:]:
            assert first is not None
            base, candidate = of[first, variant], of[other, variant]
            differences = base.unlike(candidate)
            if not differences:
                continue
            out.append(
                Anomaly(
                    kind="unlike_policies",
                    severity="warning",
                    message=f"{first} and {other} ({variant}) met their faults with different "
                    "client policies: their loss and success differ by the client, not only "
                    "by the broker",
                    evidence=f"{'; '.join(differences)}: {first}: {base.describe()}; "
                    f"{other}: {candidate.describe()}",
                    advice="give both the same policy (NATS publish.delivery_timeout; Kafka "
                    "message.timeout.ms, retries, enable.idempotence) to compare the brokers "
                    "like with like",
                )
            )
    return out
