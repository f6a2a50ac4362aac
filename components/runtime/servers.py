"""`cvops up` / `cvops down`: a local Prefect server, an MLflow server and a Prefect worker.

Plain process management (no Prefect import): each service is a child process in its own
session, bound to 127.0.0.1, with a pid file under `.cvops/run/` and a log under
`.cvops/logs/`. Prefect's home (its SQLite database, settings) lives in `.cvops/prefect`
(`prefect_home`) so nothing is written to the user's home, and the flow sets the same home
for the temporary server it starts without `cvops up`: the runs of `make demo` are in the
database this server opens, so its UI shows them. MLflow uses the same SQLite store and artifact root
as the embedded default (params.yaml `tracking`), so runs made before `cvops up` show in
its UI. `environment()` is what the pipeline, the worker and the user's shell need to log to
the running servers (`PREFECT_API_URL`, `MLFLOW_TRACKING_URI`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from components.config import Params
from components.runtime.tools import with_tools

HOST = "127.0.0.1"  # loopback only: without the auth env file these servers have no authentication
# Optional credentials (KEY=VALUE lines, chmod 600, never committed: .cvops/ is gitignored):
#   CVOPS_PREFECT_AUTH=user:password   -> Prefect's API auth string (server and clients)
#   CVOPS_MLFLOW_ADMIN_PASSWORD=...    -> MLflow's basic-auth app, admin user `admin`
AUTH_FILE = Path(".cvops") / "auth.env"


def prefect_home(root: Path) -> Path:
    """The workspace's Prefect home: `cvops up`'s server and the flow's temporary server
    (no `cvops up`) keep their runs in its prefect.db, one history for both."""
    return Path(root).resolve() / ".cvops" / "prefect"


@dataclass(frozen=True)
class Service:
    name: str
    command: list[str]
    health_url: str  # answers 200 (and, for the worker, a READY work pool) when usable


class Servers:
    """The three services of one workspace (`root`, where dvc.yaml and prefect.yaml are)."""

    def __init__(self, root: Path, params: Params) -> None:
        self.root, self.params, self.config = root.resolve(), params, params.servers
        self.state = self.root / ".cvops"
        self.prefect_url = f"http://{HOST}:{self.config.prefect_port}"
        self.mlflow_url = f"http://{HOST}:{self.config.mlflow_port}"
        self.work_pool = work_pool(self.root / "prefect.yaml")
        self.auth = read_env_file(self.root / AUTH_FILE)

    def credentials(self) -> dict[str, str]:
        """What clients (the flow, the worker, `prefect` and `mlflow` commands) need to log in to
        these servers when the auth env file sets credentials; never printed."""
        creds = {}
        if self.auth.get("CVOPS_PREFECT_AUTH"):
            creds["PREFECT_API_AUTH_STRING"] = self.auth["CVOPS_PREFECT_AUTH"]
        if self.auth.get("CVOPS_MLFLOW_ADMIN_PASSWORD"):
            creds |= {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": self.auth["CVOPS_MLFLOW_ADMIN_PASSWORD"]}
        return creds

    def environment(self) -> dict[str, str]:
        """Variables that point Prefect, MLflow and the flow at these servers and this workspace."""
        return {
            "PREFECT_HOME": str(prefect_home(self.root)),
            "PREFECT_API_URL": f"{self.prefect_url}/api",
            "PREFECT_UI_API_URL": f"{self.prefect_url}/api",  # what the UI in the browser calls
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "CVOPS_ROOT": str(self.root),
        }

    def services(self) -> list[Service]:
        bin_dir = Path(sys.executable).parent  # the project environment's prefect and mlflow
        store = self.root / "mlruns.db"
        artifacts = self.root / self.params.tracking.artifact_root
        return [
            Service("prefect-server", [str(bin_dir / "prefect"), "server", "start", "--host", HOST,
                                       "--port", str(self.config.prefect_port)],
                    f"{self.prefect_url}/api/health"),
            Service("mlflow-server", [str(bin_dir / "mlflow"), "server", "--host", HOST,
                                      "--port", str(self.config.mlflow_port), "--workers", "1",
                                      "--backend-store-uri", f"sqlite:///{store}",
                                      "--default-artifact-root", str(artifacts),
                                      # its own origin and Host only (DNS rebinding, cross-site requests)
                                      "--allowed-hosts", f"{HOST}:{self.config.mlflow_port},localhost:{self.config.mlflow_port}",
                                      "--cors-allowed-origins", f"{self.mlflow_url},http://localhost:{self.config.mlflow_port}",
                                      *(["--app-name", "basic-auth"] if "MLFLOW_TRACKING_PASSWORD" in self.credentials() else [])],
                    f"{self.mlflow_url}/health"),
            # --limit 1 with the pool's concurrency limit: two runs never share a workspace
            Service("prefect-worker", [str(bin_dir / "prefect"), "worker", "start", "--pool",
                                       self.work_pool, "--type", "process", "--limit", "1"],
                    f"{self.prefect_url}/api/work_pools/{self.work_pool}"),
        ]

    def _pid_file(self, name: str) -> Path:
        return self.state / "run" / f"{name}.pid"

    def pid(self, name: str) -> int | None:
        """The pid of a running service started by `up`, or None."""
        path = self._pid_file(name)
        if not path.exists():
            return None
        pid = int(path.read_text().strip())
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def running(self) -> bool:
        return all(self.pid(s.name) for s in self.services())

    def _env(self) -> dict[str, str]:
        env = with_tools({**os.environ, **self.environment(), **self.credentials()})
        env.pop("PREFECT_API_KEY", None)
        # a web page of another origin gets no CORS grant (Prefect's default is `*`); Prefect
        # has no Host check, so loopback binding is what keeps other machines out
        env["PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS"] = f"{self.prefect_url},http://localhost:{self.config.prefect_port}"
        if self.auth.get("CVOPS_PREFECT_AUTH"):
            env["PREFECT_SERVER_API_AUTH_STRING"] = self.auth["CVOPS_PREFECT_AUTH"]
        if self.auth.get("CVOPS_MLFLOW_ADMIN_PASSWORD"):
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(self._mlflow_auth_config())
        return env

    def _mlflow_auth_config(self) -> Path:
        """MLflow's basic-auth app config: its user database in .cvops/, admin password from the
        auth env file (the app creates the admin user with it on first start)."""
        path = self.state / "mlflow-auth.ini"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text("[mlflow]\ndefault_permission = READ\n"
                        f"database_uri = sqlite:///{self.state / 'mlflow-auth.db'}\n"
                        f"admin_username = admin\nadmin_password = {self.auth['CVOPS_MLFLOW_ADMIN_PASSWORD']}\n"
                        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
        return path

    def _start(self, service: Service) -> None:
        if self.pid(service.name):
            return
        for sub in ("run", "logs", "prefect"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        log = open(self.state / "logs" / f"{service.name}.log", "ab")  # noqa: SIM115 (child owns it)
        process = subprocess.Popen(service.command, cwd=self.root, env=self._env(), stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)  # its own group: `down` stops children too
        log.close()
        self._pid_file(service.name).write_text(str(process.pid))

    def _wait_healthy(self, service: Service) -> None:
        deadline = time.monotonic() + self.config.startup_timeout_s
        while time.monotonic() < deadline:
            if not self.pid(service.name):
                break
            if healthy(service, self.auth.get("CVOPS_PREFECT_AUTH")):
                return
            time.sleep(1)
        log = self.state / "logs" / f"{service.name}.log"
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.exists() else ""
        self.down()
        raise RuntimeError(f"{service.name} did not become healthy at {service.health_url} within "
                           f"{self.config.startup_timeout_s:.0f} s (params.yaml servers.startup_timeout_s); "
                           f"log {log}:\n{tail}\nfix: free the port in params.yaml servers or read the log")

    def up(self, deploy: bool = True, report=lambda line: None) -> None:
        """Start the servers, create the work pool and deployments, start the worker; idempotent.
        `report(line)` is told each step as it is done (the minutes of startup are not silent)."""
        prefect_server, mlflow_server, worker = self.services()
        started = time.monotonic()
        self._start(prefect_server)
        self._start(mlflow_server)  # both start at once: ~20 s each here
        report(f"starting {prefect_server.name} and {mlflow_server.name} (logs in {self.state / 'logs'}) ...")
        self._wait_healthy(prefect_server)
        report(f"{prefect_server.name} up at {self.prefect_url} ({time.monotonic() - started:.0f} s)")
        self._wait_healthy(mlflow_server)
        report(f"{mlflow_server.name} up at {self.mlflow_url} ({time.monotonic() - started:.0f} s)")
        if deploy:
            report("applying prefect.yaml's deployments ...")
            self.deploy()
        self._start(worker)
        self._wait_healthy(worker)
        report(f"{worker.name} up, pool '{self.work_pool}' ({time.monotonic() - started:.0f} s)")

    def deploy(self) -> None:
        """Create the process work pool (concurrency 1) and apply prefect.yaml's deployments."""
        pool = self.work_pool
        self._prefect("work-pool", "create", pool, "--type", "process", check=False)  # exists: fine
        self._prefect("work-pool", "set-concurrency-limit", pool, "1")
        self._prefect("--no-prompt", "deploy", "--all")

    def _prefect(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(Path(sys.executable).parent / "prefect"), *args]
        result = subprocess.run(command, cwd=self.root, env=self._env(), capture_output=True, text=True)
        if check and result.returncode != 0:
            raise RuntimeError(f"`prefect {' '.join(args)}` failed in {self.root} "
                               f"({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def down(self, timeout_s: float = 15) -> list[str]:
        """Stop every service `up` started (SIGTERM to its process group, then SIGKILL)."""
        stopped = []
        for service in reversed(self.services()):  # the worker first, its servers last
            pid = self.pid(service.name)
            if pid:
                _stop_group(pid, timeout_s)
                stopped.append(service.name)
            self._pid_file(service.name).unlink(missing_ok=True)
        return stopped

    def describe(self) -> str:
        return "\n".join([
            f"Prefect UI:  {self.prefect_url}   (deployments, flow runs, artifacts)",
            f"MLflow UI:   {self.mlflow_url}   (runs, registered models)",
            f"Worker:      pool '{self.work_pool}' (logs in {self.state / 'logs'})",
            "To log to these servers from your shell (dvc repro, scripts):",
            *(f"  export {k}={v}" for k, v in self.environment().items()),
            *([f"  # and the credentials: {', '.join(self.credentials())} (values in {AUTH_FILE}, not shown)"]
              if self.credentials() else []),
            "`cvops run` uses them while they are up. Stop with `cvops down`.",
        ])


def work_pool(prefect_yaml: Path) -> str:
    """The work pool prefect.yaml's deployments name (one pool, so one worker serves them)."""
    import yaml

    if not prefect_yaml.exists():
        raise FileNotFoundError(f"{prefect_yaml} is missing: run `cvops up` from the repository root")
    pools = {d["work_pool"]["name"] for d in yaml.safe_load(prefect_yaml.read_text())["deployments"]}
    if len(pools) != 1:
        raise ValueError(f"{prefect_yaml}: deployments use work pools {sorted(pools)}; "
                         "`cvops up` starts one worker, so give them one pool")
    return pools.pop()


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines ('#' comments); {} when the file is missing."""
    if not path.is_file():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip().strip("'\"") for key, value in pairs}


def healthy(service: Service, auth_string: str | None = None) -> bool:
    request = urllib.request.Request(service.health_url)
    if auth_string:  # the worker's check reads a work pool: an authenticated endpoint
        request.add_header("Authorization", "Basic " + base64.b64encode(auth_string.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read()
    except (urllib.error.URLError, OSError):
        return False
    if service.name == "prefect-worker":  # the pool is READY once a worker polls it
        return json.loads(body).get("status") == "READY"
    return response.status == 200


def _stop_group(pid: int, timeout_s: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        if _reap(pid):
            break
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError, PermissionError):  # what is left of the group
        os.killpg(pid, signal.SIGKILL)


def _reap(pid: int) -> bool:
    """Collect a child of this process (when `up` and `down` run in one process, as in tests)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == pid
