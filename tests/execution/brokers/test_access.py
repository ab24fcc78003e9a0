"""A secured broker's access on its way to load generators on other hosts (no brokers)."""

from __future__ import annotations

import stat
from pathlib import Path

from runner.execution.brokers.access import ClientAccess, NatsAccess


def test_files_travel_with_the_access_and_land_privately(tmp_path: Path) -> None:
    ca, key = tmp_path / "ca.pem", tmp_path / "client-key.pem"
    ca.write_text("CA PEM")
    key.write_text("KEY PEM")
    access = ClientAccess(
        kafka={"security.protocol": "SSL", "ssl.ca.location": str(ca), "sasl.password": "pw"},
        nats=NatsAccess(tls=True, ca=str(ca), cert=str(ca), key=str(key), token="t"),
    )
    shipped = ClientAccess.model_validate_json(access.shipped().model_dump_json())
    assert shipped.files == {str(ca): "CA PEM", str(key): "KEY PEM"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    landed = shipped.landed(elsewhere)
    assert landed.files == {}
    assert Path(landed.kafka["ssl.ca.location"]).read_text() == "CA PEM"
    assert landed.kafka["sasl.password"] == "pw" and landed.nats.token == "t"
    assert Path(landed.nats.key or "").parent == elsewhere
    assert Path(landed.nats.key or "").read_text() == "KEY PEM"
    assert stat.S_IMODE(Path(landed.nats.key or "").stat().st_mode) == 0o600
    assert landed.nats.cert == landed.nats.ca  # one file, landed once
