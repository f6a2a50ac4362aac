"""Screenshots of what a user sees after `make demo`: per task, MLflow's runs list, the
training run (overview and its metric sections), the registered model page, the registered
version (its card, figures included), the HTML model card and each of its figures; then
Prefect's page of the newest pipeline flow run (its timeline, the Task Runs tab: a task per
stage with Skipped / Rejected states) and each promote task run (the verdict in its log).

Chromium is Debian's /usr/bin/chromium driven by the locked playwright (never `playwright
install`). Without --mlflow an MLflow server is started on a free loopback port over this
workspace's store (params.yaml `tracking`), and without --prefect a Prefect server (API and
UI only) over the workspace's Prefect home (.cvops/prefect); both are stopped at the end.

    uv run python benchmarks/screenshots.py [--tasks classification ...] [--out benchmarks/screenshots]
    uv run python benchmarks/screenshots.py --mlflow http://127.0.0.1:5000 --prefect http://127.0.0.1:4200   # a running `cvops up`

Each page function returns what it saw (run names, metric sections, image sizes, ...) for
tests/test_orchestration.py to assert on; this script prints it as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SECTION_HEADER = "[data-testid='experiment-view-compare-runs-section-header']"  # a metric section on the run page
# what the page shows of its images: (src, naturalWidth) for each <img> in `root`
IMAGES = "root => Array.from((root || document).querySelectorAll('img')).map(i => [(i.getAttribute('src') || '').slice(0, 100), i.naturalWidth])"


def open_mlflow(page, base: str) -> None:
    """MLflow 3 opens in GenAI mode: switch to 'Model training' once per browser profile."""
    page.goto(f"{base}/#/experiments")
    page.get_by_text("Model training", exact=True).first.click()


def _close_assistant(page) -> None:
    close = page.get_by_role("button", name="Close", exact=True)  # the MLflow Assistant side panel
    if close.count():
        close.first.click()


def _loaded_images(page, locator) -> list[list]:
    """(src, naturalWidth) of the images under `locator` once each has loaded or failed."""
    page.wait_for_function("root => Array.from(root.querySelectorAll('img')).every(i => i.complete)", arg=locator.element_handle())
    return locator.evaluate(IMAGES)


def _tall_screenshot(page, path: Path, height: int) -> None:
    """MLflow's app scrolls inside its frame (a full-page shot is one window): a tall window shows the page."""
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": height})
    page.wait_for_timeout(500)  # the layout follows the new size
    page.screenshot(path=str(path))
    page.set_viewport_size(size)


def runs_page(page, base: str, experiment_id: str, shots: Path, task: str) -> dict:
    page.goto(f"{base}/#/experiments/{experiment_id}/runs")
    page.get_by_text(f"{task}-train", exact=False).first.wait_for()
    _close_assistant(page)
    names = page.locator("a").evaluate_all(f"as => as.map(a => a.textContent.trim()).filter(t => t.startsWith('{task}-'))")
    page.screenshot(path=str(shots / f"{task}-mlflow-runs.png"))
    return {"run_names": names}


def run_page(page, base: str, experiment_id: str, run_id: str, shots: Path, task: str) -> dict:
    page.goto(f"{base}/#/experiments/{experiment_id}/runs/{run_id}")
    page.get_by_text("Datasets", exact=True).first.wait_for()
    _close_assistant(page)
    datasets = page.get_by_text(f"{task}-data", exact=False)
    seen = {"datasets": datasets.first.text_content() if datasets.count() else ""}
    page.screenshot(path=str(shots / f"{task}-mlflow-run.png"))
    page.goto(f"{base}/#/experiments/{experiment_id}/runs/{run_id}/model-metrics")
    page.locator(SECTION_HEADER).first.wait_for()
    headers = page.locator(SECTION_HEADER).evaluate_all("hs => hs.map(h => h.textContent.trim())")  # 'val/recall(3)Add chart'
    seen["sections"] = {m[1]: int(m[2]) for h in headers if (m := re.match(r"(.+?)\((\d+)\)", h))}
    page.screenshot(path=str(shots / f"{task}-mlflow-run-metrics.png"))
    return seen


def model_page(page, base: str, model: str, shots: Path, task: str) -> dict:
    page.goto(f"{base}/#/models/{model}")
    page.get_by_text("Version 1", exact=True).first.wait_for()
    _close_assistant(page)
    description = page.get_by_text("Last alias move", exact=False)
    seen = {"text": page.locator("body").inner_text(), "description": description.first.text_content() if description.count() else ""}
    _tall_screenshot(page, shots / f"{task}-mlflow-model.png", 2400)
    return seen


def version_page(page, base: str, model: str, version: str, shots: Path, task: str) -> dict:
    page.goto(f"{base}/#/models/{model}/versions/{version}")
    page.get_by_text("Per class", exact=True).first.wait_for()
    _close_assistant(page)
    body = page.locator("body")
    seen = {"text": body.inner_text(), "images": [i for i in _loaded_images(page, body) if "get-artifact" in i[0]]}
    _tall_screenshot(page, shots / f"{task}-mlflow-version.png", 4000)
    return seen


def card_page(page, card_html: Path, shots: Path, task: str) -> dict:
    """The HTML model card (reports/<task>/card/) and each figure as it shows there."""
    page.goto(card_html.resolve().as_uri())
    headings = page.locator("h2").all_text_contents()
    seen = {"headings": headings, "images": _loaded_images(page, page.locator("body"))}
    page.screenshot(path=str(shots / f"{task}-card.png"), full_page=True)
    for n, figure in enumerate(page.locator("img").all()):
        figure.screenshot(path=str(shots / f"{task}-figure-{n}-{figure.get_attribute('alt')}.png"))
    return seen


def prefect_flow_run_page(page, base: str, flow_run_id: str, shots: Path, name: str) -> dict:
    """A flow run in Prefect's UI: its state and timeline (a screenshot: the graph is a canvas),
    then the Task Runs tab: each task run's name, state name (Skipped, Rejected, ...) and type."""
    page.goto(f"{base}/runs/flow-run/{flow_run_id}")
    heading = page.locator(".state-badge").first
    heading.wait_for()
    count = page.get_by_text(re.compile(r"^\d+ Task runs?$")).first
    count.wait_for()
    page.wait_for_timeout(1000)  # the timeline draws its bars
    seen = {"state": heading.inner_text().strip()}
    page.screenshot(path=str(shots / f"prefect-flow-run-{name}.png"))
    page.get_by_text("Task Runs", exact=True).first.click()
    page.wait_for_function("n => document.querySelectorAll('.state-list-item').length >= n",
                           arg=int(count.inner_text().split()[0]))
    rows = page.locator(".state-list-item").evaluate_all("""rs => rs.map(r => [
        r.querySelector('.state-list-item__name').textContent.trim(),
        r.querySelector('.state-badge').textContent.trim(),
        (r.className.match(/state-list-item--(\\w+)/) || [])[1]])""")
    seen["tasks"] = {task: (state, kind) for task, state, kind in rows}
    _tall_screenshot(page, shots / f"prefect-flow-run-{name}-tasks.png", 700 + 85 * len(rows))  # every row in view
    return seen


def prefect_task_run_page(page, base: str, task_run_id: str, shots: Path, name: str) -> dict:
    """A task run's page: its state and its log (where Prefect shows the state's message)."""
    page.goto(f"{base}/runs/task-run/{task_run_id}")
    page.get_by_text("Finished in state", exact=False).first.wait_for()
    seen = {"state": page.locator(".state-badge").first.inner_text().strip(), "text": page.locator("body").inner_text()}
    page.screenshot(path=str(shots / f"prefect-task-run-{name}.png"))
    return seen


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server(command: list[str], health: str, env: dict[str, str] | None = None):
    """A server for the screenshots (command listening on health's port), stopped at the end."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(health, timeout=5)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{command[0]} did not answer {health}") from None
                time.sleep(2)
        yield health.rsplit("/", 1)[0].removesuffix("/api")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def mlflow_server(store: str, artifacts: Path):
    """`mlflow server` on a free loopback port over the workspace's store."""
    port, bin_dir = free_port(), Path(sys.executable).parent
    return server([str(bin_dir / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                   "--backend-store-uri", store, "--default-artifact-root", str(artifacts)], f"http://127.0.0.1:{port}/health")


def prefect_server(home: Path):
    """Prefect's API and UI (no scheduler or other services) on a free loopback port over the
    workspace's Prefect home, where `cvops run` and `cvops up` record their flow runs."""
    port, bin_dir = free_port(), Path(sys.executable).parent
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": api, "PREFECT_UI_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    return server([str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-services"],
                  f"{api}/health", env)


def latest_flow_run(base: str) -> dict | None:
    """The newest finished run of the pipeline flow (Prefect's REST API)."""
    body = {"flows": {"name": {"any_": ["cv-pipeline"]}}, "sort": "START_TIME_DESC", "limit": 1,
            "flow_runs": {"state": {"type": {"any_": ["COMPLETED", "FAILED"]}}}}
    request = urllib.request.Request(f"{base}/api/flow_runs/filter", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    runs = json.loads(urllib.request.urlopen(request, timeout=30).read())
    return runs[0] if runs else None


def task_runs(base: str, flow_run_id: str) -> dict[str, dict]:
    body = {"task_runs": {"flow_run_id": {"any_": [flow_run_id]}}}
    request = urllib.request.Request(f"{base}/api/task_runs/filter", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    return {r["name"]: r for r in json.loads(urllib.request.urlopen(request, timeout=30).read())}


def shoot_prefect(base: str, tasks: list[str], shots: Path) -> dict:
    """The newest pipeline flow run (a task per stage, Skipped / Rejected states) and each
    task's promote task run (the gate's verdict in its log)."""
    run = latest_flow_run(base)
    if run is None:
        return {"flow_run": "none finished yet: `make demo` first"}
    shots.mkdir(parents=True, exist_ok=True)
    with browser_page() as page:
        seen = {"flow_run": prefect_flow_run_page(page, base, run["id"], shots, "latest")}
        by_name = task_runs(base, run["id"])
        for task in tasks:
            if promote := by_name.get(f"promote@{task}"):
                found = prefect_task_run_page(page, base, promote["id"], shots, f"promote-{task}")
                seen[f"promote@{task}"] = found["state"]
    return seen


@contextmanager
def browser_page():
    """A page of headless Debian Chromium (1400 px wide, 90 s timeouts), closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(90_000)
        try:
            yield page
        finally:
            browser.close()


def shoot(base: str, tasks: list[str], shots: Path, params) -> dict:
    from mlflow import MlflowClient

    from components.runtime import tracking

    client, seen = MlflowClient(base), {}
    shots.mkdir(parents=True, exist_ok=True)
    with browser_page() as page:
        open_mlflow(page, base)
        for task in tasks:
            experiment = client.get_experiment_by_name(tracking.experiment_name(params, task))
            model = tracking.model_name(params, task)
            champion = client.get_model_version_by_alias(model, "champion")
            seen[task] = {
                "runs": runs_page(page, base, experiment.experiment_id, shots, task),
                "run": run_page(page, base, experiment.experiment_id, champion.run_id, shots, task),
                "model": model_page(page, base, model, shots, task),
                "version": version_page(page, base, model, str(champion.version), shots, task),
                "card": card_page(page, Path("reports", task, "card", "model_card.html"), shots, task),
            }
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="*", help="default: params.yaml pipeline.tasks")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "screenshots")  # ignored by git
    parser.add_argument("--mlflow", help="a running MLflow server (default: one started over the local store)")
    parser.add_argument("--prefect", help="a running Prefect server (default: one started over .cvops/prefect)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the workspace (params.yaml, reports/, the store)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from components.config import load_params
    from components.runtime import tracking

    os.chdir(args.root)  # params' relative paths (the store, reports/) are the workspace's
    params = load_params(Path("params.yaml"))
    tasks = args.tasks or list(params.pipeline.tasks)
    if args.mlflow:
        seen = shoot(args.mlflow, tasks, args.out, params)
    else:
        with mlflow_server(tracking.tracking_uri(params), Path(params.tracking.artifact_root).resolve()) as url:
            seen = shoot(url, tasks, args.out, params)
    for task in seen.values():  # the page texts are for tests; a person reads the screenshots
        task["model"].pop("text"), task["version"].pop("text")
    if args.prefect:
        seen["prefect"] = shoot_prefect(args.prefect, tasks, args.out)
    else:
        from components.runtime.servers import prefect_home

        with prefect_server(prefect_home(Path.cwd())) as url:
            seen["prefect"] = shoot_prefect(url, tasks, args.out)
    print(json.dumps(seen, indent=1))
    print(f"screenshots: {args.out}")


if __name__ == "__main__":
    main()
