"""End to end: `headwater ui` on a free loopback port over a store filled by real flow
runs, driven by headless Chromium (Debian's ``chromium``) through Playwright.

Skips, saying why, without the browser or Playwright. The screenshot in the docs comes
from here: docs/images/dashboard.png is written when missing, or always with
HEADWATER_UPDATE_SCREENSHOTS=1 (otherwise the test writes it to a temporary folder, so a
test run does not change the repository).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "images" / "dashboard.png"
ATTEMPTS_SCREENSHOT = ROOT / "docs" / "images" / "dashboard-attempts.png"
BIG_RUN_SCREENSHOT = ROOT / "docs" / "images" / "dashboard-big-run.png"
SEARCH_SCREENSHOT = ROOT / "docs" / "images" / "dashboard-runs.png"
GRAPH_SCREENSHOT = ROOT / "docs" / "images" / "dashboard-graph.png"

if not Path(CHROMIUM).exists():
    pytest.skip("needs Debian's chromium package at /usr/bin/chromium (apt-get install chromium)",
                allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="needs Playwright's Python package (pip install playwright)")
pytest.importorskip("markdown_it", reason='the dashboard needs its extra: pip install "headwater[ui]"')

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]

FILL = '''
import datetime as dt
import time

from headwater import flow, task, unmapped, get_run_logger
from headwater.tasks import task_input_hash

attempts = []


@task
def extract(n: int) -> list:
    time.sleep(0.05)
    get_run_logger().info("extracted %d rows", n)
    return list(range(n))


@task(retries=2, retry_delay_seconds=0.05, tags=["network"])
def fetch_rate() -> float:
    attempts.append(1)
    get_run_logger().info("attempt %d", len(attempts))
    time.sleep(0.03)
    if len(attempts) < 3:
        raise ConnectionError("rate service unavailable")
    return 1.5


@task(cache_key_fn=task_input_hash, cache_expiration=dt.timedelta(hours=1))
def transform(row: int, rate: float) -> float:
    time.sleep(0.04)
    return row * rate


@flow(flow_run_name="publish-{n}")
def publish(n: int) -> int:
    """Publishes the report."""
    time.sleep(0.03)
    return n


@flow(version="2.1", flow_run_name="nightly-{n}")
def nightly(n: int = 3) -> int:
    """# Nightly load

Moves the day's **orders** into the warehouse.

- extract
- transform
- load
"""
    rows = extract(n)
    rate = fetch_rate()
    values = [f.result() for f in transform.map(rows, rate=unmapped(rate))]
    transform(0, rate)  # computed by the map above: a cache hit
    publish(n)
    return len(values)


@flow(flow_run_name="evil-run")
def evil() -> None:
    """Looks <script>window.__pwned = 1; document.title = "pwned"</script> harmless
<img src=x onerror="window.__pwned = 2">"""


@flow(flow_run_name="broken-{i}")
def broken(i: int) -> None:
    raise ValueError("no good")


REGIONS = ["emea", "amer", "apac", "latam", "nordics", "india"]


@task
def download(region: str) -> list:
    return [region] * 3


@task
def clean(rows: list) -> list:
    if rows[0] == "apac":
        raise ValueError("apac: 3 rows without a currency")
    return rows


@task
def merge(parts: list) -> list:
    return [row for part in parts for row in part]


@task
def publish_report(rows: list) -> int:
    return len(rows)


@flow(flow_run_name="regions")
def regional_report() -> int:
    """Downloads each region, cleans it, merges them and publishes the report."""
    raw = [download.submit(region) for region in REGIONS]
    cleaned = [clean.submit(rows) for rows in raw]
    merged = merge.submit(cleaned)
    return publish_report.submit(merged).result()


nightly(3)
evil()
for i in range(2):
    broken(i, return_state=True)
regional_report(return_state=True)

# A run of 2,000 task runs (every 500th failed), recorded as the engine records one.
import sys
sys.path.insert(0, TESTS)
import test_dashboard_big_run as big
from headwater import get_store

big.FAILED_EVERY = 500
big.record_big_run(get_store(), "big-0000-run", tasks=2000)
'''

LIVE = '''
import os
import time

from headwater import flow, task


@task
def wait_for_release(path: str) -> str:
    deadline = time.time() + 30
    while not os.path.exists(path) and time.time() < deadline:
        time.sleep(0.05)
    return "released"


@flow(flow_run_name="live-run")
def waiting(path: str) -> str:
    """Waits until the test lets it finish."""
    return wait_for_release(path)


waiting(os.environ["RELEASE_FILE"])
'''

RETRIED = '''
import os
import time

import headwater
from headwater import flow, task


@task
def step(name: str, value: int) -> int:
    time.sleep(0.05)
    if name == os.environ.get("BROKEN_STEP"):
        raise RuntimeError(f"step {name} is broken")
    return value + 1


@flow(persist_result=True, flow_run_name="pipeline-{start}")
def pipeline(start: int = 0) -> int:
    """Three steps; the third fails on the first attempt."""
    a = step("one", start)
    b = step("two", a)
    return step("three", b)


if __name__ == "__main__":  # not when the retry loads this file to find the flow
    os.environ["BROKEN_STEP"] = "three"
    assert pipeline(1, return_state=True).is_failed()
    del os.environ["BROKEN_STEP"]
    assert headwater.retry_run("pipeline-1").is_completed()
'''


# Loopback requests must not go through an HTTP proxy set in the environment.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _headwater_command() -> list[str]:
    script = shutil.which("headwater", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "headwater.cli"]


class Site:
    """A `headwater ui` process and the environment of its run store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
        self.env["HEADWATER_HOME"] = str(root / "home")
        (root / "fill.py").write_text(f"TESTS = {str(Path(__file__).parent)!r}\n" + FILL)
        subprocess.run([sys.executable, str(root / "fill.py")], env=self.env, check=True,
                       capture_output=True, timeout=60)
        self.out = root / "ui.out"
        with open(self.out, "w") as out:
            self.proc = subprocess.Popen([*_headwater_command(), "ui", "--port", "0"], env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT)
        self.url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        deadline = time.time() + 20
        while time.time() < deadline:
            text = self.out.read_text()
            if "http://" in text:
                return "http://" + text.split("http://", 1)[1].split("/", 1)[0]
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"`headwater ui` did not start: {self.out.read_text()}")

    def api(self, path: str) -> Any:
        with DIRECT.open(self.url + "/api" + path, timeout=10) as response:
            return json.loads(response.read())

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    running = Site(tmp_path_factory.mktemp("dashboard"))
    yield running
    running.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    yield tab
    context.close()


def test_ui_listens_on_loopback_only(site: Site) -> None:
    """`headwater ui` without --host serves on 127.0.0.1 and says where."""
    assert site.url.startswith("http://127.0.0.1:")
    assert "headwater dashboard on http://127.0.0.1:" in site.out.read_text()


def test_flows_page_renders_the_markdown_description(site: Site, page: Page) -> None:
    """The flows page shows each flow; a description's heading and list are real HTML,
    and version, last run and counts are there."""
    page.goto(site.url + "/")
    card = page.locator("section.flow", has=page.locator("h2", has_text="nightly"))
    expect(card.locator(".description h1")).to_have_text("Nightly load")
    expect(card.locator(".description li")).to_have_text(["extract", "transform", "load"])
    expect(card.locator(".description strong")).to_have_text("orders")
    expect(card).to_contain_text("2.1")
    expect(card).to_contain_text("nightly-3")
    broken = page.locator("section.flow", has=page.locator("h2", has_text="broken"))
    expect(broken).to_contain_text("failed 2")


def test_a_script_in_a_description_stays_inert(site: Site, page: Page) -> None:
    """A <script> and an onerror <img> in a description show as text and never run."""
    page.goto(site.url + "/")
    card = page.locator("section.flow", has=page.locator("h2", has_text="evil"))
    expect(card.locator(".description")).to_contain_text('<script>window.__pwned = 1; document.title = "pwned"</script>')
    expect(card.locator(".description")).to_contain_text('<img src=x onerror="window.__pwned = 2">')
    assert card.locator(".description script, .description img").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert page.title() == "Flows · headwater"


def test_follow_a_flow_to_its_run_and_a_retried_task_run(site: Site, page: Page) -> None:
    """Flow → its runs → the run (timeline with retries, cache hit, subflow, logs) →
    the retried task run (its states with their messages)."""
    page.goto(site.url + "/")
    page.locator("section.flow h2 a", has_text="nightly").click()
    expect(page.locator("h1")).to_have_text("Flow runs of nightly")
    page.get_by_role("link", name="nightly-3").click()
    expect(page.locator("h1")).to_contain_text("nightly-3")
    expect(page.locator("table.kv th")).to_have_text(["n"])
    expect(page.locator("table.kv td")).to_have_text(["3"])

    retried = page.locator("table.timeline tr", has=page.locator("a", has_text="fetch_rate"))
    expect(retried.locator(".badge.retried")).to_have_text("2 retries")
    assert retried.locator("rect.seg-waiting").count() == 2  # two waits before retries
    assert retried.locator("rect.seg-running").count() == 3  # three attempts
    hit = page.locator("table.timeline tr", has=page.locator(".badge.cache-hit"))
    expect(hit).to_have_count(1)
    expect(hit.locator(".state")).to_have_text("Cached")
    expect(page.locator("tr.subflow")).to_contain_text("publish-3")
    expect(page.locator("table.logs")).to_contain_text("rate service unavailable")
    expect(page.locator("table.logs")).to_contain_text("attempt 3")

    retried.locator("a", has_text="fetch_rate").click()
    expect(page.locator("h1")).to_contain_text("Task run fetch_rate-")
    expect(page.locator(".badge.retried")).to_have_text("2 retries")
    states = page.locator("table.states tbody tr")
    expect(states.locator("td:nth-child(2)")).to_have_text(
        ["Pending", "Running", "AwaitingRetry", "Retrying", "AwaitingRetry", "Retrying", "Completed"])
    expect(page.locator("dl.facts")).to_contain_text("network")
    expect(page.locator("table.logs")).to_contain_text("attempt 2")
    page.locator("dl.facts a", has_text="nightly-3").click()
    expect(page.locator("h1")).to_contain_text("nightly-3")


def test_a_subflow_is_linked_both_ways(site: Site, page: Page) -> None:
    """The subflow row links to the child run, whose page links back to its parent."""
    page.goto(site.url + "/runs/nightly-3")
    page.locator("tr.subflow a", has_text="publish-3").click()
    expect(page.locator("h1")).to_contain_text("publish-3")
    page.locator("dl.facts dt:text-is('parent') + dd a").click()
    expect(page.locator("h1")).to_contain_text("nightly-3")


def test_flow_runs_filter_by_state_and_page(site: Site, page: Page) -> None:
    """The filter form narrows the list to failed runs; pages link to older runs."""
    page.goto(site.url + "/runs")
    page.locator("select[name=state]").select_option("FAILED")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("table.runs tbody tr td:first-child")).to_have_text(["regions", "broken-1", "broken-0"])
    pages = (site.api("/flow-runs")["total"] + 1) // 2
    page.goto(site.url + "/runs?per_page=2")
    expect(page.locator("nav.pager")).to_contain_text(f"page 1 of {pages}")
    page.locator("a[rel=next]").click()
    expect(page.locator("nav.pager")).to_contain_text(f"page 2 of {pages}")


def test_cache_entries_link_to_the_task_run_that_wrote_them(site: Site, page: Page) -> None:
    """The cache page lists transform's entries; one leads to a task run with its cache
    key and result location."""
    page.goto(site.url + "/cache")
    rows = page.locator("table.cache tbody tr")
    expect(rows).to_have_count(3)
    rows.first.locator("a").click()
    expect(page.locator("h1")).to_contain_text("Task run transform-")
    facts = page.locator("dl.facts")
    expect(facts.locator("dt:text-is('cache key') + dd code")).not_to_be_empty()
    expect(facts.locator("dt:text-is('result') + dd code")).not_to_be_empty()


def test_a_live_run_page_refreshes_by_itself(site: Site, page: Page) -> None:
    """A running flow's page shows Running and its progress, then Completed and every
    task run done once it ends, with no reload by the viewer."""
    release = site.root / "release"
    script = site.root / "live.py"
    script.write_text(LIVE)
    proc = subprocess.Popen([sys.executable, str(script)], env={**site.env, "RELEASE_FILE": str(release)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            runs = site.api("/flow-runs?flow=waiting")["flow_runs"]
            if runs and runs[0]["state"]["type"] == "RUNNING":
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the live flow run never showed up as running")
        page.goto(site.url + f"/runs/{runs[0]['id']}")
        badge = page.locator("dl.facts dt:text-is('state') + dd .state")
        expect(badge).to_have_text("Running")
        expect(page.locator("header .live")).to_be_visible()
        progress = page.locator(".progress .done")
        expect(progress).to_contain_text("0 of 1 task runs done, 1 not yet")
        release.write_text("go")
        expect(badge).to_have_text("Completed", timeout=15_000)
        expect(progress).to_have_text("1 of 1 task runs done")
        expect(page.locator("header .live")).to_have_count(0)
    finally:
        release.write_text("go")
        proc.wait(30)


def test_a_retried_run_shows_its_attempts_and_reused_task_runs(site: Site, page: Page, tmp_path: Path) -> None:
    """A flow run retried after its third task failed: the Attempts section lists both
    attempts, the task runs are grouped by attempt, and each reused task run links to the
    run of attempt 1 whose result it took. A run with one attempt has no such section."""
    script = site.root / "retried.py"
    script.write_text(RETRIED)
    subprocess.run([sys.executable, str(script)], env=site.env, check=True, capture_output=True, timeout=60)

    page.goto(site.url + "/runs/pipeline-1")
    attempts = page.locator("table.attempts tbody tr")
    expect(attempts).to_have_count(2)
    expect(attempts.locator("td:nth-child(1)")).to_have_text(["1", "2"])
    expect(attempts.locator("td:nth-child(4) .state")).to_have_text(["Failed", "Completed"])
    expect(attempts.nth(0)).to_contain_text("step three is broken")
    expect(attempts.locator("td:nth-child(5)")).to_have_text(["3", "3"])
    expect(attempts.locator("td:nth-child(6)")).to_have_text(["0", "2"])
    expect(page.locator("dl.facts dt:text-is('attempts') + dd")).to_have_text("2")

    groups = page.locator("table.timeline tr.attempt-group")
    expect(groups).to_have_count(2)
    expect(groups.nth(0)).to_contain_text("Attempt 1")
    expect(groups.nth(1)).to_contain_text("Attempt 2")
    expect(groups.nth(1)).to_contain_text("2 reused")
    badges = page.locator("table.timeline .badge.reused")
    expect(badges).to_have_text(["reused from attempt 1", "reused from attempt 1"])
    expect(page.locator("table.timeline .badge.cache-hit")).to_have_count(0)

    update = os.environ.get("HEADWATER_UPDATE_SCREENSHOTS") == "1" or not ATTEMPTS_SCREENSHOT.exists()
    target = ATTEMPTS_SCREENSHOT if update else tmp_path / "dashboard-attempts.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    timeline = page.locator("table.timeline").bounding_box()
    assert timeline is not None
    page.screenshot(path=str(target), full_page=True,
                    clip={"x": 0, "y": 0, "width": 1280, "height": timeline["y"] + timeline["height"] + 16})
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    reused_row = page.locator("table.timeline tr", has=page.locator(".badge.reused")).first
    # Task run names repeat in each attempt of a flow run: the link is what tells them apart.
    reused_href = reused_row.locator("td.tl-name a").get_attribute("href")
    earlier_href = badges.first.get_attribute("href")
    badges.first.click()
    expect(page.locator("h1")).to_contain_text("Task run step-")
    expect(page.locator("dl.facts dt:text-is('state') + dd .state")).to_have_text("Completed")
    expect(page.locator("dl.facts dt:text-is('flow run attempt') + dd")).to_have_text("1")

    page.goto(site.url + "/runs/pipeline-1")
    page.locator(f"table.timeline td.tl-name a[href='{reused_href}']").click()
    expect(page.locator("dl.facts dt:text-is('reused from') + dd a")).to_have_attribute("href", earlier_href)
    expect(page.locator("dl.facts dt:text-is('reused from') + dd")).to_contain_text("(attempt 1)")
    expect(page.locator("dl.facts dt:text-is('flow run attempt') + dd")).to_have_text("2")

    page.goto(site.url + "/runs/nightly-3")
    expect(page.locator("table.timeline")).to_be_visible()
    expect(page.locator("table.attempts")).to_have_count(0)
    expect(page.locator("tr.attempt-group")).to_have_count(0)


def test_screenshot_of_a_flow_run(site: Site, page: Page, tmp_path: Path) -> None:
    """The flow run page renders to a screenshot (the one in docs/dashboard.md)."""
    page.goto(site.url + "/runs/nightly-3")
    expect(page.locator("table.timeline")).to_be_visible()
    update = os.environ.get("HEADWATER_UPDATE_SCREENSHOTS") == "1" or not SCREENSHOT.exists()
    target = SCREENSHOT if update else tmp_path / "dashboard.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=False)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _screenshot(page: Page, path: Path, tmp_path: Path, clip: dict[str, float] | None = None) -> None:
    """A screenshot for the docs: written to docs/images when missing or with
    HEADWATER_UPDATE_SCREENSHOTS=1, else to a temporary folder."""
    update = os.environ.get("HEADWATER_UPDATE_SCREENSHOTS") == "1" or not path.exists()
    target = path if update else tmp_path / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=clip is not None, clip=clip)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_big_run_pages_its_task_runs_and_logs(site: Site, page: Page, tmp_path: Path) -> None:
    """A 2,000-task run: the progress bar counts them by state; the task runs come 50 a
    page with next and previous links; a state link lists the failed ones; a level
    link narrows the log lines to errors."""
    page.goto(site.url + "/runs/big-run")
    expect(page.locator(".progress .done")).to_have_text("2,000 of 2,000 task runs done")
    pager = page.locator("nav.pager").first
    expect(pager).to_contain_text("showing 1–50 of 2,000 task runs")
    names = page.locator("table.timeline td.tl-name > a")
    expect(names).to_have_count(50)
    expect(names.first).to_have_text("load-0")
    _screenshot(page, BIG_RUN_SCREENSHOT, tmp_path)

    pager.locator("a[rel=next]").click()
    expect(page.locator("nav.pager").first).to_contain_text("showing 51–100 of 2,000 task runs")
    expect(names.first).to_have_text("load-50")
    page.locator("nav.pager").first.locator("a[rel=prev]").click()
    expect(names.first).to_have_text("load-0")

    page.locator(".progress a", has_text="failed").click()
    expect(page.locator("h2#task-runs")).to_contain_text("4 FAILED of 2,000")
    expect(names).to_have_text(["load-499", "load-999", "load-1499", "load-1999"])

    page.locator("p.filters a", has_text="error+").click()
    expect(page.locator("table.logs tbody tr")).to_have_count(4)
    expect(page.locator("table.logs tbody td pre")).to_have_text(["boom 499", "boom 999", "boom 1499", "boom 1999"])
    expect(page.locator("table.logs tbody tr").first.locator("a")).to_have_text("load-499")


def test_runs_are_searched_and_show_why_they_failed(site: Site, page: Page, tmp_path: Path) -> None:
    """Typing part of a name and choosing a state narrows the list; the message column
    says why each failed without opening it."""
    page.goto(site.url + "/runs")
    page.locator("input[name=q]").fill("brok")
    page.locator("select[name=state]").select_option("FAILED")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.runs tbody tr")
    expect(rows.locator("td:first-child")).to_have_text(["broken-1", "broken-0"])
    expect(rows.locator("td.message")).to_have_text(["ValueError: no good", "ValueError: no good"])
    expect(page.locator("input[name=q]")).to_have_value("brok")
    page.locator("input[name=q]").fill("region")
    page.get_by_role("button", name="Filter").click()
    expect(rows.locator("td:first-child")).to_have_text(["regions"])
    expect(rows.locator("td.message")).to_contain_text("apac: 3 rows without a currency")

    page.goto(site.url + "/runs?q=e&top=1")
    expect(page.locator("table.runs")).not_to_contain_text("publish-3")
    page.goto(site.url + "/runs")
    _screenshot(page, SEARCH_SCREENSHOT, tmp_path)


def test_the_dependency_graph_links_each_task_run(site: Site, page: Page, tmp_path: Path) -> None:
    """The regions run's graph: six downloads, six cleans (one failed), the merge and
    the report that never ran; an edge per dependency; a node opens its task run."""
    page.goto(site.url + "/runs/regions")
    graph = page.locator("svg.graph")
    expect(graph.locator("a.node")).to_have_count(14)
    expect(graph.locator("path.edge")).to_have_count(13)
    expect(graph.locator("a.node.state-failed")).to_have_count(1)
    expect(graph.locator("a.node.state-notready")).to_have_count(2)
    expect(page.locator(".legend").first).to_contain_text("retrying")
    expect(page.locator(".legend").first).to_contain_text("crashed")
    section = page.locator("h2#graph").bounding_box()
    box = page.locator(".graph-scroll").bounding_box()
    assert section is not None and box is not None
    top = section["y"] - 8
    _screenshot(page, GRAPH_SCREENSHOT, tmp_path,
                clip={"x": 0, "y": top, "width": 1280, "height": box["y"] + box["height"] + 8 - top})
    graph.locator("a.node > text", has_text="merge-").click()
    expect(page.locator("h1")).to_contain_text("Task run merge-")
    expect(page.locator("dl.facts dt:text-is('state') + dd .state")).to_have_text("NotReady")
