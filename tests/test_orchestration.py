"""`cvops up` for real: first the demo (`cvops run`, on Prefect's temporary server), then a
Prefect server, an MLflow server and a process worker on free loopback ports over that tiny
workspace; the demo's run is in the server's UI; prefect.yaml's deployments applied; the
on-demand deployment triggered through Prefect's REST API with overrides (a DVC experiment,
a task per stage, rejected by its gate), the nightly schedule read back from the server,
both UIs driven in headless Chromium (a Quick run: every stage skipped; the flow run pages:
a task per stage, Skipped and Rejected as such), then `cvops down`.
Two pipeline runs (~2 min of CPU each) serve every test; tests run in file order."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from mlflow import MlflowClient

from components.paths import STAGES
from tests.conftest import BIN, ROOT, dvc, git, git_init, make_workspace, stage_env, tiny_params

pytestmark = pytest.mark.timeout(1800)  # servers + one pipeline run: ~4 min idle, ~12 on a busy 2-core box

TASK = "classification"
MODEL = f"cvops-{TASK}"
MONITOR = "accuracy"
# a shorter training, and a floor no model meets: the experiment is rejected by its gate
OVERRIDE = {f"tasks.{TASK}.train.epochs": "1", f"tasks.{TASK}.gate.thresholds": "[{metric:accuracy,min:1.01}]"}
EXPERIMENT = "api-epochs-1"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def test_stage_progress_bars_leave_the_log_and_each_experiment_stage_is_wrapped(tmp_path):
    """Without servers: a two-stage DVC pipeline whose first stage draws a tqdm bar. The bar's
    redraws reach the progress callback, not the log; an experiment calls the wrapper once per
    stage, in order, with whether it ran (the unchanged first stage: skipped)."""
    from flows import dvc_runner

    bar = "python -c \"from tqdm import tqdm; [None for _ in tqdm(range(4), desc='count up', mininterval=0)]; print('counted')\""
    stages = {"stages": {
        "count": {"cmd": f"{bar} && echo done > count.txt", "outs": ["count.txt"]},  # tqdm draws on stderr
        "use": {"cmd": "python -c \"import yaml; open('use.txt', 'w').write(str(yaml.safe_load(open('params.yaml'))['n']))\"",
                "deps": ["count.txt"], "params": ["n"], "outs": ["use.txt"]}}}
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "params.yaml").write_text("n: 1\n")
    (ws / "dvc.yaml").write_text(yaml.safe_dump(stages))
    git_init(ws)
    dvc(ws, "init", "-q")
    records: list[str] = []
    logger = logging.getLogger("test-progress")
    logger.setLevel(logging.INFO)
    logger.addHandler(type("H", (logging.Handler,), {"emit": lambda self, r: records.append(r.getMessage())})())
    progress: list[tuple[str, float]] = []
    assert dvc_runner.reproduce(ws, "count", logger, lambda desc, pct: progress.append((desc, pct)))
    assert progress and progress[-1] == ("count up", 100.0) and {d for d, _ in progress} == {"count up"}, progress
    assert "counted" in records and not any("%|" in r for r in records), records
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "baseline")

    calls: list[tuple[str, bool]] = []

    def each_stage(target: str, workdir: Path, reproduce) -> bool:
        assert workdir != ws and (workdir / "dvc.yaml").exists(), "runs in DVC's temporary copy"
        calls.append((target, reproduce()))
        return calls[-1][1]

    name, rev = dvc_runner.run_experiment(ws, ["count", "use"], {"n": "2"}, "two", logger, each_stage=each_stage)
    assert calls == [("count", False), ("use", True)]
    assert dvc_runner.show_file(ws, rev, "params.yaml").strip() == "n: 2"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrefectApi(httpx.Client):
    """Prefect's REST API as its own client calls it: a 503 is the server's "retry" (a busy
    SQLite database, e.g. while its scheduler inserts the nightly runs on a loaded machine)."""

    def request(self, *args, **kwargs) -> httpx.Response:
        for attempt in range(6):
            response = super().request(*args, **kwargs)
            if response.status_code != 503:
                break
            time.sleep(2 * (attempt + 1))
        return response


class Live:
    def __init__(self, ws: Path, prefect_port: int, mlflow_port: int) -> None:
        self.ws = ws
        self.prefect = f"http://127.0.0.1:{prefect_port}"
        self.api = PrefectApi(base_url=f"{self.prefect}/api", timeout=30)
        self.mlflow = f"http://127.0.0.1:{mlflow_port}"

    def cvops(self, *args: str) -> subprocess.CompletedProcess:
        env = stage_env()
        for key in ("PREFECT_HOME", "PREFECT_API_URL"):  # the workspace's own, as for a user
            env.pop(key, None)
        return subprocess.run([str(BIN / "cvops"), *args], cwd=self.ws, env=env,
                              capture_output=True, text=True, timeout=1500)

    def deployment(self, name: str) -> dict:
        response = self.api.get(f"/deployments/name/cv-pipeline/{name}")
        response.raise_for_status()
        return response.json()

    def flow_runs(self, deployment_id: str) -> list[dict]:
        body = {"flow_runs": {"deployment_id": {"any_": [deployment_id]}}}
        return self.api.post("/flow_runs/filter", json=body).raise_for_status().json()

    def wait(self, flow_run_id: str, timeout_s: float = 900) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = self.api.get(f"/flow_runs/{flow_run_id}").raise_for_status().json()
            if run["state_type"] in FINAL:
                return run
            time.sleep(3)
        raise AssertionError(f"flow run {flow_run_id} not finished after {timeout_s} s: {run['state_type']}")

    def task_runs(self, flow_run_id: str) -> dict[str, dict]:
        """name -> task run (its state's type, name and message) of one flow run."""
        body = {"task_runs": {"flow_run_id": {"any_": [flow_run_id]}}}
        return {r["name"]: r for r in self.api.post("/task_runs/filter", json=body).raise_for_status().json()}

    def artifacts(self, flow_run_id: str, kind: str) -> list[dict]:
        body = {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}, "type": {"any_": [kind]}}}
        return self.api.post("/artifacts/filter", json=body).raise_for_status().json()

    def log_records(self, flow_run_id: str, flow_only: bool = False) -> list[str]:
        """The run's log records; flow_only: the flow's own, not its tasks' (stage output)."""
        body = {"logs": {"flow_run_id": {"any_": [flow_run_id]},
                         **({"task_run_id": {"is_null_": True}} if flow_only else {})}, "limit": 200}
        return [r["message"] for r in self.api.post("/logs/filter", json=body).json()]

    def logs(self, flow_run_id: str, flow_only: bool = False) -> str:
        return "\n".join(self.log_records(flow_run_id, flow_only))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory):
    ports = {"prefect_port": free_port(), "mlflow_port": free_port(), "startup_timeout_s": 300}

    def edit(params: dict) -> dict:
        params = tiny_params(params)
        params["pipeline"]["tasks"] = [TASK]  # the UI's Quick run (no parameters) runs them all
        return {**params, "servers": ports}

    ws = make_workspace(tmp_path_factory.mktemp("orchestration") / "ws", edit)
    shutil.copy2(ROOT / "prefect.yaml", ws / "prefect.yaml")
    git(ws, "add", "prefect.yaml")
    git(ws, "commit", "-qm", "deployments")
    server = Live(ws, ports["prefect_port"], ports["mlflow_port"])
    server.demo = server.cvops("run")  # as `make demo`: no servers up, Prefect's temporary one
    assert server.demo.returncode == 0, server.demo.stdout + server.demo.stderr
    git(ws, "add", "-A")  # the user commits the demo's dvc.lock; the schedule runs on that
    git(ws, "commit", "-qm", "demo")
    up = server.cvops("up")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert server.prefect in up.stdout and server.mlflow in up.stdout, up.stdout
        yield server
    finally:
        server.cvops("down")


@pytest.fixture(scope="module")
def on_demand_run(live: Live) -> str:
    """The on-demand deployment triggered through the API, with an override."""
    deployment = live.deployment("on-demand")
    parameters = {"tasks": [TASK], "overrides": OVERRIDE, "experiment_name": EXPERIMENT}
    response = live.api.post(f"/deployments/{deployment['id']}/create_flow_run", json={"parameters": parameters})
    return response.raise_for_status().json()["id"]


def test_the_demo_run_made_before_up_is_in_its_ui(live):
    """`cvops run` without servers recorded its flow run where `cvops up`'s server looks: a
    task per stage with the stage's name, the evaluation's progress as a progress artifact
    (not tqdm lines in the log), the report with metric names as code (not e-mail links)."""
    assert live.prefect in live.demo.stdout and live.mlflow in live.demo.stdout, f"Where to look: the configured ports\n{live.demo.stdout}"
    body = {"flow_runs": {"deployment_id": {"is_null_": True}}}
    [demo] = live.api.post("/flow_runs/filter", json=body).raise_for_status().json()
    assert demo["state_type"] == "COMPLETED", demo["state"]
    tasks = live.task_runs(demo["id"])
    assert {f"{stage}@{TASK}" for stage in STAGES} | {f"report {TASK}"} == set(tasks), sorted(tasks)
    assert {t["state_name"] for t in tasks.values()} == {"Completed"}, "a fresh workspace: every stage ran"
    assert "promoted to @champion" in tasks[f"promote@{TASK}"]["state"]["message"]
    [bar] = [a for a in live.artifacts(demo["id"], "progress") if a["task_run_id"] == tasks[f"evaluate@{TASK}"]["id"]]
    assert bar["data"] == 100.0 and bar["description"] == f"evaluate {TASK}"
    logs = live.logs(demo["id"])
    assert "%|" not in logs, "tqdm redraws in the log"
    [report] = live.artifacts(demo["id"], "markdown")
    assert "**promoted**" in report["data"] and f"| `{MONITOR}` |" in report["data"], report["data"]


def test_nightly_schedule_is_registered_and_scheduled_by_the_server(live, on_demand_run):
    nightly = live.deployment("nightly")
    [schedule] = nightly["schedules"]
    assert schedule["active"]
    assert schedule["schedule"]["cron"] == "0 2 * * *" and schedule["schedule"]["timezone"] == "UTC"
    assert nightly["work_pool_name"] == "cvops-local"
    assert nightly["global_concurrency_limit"]["limit"] == 1
    assert live.api.get("/work_pools/cvops-local").json()["concurrency_limit"] == 1, "one run per workspace"
    on_demand = live.deployment("on-demand")
    assert on_demand["schedules"] == []
    described = {k: p.get("description", "") for k, p in on_demand["parameter_openapi_schema"]["properties"].items()}
    assert set(described) == {"tasks", "overrides", "experiment_name"} and all(described.values()), described
    assert "DVC experiment" in " ".join(described["overrides"].split()), "the Run form says what a parameter does"
    deadline = time.monotonic() + 180  # the server's scheduler loop creates the upcoming runs
    while not (scheduled := live.flow_runs(nightly["id"])) and time.monotonic() < deadline:
        time.sleep(5)
    assert scheduled, "the server's scheduler created no run for the nightly deployment"
    assert all(run["state_type"] == "SCHEDULED" for run in scheduled)
    assert all(run["expected_start_time"][11:16] == "02:00" for run in scheduled)


def test_on_demand_run_with_override_is_a_dvc_experiment_rejected_by_its_gate(live, on_demand_run):
    run = live.wait(on_demand_run)
    logs = live.logs(on_demand_run)
    assert run["state_type"] == "FAILED" and run["state"]["message"].startswith("gate rejected: "), f"{run['state']}\n{logs}"
    # the flow's own records (a stage's output may hold a library's traceback, e.g. Ray's warnings),
    # except the one Prefect's engine writes for every failed deployment run (flow_engine.run_flow:
    # "Engine execution exited with unexpected exception", exc_info), which must end in the verdict
    engine = [r for r in live.log_records(on_demand_run, flow_only=True) if r.startswith("Engine execution exited")]
    ours = [r for r in live.log_records(on_demand_run, flow_only=True) if not r.startswith("Engine execution exited")]
    assert not any("Traceback" in r for r in ours), "a rejection is a verdict, not a crash:\n" + "\n".join(ours)
    assert all(r.rstrip().splitlines()[-1].startswith("pipeline.GateRejected: ") for r in engine), engine
    tasks = live.task_runs(on_demand_run)
    assert {f"{stage}@{TASK}" for stage in STAGES} | {f"report {TASK}"} == set(tasks), "a task per stage"
    state = {name.split("@")[0]: (t["state_type"], t["state_name"]) for name, t in tasks.items()}
    assert state["prepare"] == ("COMPLETED", "Skipped"), "unchanged since the demo: DVC skipped it"
    assert state["train"] == ("COMPLETED", "Completed") and state["evaluate"] == ("COMPLETED", "Completed")
    assert state["promote"] == ("FAILED", "Rejected")
    promote = tasks[f"promote@{TASK}"]
    assert "not promoted" in promote["state"]["message"] and "accuracy" in promote["state"]["message"]
    assert promote["run_count"] == 1, "a verdict is not retried"
    assert "Running stage 'train@classification'" in live.logs(on_demand_run), "stage output streamed to the Prefect log"

    client = MlflowClient(tracking_uri=live.mlflow)
    experiment = client.get_experiment_by_name(f"cvops/{TASK}")
    train = next(r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("cvops.stage") == "train")
    assert train.info.run_name == f"{TASK}-train {EXPERIMENT}", "the run names its DVC experiment"
    assert train.data.params["train.epochs"] == "1", "the override reached the training run"
    [candidate] = client.search_model_versions(f"name='{MODEL}' and run_id='{train.info.run_id}'")
    assert candidate.tags["cvops.prefect_flow_run_id"] == on_demand_run
    assert client.get_model_version_by_alias(MODEL, "champion").run_id != train.info.run_id, "rejected: not champion"
    [report] = live.artifacts(on_demand_run, "markdown")
    assert "**not promoted**" in report["data"], report["data"]
    assert EXPERIMENT in dvc(live.ws, "exp", "list", "--name-only").stdout
    changed = git(live.ws, "status", "--porcelain", "--untracked-files=no")
    assert changed == "", f"the experiment changed the workspace the schedule runs on:\n{changed}"


def test_ui_run_button_and_mlflow_ui_in_chromium(live, on_demand_run, tmp_path):
    browser = "/usr/bin/chromium"
    if not Path(browser).exists():
        pytest.skip(f"{browser} is missing: `apt-get install -y chromium` (.ci/run installs it)")
    playwright = pytest.importorskip("playwright.sync_api", reason="the dev group's playwright is missing")
    live.wait(on_demand_run)  # one pipeline at a time
    shots = tmp_path / "screenshots"
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with playwright.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=browser, args=args, headless=True,
            viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.set_default_timeout(60_000)
        try:
            started = _run_from_prefect_ui(live, page, shots)
            _check_prefect_flow_runs(live, page, shots, on_demand_run, started)
            _check_mlflow_ui(live, page, shots)
        finally:
            page.screenshot(path=str(shots / "last.png"))
            context.close()
            copy = ROOT / "benchmarks" / "screenshots"  # for a person to look at (ignored by git)
            shutil.copytree(shots, copy, dirs_exist_ok=True)
    assert started["state_type"] == "COMPLETED", live.logs(started["id"])


def _run_from_prefect_ui(live: Live, page, shots: Path) -> dict:
    page.goto(f"{live.prefect}/deployments")
    page.get_by_text("on-demand").first.wait_for()
    page.get_by_text("nightly").first.wait_for()
    page.screenshot(path=str(shots / "prefect-deployments.png"))

    deployment = live.deployment("on-demand")
    before = {run["id"] for run in live.flow_runs(deployment["id"])}
    # the server answers 503 while its SQLite database is busy (Prefect's Python client retries
    # it; the UI shows "Something went wrong"): a person clicks again, and so does this, 3 times
    for _ in range(3):
        page.goto(f"{live.prefect}/deployments/deployment/{deployment['id']}")
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_text("Quick run").first.click()
        deadline = time.monotonic() + 30
        while not (new := [r for r in live.flow_runs(deployment["id"]) if r["id"] not in before]) and time.monotonic() < deadline:
            time.sleep(1)
        if new:
            return live.wait(new[0]["id"])
    raise AssertionError("the Run button created no flow run in 3 tries")


def _check_prefect_flow_runs(live: Live, page, shots: Path, rejected_id: str, quick: dict) -> None:
    """What a user sees on Prefect's flow run pages (benchmarks/screenshots.py reads them): the
    API's experiment, a task per stage, the unchanged ones Skipped, promote a red 'Rejected'
    whose page says why; the UI's Quick run on an unchanged workspace, every stage Skipped."""
    from benchmarks import screenshots as ui

    stages = {f"{stage}@{TASK}" for stage in STAGES}
    rejected = ui.prefect_flow_run_page(page, live.prefect, rejected_id, shots, "rejected")
    assert rejected["state"] == "Failed" and set(rejected["tasks"]) == stages | {f"report {TASK}"}, rejected
    assert rejected["tasks"][f"prepare@{TASK}"] == ("Skipped", "completed"), "unchanged since the demo"
    assert rejected["tasks"][f"train@{TASK}"] == ("Completed", "completed")
    assert rejected["tasks"][f"promote@{TASK}"] == ("Rejected", "failed"), "the gate's verdict, in red"
    promote = ui.prefect_task_run_page(page, live.prefect, live.task_runs(rejected_id)[f"promote@{TASK}"]["id"], shots, "rejected-promote")
    assert promote["state"] == "Rejected" and "not promoted" in promote["text"] and "accuracy" in promote["text"], promote["text"][-2000:]
    assert "Traceback" not in promote["text"], "a verdict, not a crash"

    skipped = ui.prefect_flow_run_page(page, live.prefect, quick["id"], shots, "quick-run")
    assert skipped["state"] == "Completed"
    assert {t: s for t, s in skipped["tasks"].items() if t in stages} == dict.fromkeys(stages, ("Skipped", "completed")), skipped


def _check_mlflow_ui(live: Live, page, shots: Path) -> None:
    """What a user sees in MLflow after the two runs (the API's experiment, the UI's Quick run):
    the shared page functions of benchmarks/screenshots.py read the pages, this asserts."""
    import json

    from benchmarks import screenshots as ui

    client = MlflowClient(tracking_uri=live.mlflow)
    experiment = client.get_experiment_by_name(f"cvops/{TASK}").experiment_id
    champion = client.get_model_version_by_alias(MODEL, "champion")
    ui.open_mlflow(page, live.mlflow)
    names = ui.runs_page(page, live.mlflow, experiment, shots, TASK)["run_names"]
    assert f"{TASK}-train {EXPERIMENT}" in names, names  # the DVC experiment's run
    assert any(n.startswith(f"{TASK}-train @") for n in names), names  # the Quick run: its commit

    run = ui.run_page(page, live.mlflow, experiment, champion.run_id, shots, TASK)
    assert run["datasets"].startswith(f"{TASK}-data"), "the training data as a logged dataset"
    assert {"train", "val", "test", "robustness", "adversarial"} <= set(run["sections"]), run["sections"]  # tiny data: no fairness groups

    model = ui.model_page(page, live.mlflow, MODEL, shots, TASK)
    assert model["description"].startswith("Last alias move"), model["description"]
    assert '"seq"' not in model["text"] and "cvops.audit.run" in model["text"], "the audit trail is a run, not JSON tags"

    version = ui.version_page(page, live.mlflow, MODEL, str(champion.version), shots, TASK)
    plots = json.loads((live.ws / "reports" / TASK / "card" / "card.json").read_text())["plots"]
    assert len(version["images"]) == len(plots) and all(width > 0 for _, width in version["images"]), version["images"]
    text = version["text"]
    assert text.index("PASSED:") < text.index("Gate verdict") < text.index("Per class") < text.index("Figures")

    card = ui.card_page(page, live.ws / "reports" / TASK / "card" / "model_card.html", shots, TASK)
    assert card["headings"][:3] == ["Gate verdict", "Headline metrics (test split)", "Per class"]
    assert card["headings"][-1] == "Training config" and all(width > 0 for _, width in card["images"])


def test_down_stops_every_service(live):
    pids = [int(p.read_text()) for p in (live.ws / ".cvops" / "run").glob("*.pid")]
    assert len(pids) == 3
    result = live.cvops("down")
    assert result.returncode == 0 and "prefect-server" in result.stdout, result.stdout + result.stderr
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(httpx.TransportError):
        live.api.get("/health")
