"""The web console in a real headless Chromium, beside a real `flarebus up` (engine + worker).

One browser for the module. Screenshots of every page are saved under the
pytest temp dir (the path is printed); with FLAREBUS_WEB_SCREENSHOTS=docs/web
they are copied there for docs/web.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from flarebus.nats_server import EmbeddedNats
from flarebus.summary import RuleInfo, SeriesInfo
from tests.support import start_flarebus, system_binary
from tests.test_up import Output, family, stop
from tests.web_support import put_summary, summary

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

TOKEN = "browser-test-token"
WAIT = 20.0  # generous: the machine is shared; the measured figures are printed instead
RULES = """\
rules:
  - name: cpu_high
    metric: cpu.usage
    when: "> 90"
    severity: critical
    annotations:
      summary: "CPU {value:.0f}% on {labels[host]} <i>not markup</i>"
      runbook: "https://runbooks.example/cpu"
  - name: cpu_warm
    metric: cpu.usage
    when: "> 80"
    for: 1h
  - name: hot_loop
    stack: {source: webapp, frame: "hot_loop", measure: share}
    when: "> 0.5"
    annotations:
      summary: "{value:.0%} of webapp samples are in hot_loop"
  - name: pager
    metric: queue.depth
    when: "> 100"
    actions: [{plugin: http, config: {url: "http://127.0.0.1:9/hook"}}]
"""
CONFIG = """\
engine: {checkpoint_interval: 1s}
worker: {max_tries: 1, backoff_initial: 100ms, backoff_max: 200ms, timeout: 2s}
"""


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    where = tmp_path_factory.mktemp("web-screenshots")
    print(f"\nweb console screenshots: {where}")
    yield where
    target = os.environ.get("FLAREBUS_WEB_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        for png in sorted(where.glob("*.png")):
            shutil.copy(png, Path(target) / png.name)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = system_binary("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(system_binary("chromedriver")), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def up(private_nats: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`flarebus up` on the module's server with a write token; the console's URL."""
    work = tmp_path_factory.mktemp("web-up")
    (work / "rules.yaml").write_text(RULES)
    (work / "flarebus.yaml").write_text(CONFIG)
    proc = start_flarebus("up", "--nats", private_nats.url, "--rules", "rules.yaml",
                          "--no-sampler", "--status-every", "0", "--web-listen", "127.0.0.1:0",
                          cwd=work, env={"FLAREBUS_WEB_TOKEN": TOKEN})
    out = Output(proc)
    try:
        url = out.wait_for(r"console\s+(http://\S+)", 60).group(1)
        out.wait_for(r"worker ready", 60)
        members = family(proc.pid)
        yield url
    finally:
        if proc.poll() is None:
            try:
                stop(proc, family(proc.pid) if proc.poll() is None else [])
            except (subprocess.TimeoutExpired, AssertionError):
                proc.kill()
        print(out.text()[-3000:])
    del members


def wait_until(browser: WebDriver, check: Callable[[WebDriver], Any], what: str) -> float:
    """Seconds until ``check`` holds (polled in the page); fails after WAIT."""
    start = time.monotonic()
    try:
        WebDriverWait(browser, WAIT, poll_frequency=0.05).until(check)
    except TimeoutException:
        raise AssertionError(f"{what}: not within {WAIT}s; page:\n"
                             + browser.find_element(By.TAG_NAME, "main").text[:2000]) from None
    return time.monotonic() - start


def text_of(browser: WebDriver, selector: str) -> str:
    """The element's text, read in one script (a live refresh may replace it at any time)."""
    return str(browser.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", selector))


def click(browser: WebDriver, selector: str) -> None:
    browser.execute_script("document.querySelector(arguments[0]).click()", selector)


def attribute(browser: WebDriver, selector: str, name: str) -> str:
    return str(browser.execute_script(
        "const e = document.querySelector(arguments[0]); "
        "return e ? e.getAttribute(arguments[1]) : ''", selector, name))


def same_document(browser: WebDriver) -> bool:
    """True while the page loaded before has not been reloaded (live updates only)."""
    return bool(browser.execute_script("return window.__sameDocument === true"))


def open_page(browser: WebDriver, url: str) -> None:
    browser.get(url)
    wait_until(browser, lambda b: "live" in text_of(b, "#live") or not b.find_element(
        By.ID, "main").get_attribute("data-topics"), "the event stream connects")
    browser.execute_script("window.__sameDocument = true")


async def publish(nc: Client, subject: str, body: dict[str, Any]) -> None:
    await nc.publish(subject, json.dumps(body).encode())
    await nc.flush()


async def test_a_rule_fires_and_resolves_live(browser: WebDriver, up: str, private_nc: Client,
                                              screenshots: Path) -> None:
    """Overview and Series show a firing rule without a reload, then its resolution."""
    open_page(browser, up)
    await publish(private_nc, "metrics.cpu.usage",
                  {"name": "cpu.usage", "value": 97.0, "labels": {"host": "web-1"}})
    overview = wait_until(browser, lambda b: "firing" in text_of(b, "#rule-cpu_high .firing-count"),
                          "cpu_high firing on the overview")
    assert same_document(browser)
    print(f"\noverview showed the firing rule {overview:.2f}s after the sample")
    browser.save_screenshot(str(screenshots / "overview.png"))

    open_page(browser, f"{up}series")
    wait_until(browser, lambda b: "pending" in text_of(b, "table.series"),
               "cpu_warm pending (from the engine summary)")
    rows = text_of(browser, "table.series")
    assert "cpu_high" in rows and "host=web-1" in rows and "> 90" in rows
    browser.save_screenshot(str(screenshots / "series.png"))

    await publish(private_nc, "metrics.cpu.usage",
                  {"name": "cpu.usage", "value": 10.0, "labels": {"host": "web-1"}})
    resolved = wait_until(browser, lambda b: "cpu_high" not in text_of(b, "table.series"),
                          "cpu_high gone from the series page")
    assert same_document(browser)
    print(f"series page dropped the resolved series {resolved:.2f}s after the sample")

    open_page(browser, f"{up}triggers?rule=cpu_high")
    wait_until(browser, lambda b: "resolved" in text_of(b, "ol.triggers"), "the resolution")
    wait_until(browser, lambda b: "log: ran" in text_of(b, "ol.triggers")
               and "not yet" not in text_of(b, "ol.triggers"),
               "the default action shown as ran, as the worker recorded it")
    assert "<i>not markup</i>" in text_of(browser, "ol.triggers")  # the text, not markup
    browser.save_screenshot(str(screenshots / "triggers.png"))


async def test_a_stack_rule_flamegraph_renders(browser: WebDriver, up: str, private_nc: Client,
                                               screenshots: Path) -> None:
    """The source's window is an SVG flamegraph holding the hot frame: hover, search, zoom."""
    sample = {"source": "webapp", "stacks": [
        {"frames": ["main", "serve", "handle_request", "hot_loop"], "weight": 70},
        {"frames": ["main", "serve", "handle_request", "render"], "weight": 20},
        {"frames": ["main", "gc"], "weight": 10}]}
    await publish(private_nc, "stacks.webapp", sample)
    open_page(browser, f"{up}flamegraphs")
    wait_until(browser, lambda b: b.execute_script(
        "return [...document.querySelectorAll('figure.flame svg text')]"
        ".some(t => t.textContent === 'hot_loop')"), "hot_loop in the flamegraph's SVG")
    frame = browser.find_element(By.CSS_SELECTOR, 'figure.flame g.frame[data-name="hot_loop"]')
    ActionChains(browser).move_to_element(frame).perform()
    tip = text_of(browser, ".flame-tip")
    assert "hot_loop" in tip and "70 samples" in tip and "70.00% of all" in tip
    search = browser.find_element(By.CSS_SELECTOR, "figure.flame input[type=search]")
    search.send_keys("hot")
    assert "matched 70.00% of all" in text_of(browser, "figure.flame output")
    browser.save_screenshot(str(screenshots / "flamegraphs.png"))
    frame = browser.find_element(By.CSS_SELECTOR,
                                 'figure.flame g.frame[data-name="handle_request"]')
    frame.click()
    widths = browser.execute_script(
        "return [...document.querySelectorAll('figure.flame g.frame')].filter("
        "g => g.dataset.name === 'handle_request').map(g => +g.querySelector('rect')"
        ".getAttribute('width'))")
    svg_width = browser.execute_script(
        "return +document.querySelector('figure.flame svg').getAttribute('width')")
    assert widths and widths[0] >= svg_width - 2  # zoomed: the frame spans the graph
    browser.execute_script(  # the keyboard: Enter on the root (the first frame) zooms out
        "const g = document.querySelector('figure.flame g.frame[data-name=\"all\"]');"
        "g.focus(); g.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'}))")
    gc_width = browser.execute_script(
        "return +document.querySelector('figure.flame g.frame[data-name=\"gc\"] rect')"
        ".getAttribute('width')")
    assert 0 < gc_width < svg_width / 2  # back out: gc is its 10 % again

    open_page(browser, f"{up}triggers?rule=hot_loop")
    wait_until(browser, lambda b: "flamegraph when it fired" in text_of(b, "ol.triggers"),
               "the trigger's flamegraph link")
    click(browser, "a.graph")
    wait_until(browser, lambda b: b.execute_script(
        "return [...document.querySelectorAll('figure.flame svg text')]"
        ".some(t => t.textContent === 'hot_loop')"), "hot_loop in the trigger's flamegraph")
    browser.save_screenshot(str(screenshots / "trigger-flamegraph.png"))
    browser.get(f"{up}flamegraphs?view=icicle")
    browser.save_screenshot(str(screenshots / "icicle.png"))


async def test_a_write_needs_the_token(browser: WebDriver, up: str, private_nc: Client,
                                       screenshots: Path) -> None:
    """Re-queueing a dead letter is refused without the token, and works with it."""
    await publish(private_nc, "metrics.queue.depth", {"name": "queue.depth", "value": 500.0})
    open_page(browser, f"{up}triggers?state=dead")
    wait_until(browser, lambda b: text_of(b, "li.trigger.dead button.write"),
               "the pager rule's dead letter")
    first = attribute(browser, "li.trigger.dead", "id")
    browser.execute_script("sessionStorage.removeItem('flarebus-token')")
    click(browser, f"#{first} button.write")
    wait_until(browser, lambda b: "token" in text_of(b, "#toast"), "the refusal")
    assert attribute(browser, "#toast", "class") == "bad"
    assert attribute(browser, "li.trigger.dead", "id") == first  # still there
    browser.save_screenshot(str(screenshots / "dead-letters.png"))
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    click(browser, f"#{first} button.write")
    wait_until(browser, lambda b: "requeued" in text_of(b, "#toast"), "the re-queue")
    # the worker runs it again; it fails again (nothing listens on port 9): a new dead letter
    wait_until(browser, lambda b: attribute(b, "li.trigger.dead", "id") not in ("", first),
               "the re-queued trigger dead-lettered again")
    open_page(browser, f"{up}silences")  # a silence from the form, with the token given above
    form = browser.find_element(By.CSS_SELECTOR, "form.write-form")
    form.find_element(By.NAME, "matchers").send_keys('rule="pager", host=~"web-.*"')
    form.find_element(By.NAME, "comment").send_keys("planned maintenance")
    click(browser, "form.write-form button[type=submit]")
    wait_until(browser, lambda b: "planned maintenance" in text_of(b, "table.silences"),
               "the new silence listed without a reload")
    assert 'host=~"web-.*"' in text_of(browser, "table.silences")
    browser.save_screenshot(str(screenshots / "silences.png"))
    open_page(browser, f"{up}visualizations")
    browser.save_screenshot(str(screenshots / "visualizations.png"))


async def test_ten_thousand_series_are_paged(browser: WebDriver, up: str, private_nc: Client,
                                             screenshots: Path) -> None:
    """Ten engines' summaries of 1,000 series each: the browser gets 50 rows and a pager."""
    rule = RuleInfo(name="disk_full", metric="disk.used", threshold="> 0.9", for_seconds=300.0,
                    file="rules/disk.yaml", line=4, severity="warning")
    now = time.time()
    for e in range(10):
        states = [SeriesInfo(rule="disk_full", series=f"disk.used{{host=\"n{e}-{i}\"}}",
                             state="pending" if i % 3 else "firing", since=now - i,
                             value=0.91 + (i % 8) / 100, labels={"host": f"n{e}-{i}"})
                  for i in range(1000)]
        await put_summary(private_nc, f"load-{e}-of-10", summary(f"load{e}/10", states, [rule]))
    open_page(browser, f"{up}series?rule=disk_full")
    took = wait_until(browser, lambda b: "10,000 series" in text_of(b, "#series-count"),
                      "10,000 series counted")
    print(f"\n10,000 series page: counted {took:.2f}s after the summaries were written")
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.series tbody tr")) == 50
    assert "page 1 of 200" in text_of(browser, "nav.pager")
    browser.save_screenshot(str(screenshots / "series-10k.png"))
    click(browser, 'a[rel="next"]')
    wait_until(browser, lambda b: "page 2 of 200" in text_of(b, "nav.pager"), "page 2")
    browser.execute_script(  # the form as a person submits it (a refresh may replace it)
        "const i = document.querySelector('input[name=labels]'); i.value = arguments[0];"
        "i.form.requestSubmit()", 'host=~"n3-1.."')
    wait_until(browser, lambda b: "100 series" in text_of(b, "#series-count"), "the filter")
