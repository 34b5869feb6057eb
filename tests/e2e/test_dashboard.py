"""The service graph dashboard in a real headless Chromium (Debian's chromium + chromedriver, driven by
Selenium), against the session's local mesh: the page loads, draws every workload, shows the ratings
split move after a live apply, and logs no console errors. The screenshot is kept as a test artifact
(tests/artifacts/dashboard.png, or $WEIR_ARTIFACTS/dashboard.png); docs/dashboard.png is a copy of one.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, Mesh

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
WORKLOADS = {"ui-v1", "gw-v1", "books-v1", "books-v2", "ratings-v1", "ratings-v2"}
GATEWAY = "istio-ingressgateway"
ARTIFACTS = Path(os.environ.get("WEIR_ARTIFACTS", ROOT / "tests" / "artifacts"))
SPLIT_DEADLINE = 15.0  # seconds from the apply until the page shows ratings v2 above 70 %

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
                allow_module_level=True)

# The ratings split as drawn: v2's part of the request rate on every edge into ratings.
RATINGS_V2_SHARE = """
  const edges = window.cy ? window.cy.edges().filter((e) => e.data('target').startsWith('ratings-')) : [];
  let all = 0, v2 = 0;
  edges.forEach((e) => { all += e.data('rps'); if (e.data('target') === 'ratings-v2') v2 += e.data('rps'); });
  return all > 0 ? v2 / all : null;
"""


@pytest.fixture
def traffic(mesh: Mesh):
    """Requests through the ingress, back to back, for as long as the test runs."""
    stop = threading.Event()

    def send() -> None:
        while not stop.is_set():
            try:
                mesh.get("/gateway/books", timeout=5)
            except OSError:
                time.sleep(0.1)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(10)


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,760", "--no-proxy-server", "--hide-scrollbars"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, script: str, done, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if done(value):
            return value
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout}s (last seen: {value!r})")


def test_dashboard_draws_the_mesh_and_follows_a_live_weight_change(mesh: Mesh, traffic, browser) -> None:
    mesh.meshctl("up")  # the pinned release (round robin), whatever an earlier test applied by hand
    mesh.wait_synced()
    url = mesh.meshctl("dashboard").stdout.strip()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/"), url
    browser.get(url)
    drawn = wait_for(browser, "return window.cy ? window.cy.nodes('.workload').map((n) => n.id()) : []",
                     lambda ids: WORKLOADS | {GATEWAY} <= set(ids), 15, "every workload drawn")
    assert browser.execute_script(f"return window.cy.getElementById('{GATEWAY}').data('label')") == "ingress", drawn
    wait_for(browser, RATINGS_V2_SHARE, lambda share: share is not None and 0.2 < share < 0.8, 15,
             "round robin on ratings (about half each)")

    try:
        applied = time.monotonic()
        mesh.apply("ratings-10-90")
        share = wait_for(browser, RATINGS_V2_SHARE, lambda s: s is not None and s > 0.7, SPLIT_DEADLINE,
                         "ratings v2 above 70 % after applying ratings-10-90")
        print(f"dashboard showed ratings v2 at {share:.0%} {time.monotonic() - applied:.1f}s after the apply")
        badges = browser.execute_script("return window.cy.getElementById('ratings-v2').data('badges')")
        assert {"badge": "route", "text": "90%"} in badges, badges

        browser.execute_script("window.cy.getElementById('ratings-v2').select().emit('tap')")
        panel = wait_for(browser, "return document.getElementById('panel').innerText",
                         lambda text: "RECENT REQUESTS" in text.upper() and "books-v" in text, 10, "the side panel")
        assert "VirtualService bookinfo/ratings" in panel and ("/ratings" in panel or "no access log" in panel)

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))
        severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert severe == [], severe
    finally:
        mesh.meshctl("up")  # back to the stack's pinned release for the other tests
        mesh.wait_synced()
