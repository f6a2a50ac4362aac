"""infra/docker-compose.yml cannot run here (no container engine), so check what can be:
it parses, every service's command is accepted by the installed CLI it calls, the worker's
environment points at the other services and sets every variable the code reads, and every
published port is bound to the host's loopback."""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml

from tests.conftest import BIN, ROOT

COMPOSE = ROOT / "infra" / "docker-compose.yml"
SERVICES = {"postgres", "minio", "minio-buckets", "mlflow", "prefect-server", "prefect-worker",
            "ray-head", "ray-worker"}
SET_BY_THE_FLOW = {"CVOPS_FLOW_RUN_ID", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
                   "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV",  # these two: DVC's, inside `dvc exp run`
                   "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}  # set for a stage's local cluster only (loopback)


@cache
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@cache
def cli_help(*command: str) -> str:
    return subprocess.run([str(BIN / command[0]), *command[1:], "--help"], capture_output=True,
                          text=True, timeout=300, check=True).stdout


def test_compose_parses_with_every_service():
    assert set(compose()["services"]) == SERVICES
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


@pytest.mark.parametrize("service,subcommand", [
    ("mlflow", ("mlflow", "server")),
    ("prefect-server", ("prefect", "server", "start")),
    ("prefect-worker", ("prefect", "worker", "start")),
    ("ray-head", ("ray", "start")),
    ("ray-worker", ("ray", "start")),
])
def test_service_command_is_accepted_by_the_installed_cli(service, subcommand):
    command = compose()["services"][service]["command"]
    assert tuple(command[: len(subcommand)]) == subcommand
    options = [arg for arg in command if arg.startswith("--")]
    unknown = [opt for opt in options if not re.search(rf"{re.escape(opt)}\b", cli_help(*subcommand))]
    assert not unknown, f"{service}: `{' '.join(subcommand)}` has no options {unknown}"


def _env_read_by_code() -> set[str]:
    pattern = re.compile(r"""os\.environ(?:\.get)?[(\[]\s*["']([A-Z_]+)["']""")
    names = set()
    for path in [*(ROOT / "components").rglob("*.py"), *(ROOT / "flows").rglob("*.py")]:
        names |= set(pattern.findall(path.read_text()))
    return names - SET_BY_THE_FLOW


def test_worker_environment_points_at_the_services_and_covers_what_the_code_reads():
    services = compose()["services"]
    env = services["prefect-worker"]["environment"]
    missing = _env_read_by_code() - set(env)
    assert not missing, f"the code reads {sorted(missing)}; set them for prefect-worker"
    port = lambda name: services[name]["command"][services[name]["command"].index("--port") + 1]  # noqa: E731
    assert env["PREFECT_API_URL"] == f"http://prefect-server:{port('prefect-server')}/api"
    assert env["MLFLOW_TRACKING_URI"] == f"http://mlflow:{port('mlflow')}"
    assert env["RAY_ADDRESS"] == f"ray-head:{port('ray-head')}"
    assert env["CVOPS_ROOT"] == services["prefect-worker"]["working_dir"]
    assert services["ray-worker"]["command"][services["ray-worker"]["command"].index("--address") + 1] == env["RAY_ADDRESS"]
    pools = {d["work_pool"]["name"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    worker = services["prefect-worker"]["command"]
    assert pools == {worker[worker.index("--pool") + 1]}, "the worker polls the deployments' pool"


def test_stores_are_postgres_and_s3():
    services = compose()["services"]
    mlflow = services["mlflow"]["command"]
    assert mlflow[mlflow.index("--backend-store-uri") + 1].startswith("postgresql://")
    assert mlflow[mlflow.index("--artifacts-destination") + 1].startswith("s3://")
    prefect_db = services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert prefect_db.startswith("postgresql+asyncpg://")
    init = (Path(COMPOSE.parent) / "postgres" / "init.sql").read_text()
    assert "CREATE DATABASE mlflow" in init and "CREATE DATABASE prefect" in init
