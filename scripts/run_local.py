"""`make run`: migrate, then start the API and one worker on the embedded defaults; Ctrl-C stops both.

Set KILN_DATABASE_URL / KILN_BROKER_URL to use PostgreSQL and Redis instead of the SQLite files.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402

from services.config import Settings  # noqa: E402
from services.registry.unit_of_work import connect_registry  # noqa: E402
from services.usecases.keys import create_key, key_for_token  # noqa: E402
from services.usecases.workers import any_worker_alive  # noqa: E402

STOP_GRACE_S = 60.0  # a worker finishes the epoch-bound task it holds; a second Ctrl-C forces it


def migrate(settings: Settings) -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["url"] = settings.database_url
    command.upgrade(config, "head")


COMMANDS = {"api": [sys.executable, "-m", "api"], "worker": [sys.executable, "-m", "worker"]}  # KILN_HOST, KILN_PORT ...
MAX_RESTARTS = 5  # a worker that keeps dying within RESTART_WINDOW_S stops the whole thing
RESTART_WINDOW_S = 60.0


def spawn(name: str) -> subprocess.Popen[bytes]:
    # Children get their own process group: the terminal's Ctrl-C reaches only this supervisor,
    # which then stops them in order.
    return subprocess.Popen(COMMANDS[name], cwd=ROOT, start_new_session=True)


def start(settings: Settings) -> dict[str, subprocess.Popen[bytes]]:
    return {name: spawn(name) for name in COMMANDS}


def _api_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def wait_ready(settings: Settings, url: str, procs: dict[str, subprocess.Popen[bytes]], timeout_s: float = 120) -> bool:
    """Until the API answers and the worker has announced itself, so a first job starts at once."""
    engine, uow_factory = connect_registry(settings.database_url, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and all(p.poll() is None for p in procs.values()):
            if _api_up(url) and any_worker_alive(uow_factory=uow_factory, stale_after_s=settings.worker_stale_after_s):
                return True
            time.sleep(0.2)
        return False
    finally:
        engine.dispose()


def stop(procs: dict[str, subprocess.Popen[bytes]], forced: Callable[[], bool]) -> None:
    """TERM both (uvicorn and Celery shut down gracefully on it); KILL after the grace or on a second Ctrl-C."""
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while any(p.poll() is None for p in procs.values()):
        if forced() or time.monotonic() > deadline:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
        time.sleep(0.1)


def local_admin_key(settings: Settings) -> str:
    """The admin key in $KILN_DATA_DIR/api-key (mode 0600), minted on the first run, and again if it stopped working."""
    path = settings.data_dir / "api-key"
    engine, uow_factory = connect_registry(settings.database_url, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    try:
        if path.exists() and key_for_token(path.read_text().strip(), uow_factory=uow_factory) is not None:
            return path.read_text().strip()
        _, token = create_key(name="make run (local admin)", scopes=["admin"], uow_factory=uow_factory)
    finally:
        engine.dispose()
    temporary = path.with_name(".api-key.tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others, even briefly
    with os.fdopen(descriptor, "w") as out:
        out.write(token + "\n")
    os.replace(temporary, path)
    return token


def main() -> int:
    settings = Settings()
    settings.ensure_dirs()
    os.environ["KILN_DATA_DIR"] = str(settings.data_dir)  # children resolve the same folder
    migrate(settings)
    key = None if settings.auth_disabled else local_admin_key(settings)
    procs = start(settings)
    signals_seen = 0

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            print("\nkiln: stopping (Ctrl-C again to force)", flush=True)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    url = f"http://{settings.host}:{settings.port}"
    try:
        if wait_ready(settings, url, procs):
            print(f"\nKiln is running at {url}  (web UI: {url}/ui/, docs: {url}/docs, data: {settings.data_dir})", flush=True)
            if key:
                print(f"Admin API key (also in {settings.data_dir / 'api-key'}):\n  {key}\n"
                      f"Send it as: curl -H 'Authorization: Bearer {key}' {url}/v1/models", flush=True)  # fmt: skip
            else:
                print("AUTHENTICATION IS OFF (KILN_AUTH_DISABLED=true): anyone who can reach this port can use Kiln.", flush=True)
            print("Press Ctrl-C to stop.\n", flush=True)
        restarts: list[float] = []
        while not signals_seen:
            if procs["api"].poll() is not None:
                print("kiln: the API exited; stopping", file=sys.stderr, flush=True)
                return 1
            if procs["worker"].poll() is not None:
                # As a process supervisor would: a crashed worker is started again, and its job is redelivered.
                restarts = [t for t in restarts if time.monotonic() - t < RESTART_WINDOW_S] + [time.monotonic()]
                if len(restarts) > MAX_RESTARTS:
                    print(f"kiln: the worker died {len(restarts)} times in {RESTART_WINDOW_S:.0f} s; stopping", file=sys.stderr, flush=True)
                    return 1
                print(f"kiln: the worker exited with {procs['worker'].returncode}; restarting it", file=sys.stderr, flush=True)
                procs["worker"] = spawn("worker")
            time.sleep(0.2)
        return 0
    finally:
        stop(procs, forced=lambda: signals_seen > 1)
        print("kiln: stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
