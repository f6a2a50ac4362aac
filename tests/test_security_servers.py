"""`cvops up`'s Prefect server, for real (MLflow's Host and CORS checks are its own, passed as
flags): a web page of another origin gets no CORS grant, and with the auth env file the API
wants the credentials."""

from __future__ import annotations

import shutil
import socket

import httpx
import pytest

from components.config import ServersConfig, load_params
from components.runtime.servers import AUTH_FILE, Servers
from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(600)
AUTH = "cvops:FAKE0prefect0PASS"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    ws = tmp_path_factory.mktemp("servers")
    shutil.copy2(ROOT / "prefect.yaml", ws / "prefect.yaml")
    (ws / AUTH_FILE).parent.mkdir()
    (ws / AUTH_FILE).write_text(f"# local credentials\nCVOPS_PREFECT_AUTH={AUTH}\n")
    params = load_params(ROOT / "params.yaml")
    config = ServersConfig(prefect_port=_free_port(), mlflow_port=_free_port(), startup_timeout_s=300)
    servers = Servers(ws, params.model_copy(update={"servers": config}))
    service = servers.services()[0]
    servers._start(service)
    try:
        servers._wait_healthy(service)
        yield servers
    finally:
        servers.down()


def test_foreign_origin_gets_no_cors_grant(prefect_server):
    url = f"{prefect_server.prefect_url}/api/flows/filter"
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    evil = httpx.options(url, headers={"Origin": "http://evil.example", **preflight})
    assert "access-control-allow-origin" not in evil.headers and evil.status_code >= 400, evil.headers
    own = httpx.options(url, headers={"Origin": prefect_server.prefect_url, **preflight})
    assert own.headers.get("access-control-allow-origin") == prefect_server.prefect_url


def test_api_wants_the_auth_env_files_credentials(prefect_server):
    url = f"{prefect_server.prefect_url}/api/flows/filter"
    assert httpx.post(url, json={}).status_code == 401
    user, password = AUTH.split(":")
    assert httpx.post(url, json={}, auth=(user, password)).status_code == 200
    assert prefect_server.credentials() == {"PREFECT_API_AUTH_STRING": AUTH}
    assert "FAKE0prefect0PASS" not in prefect_server.describe()


def test_mlflow_server_is_told_its_own_host_and_origin_only():
    servers = Servers(ROOT, load_params(ROOT / "params.yaml"))  # the command line only
    command = next(s for s in servers.services() if s.name == "mlflow-server").command
    port = servers.config.mlflow_port
    assert command[command.index("--allowed-hosts") + 1] == f"127.0.0.1:{port},localhost:{port}"
    assert command[command.index("--cors-allowed-origins") + 1] == f"http://127.0.0.1:{port},http://localhost:{port}"
