"""A RabbitMQ node of one test's own, so a fault test can crash and restart it while the shared one serves everyone else."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from shutil import rmtree

import amqp

from tests.conftest import free_port

BIN = Path("/usr/lib/rabbitmq/bin")  # the scripts themselves: /usr/sbin's wrappers su to the rabbitmq user and its HOME
BIND_ATTEMPTS = 5  # a free port can be taken by another process before the node binds it: pick again


class PrivateRabbit:
    """A node with its own name, ports, data, logs and Erlang cookie (all in `folder`), on the shared epmd."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, 0
        self.proc: subprocess.Popen[bytes] | None = None
        (folder / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's, which names the shared node

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def _env(self, port: int) -> dict[str, str]:
        own = {"NODENAME": f"kiln-test-{port}@localhost", "NODE_IP_ADDRESS": "127.0.0.1", "NODE_PORT": str(port),
               "MNESIA_BASE": str(self.folder / "mnesia"), "LOG_BASE": str(self.folder / "log"),
               "CONFIG_FILE": str(self.folder / "rabbitmq"), "ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
               "CONF_ENV_FILE": str(self.folder / "rabbitmq-env.conf")}  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        return env | {"HOME": str(self.folder), "ERL_EPMD_ADDRESS": "127.0.0.1"} | {f"RABBITMQ_{k}": v for k, v in own.items()}

    def start(self, timeout: float = 60) -> None:
        """Boot on the same port as before (the same node, so its quorum queues come back); the first start picks one."""
        for _ in range(BIND_ATTEMPTS if self.port == 0 else 1):
            port = self.port or free_port()
            with open(self.folder / "server.log", "ab") as log:
                env = self._env(port) | {"RABBITMQ_DIST_PORT": str(free_port())}  # for CLI tools, found through epmd
                self.proc = subprocess.Popen([str(BIN / "rabbitmq-server")], env=env, stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True)  # fmt: skip
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                if answers(port):
                    self.port = port
                    return
                time.sleep(0.1)
            self.crash()  # it exited (a port was taken) or never answered
        raise RuntimeError(f"private RabbitMQ did not start:\n{self.log()}")

    def crash(self) -> None:
        """SIGKILL the node's whole process group, as a machine losing power would: nothing is flushed on the way out."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def waiting(self, name: str) -> tuple[int, int]:
        """A queue's ready messages and consumers now, by a passive declare (rabbitmqctl's figures lag by seconds)."""
        with amqp.Connection(f"127.0.0.1:{self.port}", userid="guest", password="guest", connect_timeout=5) as connection:
            declared = connection.channel().queue_declare(name, passive=True)
        return declared.message_count, declared.consumer_count

    def queue(self, name: str) -> tuple[int, int]:
        """A queue's ready and unacknowledged messages, as rabbitmqctl lists them (refreshed every 5 s)."""
        listed = subprocess.run([str(BIN / "rabbitmqctl"), "-q", "list_queues", "name", "messages_ready", "messages_unacknowledged"],
                                env=self._env(self.port), capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
        rows = {row[0]: (int(row[1]), int(row[2])) for line in listed.stdout.splitlines() if (row := line.split("\t"))[-1].isdigit()}
        return rows[name]

    def log(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def answers(port: int) -> bool:
    """Whether a broker accepts an AMQP login on `port` (its listener opens once it has booted)."""
    try:
        connection = amqp.Connection(f"127.0.0.1:{port}", userid="guest", password="guest", connect_timeout=1)
        connection.connect()
    except (OSError, amqp.exceptions.AMQPError):
        return False
    connection.close()
    return True


@contextlib.contextmanager
def private_rabbitmq() -> Iterator[PrivateRabbit]:
    """A started private node, killed and deleted afterwards, however the test ended."""
    folder = Path(tempfile.mkdtemp(prefix="kiln-rabbit-"))
    rabbit = PrivateRabbit(folder)
    try:
        rabbit.start()
        yield rabbit
    finally:
        rabbit.crash()
        rmtree(folder, ignore_errors=True)
