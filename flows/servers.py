"""The local servers a person (``make ui``) and the e2e tests run: Prefect and MLflow on 127.0.0.1.

:class:`Server` starts one as a subprocess in its own process group, waits for its health URL
and stops it (SIGTERM, then SIGKILL) with every child it spawned; ``start`` again after ``stop``
brings it back on the same port and store, which is how the outage test restarts MLflow.
Servers bind 127.0.0.1 only: nothing here is meant to be reachable from another machine.

``python -m flows.servers`` (``make ui``) runs both in the foreground until Ctrl-C: the Prefect
UI at http://127.0.0.1:4200 and the MLflow UI at http://127.0.0.1:5000 on the project's
``mlflow.db``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _exe(name: str) -> str:
    return str(BIN / name) if (BIN / name).exists() else name


class Server:
    """One server subprocess: ``start()`` waits until ``health`` answers 200, ``stop()`` ends it."""

    def __init__(
        self, name: str, cmd: list[str], port: int, health: str, log: Path, env: dict[str, str] | None = None
    ):
        self.name, self.cmd, self.port, self.log, self.env = name, cmd, port, log, env
        self.url = f"http://{HOST}:{port}"
        self.health = self.url + health
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> Server:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(
                self.cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(self.health, timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"{self.name} did not answer {self.health} within {timeout:.0f}s; log {self.log}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
            try:
                os.killpg(self.proc.pid, sig)  # the server and its workers
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def mlflow_server(store_dir: Path, port: int | None = None) -> Server:
    """MLflow tracking server with a SQLite store and proxied artifacts under ``store_dir``."""
    store_dir = Path(store_dir).resolve()
    port = port or free_port()
    cmd = [
        _exe("mlflow"),
        "server",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{store_dir / 'mlflow.db'}",
        "--artifacts-destination",
        str(store_dir / "mlartifacts"),
    ]
    return Server("mlflow", cmd, port, "/health", store_dir / "mlflow-server.log")


def prefect_server(home: Path, port: int | None = None, services: bool = True) -> Server:
    """Prefect API + UI with its own database under ``home`` (``PREFECT_HOME``); ``services=False``
    runs no background services (no scheduler), which saves CPU where no schedule is tested."""
    home = Path(home).resolve()
    port = port or free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": HOST,
        "PREFECT_SERVER_API_PORT": str(port),
    }
    env.pop("PREFECT_API_URL", None)
    cmd = [_exe("prefect"), "server", "start", "--host", HOST, "--port", str(port)] + (
        [] if services else ["--no-services"]
    )
    return Server("prefect", cmd, port, "/api/health", home / "prefect-server.log", env)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Prefect and MLflow UIs on 127.0.0.1 (Ctrl-C stops both).")
    ap.add_argument("--prefect-port", type=int, default=4200)
    ap.add_argument("--mlflow-port", type=int, default=5000)
    ap.add_argument(
        "--home", default=".r1flow", help="Prefect's database and the server logs (default .r1flow)"
    )
    args = ap.parse_args(argv)
    home = Path(args.home).resolve()
    prefect = prefect_server(home / "prefect", args.prefect_port)
    mlflow = Server(
        "mlflow",
        [
            _exe("mlflow"),
            "ui",
            "--host",
            HOST,
            "--port",
            str(args.mlflow_port),
            "--backend-store-uri",
            "sqlite:///mlflow.db",
        ],
        args.mlflow_port,
        "/health",
        home / "mlflow-ui.log",
    )
    with prefect, mlflow:
        print(
            f"Prefect UI  {prefect.url}   (serve the deployments: PREFECT_API_URL={prefect.url}/api make serve)"
        )
        print(f"MLflow UI   {mlflow.url}   logs in {home}; Ctrl-C stops both", flush=True)
        try:
            while prefect.proc.poll() is None and mlflow.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
