"""A PostgreSQL cluster of one test's own, so a fault test can stop and start it while the shared one serves everyone else."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import free_port

BIND_ATTEMPTS = 5  # a free port can be taken by another process before the server binds it: pick again


def _bin(name: str) -> str:
    """The newest installed PostgreSQL's `name` binary (initdb and pg_ctl are not on PATH on Debian)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[4].split(".")[0]))
    if not found:
        raise RuntimeError(f"{name} not found under /usr/lib/postgresql/*/bin: install postgresql")
    return found[-1]


def _as_postgres(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run `args` as the postgres user when we are root."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class PrivateCluster:
    """initdb into a temporary folder; `start` and `stop` that server only (trust auth, 127.0.0.1, its own socket dir)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.data, self.port = folder, folder / "data", 0
        subprocess.run(_as_postgres([_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"]),
                       check=True, capture_output=True)  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Start on the same port as before; the first start picks a free one, retrying if it was taken meanwhile."""
        for _ in range(BIND_ATTEMPTS if self.port == 0 else 1):
            port = self.port or free_port()
            options = f"-p {port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
            started = subprocess.run(_as_postgres([_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "server.log"),
                                                   "-w", "-t", "60", "-o", options, "start"]), capture_output=True, text=True)  # fmt: skip
            if started.returncode == 0:
                self.port = port
                return
        raise RuntimeError(f"private PostgreSQL did not start: {started.stderr}\n{self.log()}")

    def stop(self) -> None:
        subprocess.run(_as_postgres([_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]), check=True, capture_output=True)

    def log(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivateCluster]:
    """A started private cluster, stopped and deleted afterwards (in /tmp, owned by postgres so it may write there)."""
    folder = Path(tempfile.mkdtemp(prefix="kiln-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, user="postgres", group="postgres")
    try:
        cluster = PrivateCluster(folder)
        cluster.start()
        try:
            yield cluster
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                cluster.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
