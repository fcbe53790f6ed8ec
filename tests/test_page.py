"""#9.3 the web page at / in a real headless Chromium (selenium), on two real node processes.

Checks: the page and its files come from the node alone (a CSP allowing no other origin, no
external URL in any file); an offer created on node A through REST appears on node B's page
within a second, pushed by B's event stream (a WebDriverWait bounded at one second: an upper
bound on the wait, not a measure of speed); a bid placed from B's page fills and the fill shows
on both pages, as taker on B and maker on A; an offer placed and cancelled from the page; the
depth chart is drawn; on a phone-sized window nothing overflows sideways. A screenshot is saved
(and copied to $P2P_OFFERS_SCREENSHOT if set: that is how docs/screenshot.png is made).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import requests
from event_helpers import Listener
from node_helpers import Net, wait_until

from p2p_offers.node.http.page import STATIC

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is a dev dependency: pip install -e '.[dev]'"
)
from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs Chromium and its driver (Debian: apt-get install chromium chromium-driver; "
    ".ci/run installs them when it runs as root with apt)",
)
PROPAGATION_BOUND_S = 1.0  # the "within a second", as the bound of a DOM poll
BOUND_S = 15.0  # any other wait for the page


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    network = Net(tmp_path_factory.mktemp("net"), grapes=1, nodes=2)
    yield network
    network.close()


def _browser(url: str, width: int = 1280, height: int = 1000, live: bool = True):
    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.get(url + "/")
    if live:
        WebDriverWait(driver, BOUND_S).until(
            lambda d: d.find_element(By.ID, "status").text == "live", "the page's stream is live"
        )
    return driver


@pytest.fixture(scope="module")
def pages(net: Net):
    a, b = net.nodes
    on_a, on_b = _browser(a.url), _browser(b.url)
    yield on_a, on_b
    for driver in (on_a, on_b):
        errors = [
            e
            for e in driver.get_log("browser")
            if e["level"] == "SEVERE"
            and not (e["source"] == "network" and "status of 4" in e["message"])
        ]  # a refusal (4xx) is an answer the page shows, not an error of the page
        driver.quit()
        assert not errors, errors  # no failed load, no script error on either page


def _row(driver, table: str, attr: str, value: str):
    rows = driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr[data-{attr}='{value}']")
    return rows[0] if rows else None


def _until(driver, check, what: str = "", bound: float = BOUND_S):
    """``check(driver)`` until truthy. The page rebuilds its tables on every event, so an
    element found a moment ago may be gone: such a try is simply made again."""
    stale = (StaleElementReferenceException, NoSuchElementException)
    return WebDriverWait(driver, bound, poll_frequency=0.02, ignored_exceptions=stale).until(
        check, what
    )


def _row_text(driver, table: str, attr: str, value: str) -> str | None:
    row = _row(driver, table, attr, value)
    return row.text if row is not None else None


def test_the_page_and_its_files_come_from_the_node_alone(net: Net) -> None:
    url = net.nodes[0].url
    page = requests.get(url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert set(re.findall(r'(?:src|href)="([^"]+)"', page.text)) == {
        "/static/app.css",
        "/static/app.js",
        "/openapi.json",
        "data:,",
    }
    for name in ("app.js", "app.css"):
        resp = requests.get(f"{url}/static/{name}", timeout=10)
        assert resp.status_code == 200 and resp.text == (STATIC / name).read_text()
    for path in STATIC.iterdir():  # no script, font or style from anywhere else
        assert not re.search(r"\b(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", path.read_text()), path
    missing = requests.get(url + "/static/../app.py", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_an_offer_made_on_a_appears_on_b_s_page_within_a_second(net: Net, pages) -> None:
    a, _ = net.nodes
    _, on_b = pages
    offer = net.create(a, "30123.45", "0.42")
    text = _until(
        on_b,
        lambda d: _row_text(d, "offers", "offer-id", offer["id"]),
        "A's offer in B's book",
        bound=PROPAGATION_BOUND_S,
    )
    assert text.split()[:3] == ["sell", "30123.45", "0.42000000"]
    ladder = on_b.find_element(By.ID, "ladder").text
    assert "30123.45" in ladder and "0.42000000" in ladder


def test_a_bid_from_the_page_fills_and_shows_on_both_pages(net: Net, pages) -> None:
    a, _ = net.nodes
    on_a, on_b = pages
    offer = net.create(a, "30555.00", "1")

    def bid(d) -> bool:
        row = _row(d, "offers", "offer-id", offer["id"])
        if row is None:
            return False
        amount = row.find_element(By.CSS_SELECTOR, "input.bid-amount")
        amount.clear()
        amount.send_keys("0.25")
        row.find_element(By.CSS_SELECTOR, "button.bid-button").click()
        return True

    _until(on_b, bid, "a bid typed and sent from B's page")
    result = _until(on_b, lambda d: d.find_element(By.ID, "bid-result").text, "the answer")
    assert result.startswith("filled 0.25000000 BTC at 30555.00 USD"), result
    fill_id = re.search(r"fill ([0-9a-f-]{36})", result).group(1)
    for driver, role in ((on_b, "taker"), (on_a, "maker")):
        text = _until(
            driver, lambda d: _row_text(d, "fills", "fill-id", fill_id), f"the {role}'s fill"
        )
        assert text.split()[2:5] == [role, "30555.00", "0.25000000"]
        _until(driver, lambda d: _row(d, "trades", "fill-id", fill_id), f"the {role}'s trade")
    # the remainder replaced the offer in B's book
    _until(
        on_b,
        lambda d: (
            not _row(d, "offers", "offer-id", offer["id"])
            and "0.75000000" in d.find_element(By.ID, "offers").text
        ),
        "the remainder in B's book",
    )


def test_a_bid_amount_being_typed_survives_the_book_changing(net: Net, pages) -> None:
    a, _ = net.nodes
    _, on_b = pages
    offer = net.create(a, "31999.00", "0.5")
    _until(on_b, lambda d: _row(d, "offers", "offer-id", offer["id"]))
    field = f"#offers input.bid-amount[data-offer-id='{offer['id']}']"
    _until(on_b, lambda d: d.find_element(By.CSS_SELECTOR, field).send_keys("0.1") or True)
    net.create(a, "32999.00", "0.5")  # the table is rebuilt
    _until(on_b, lambda d: "32999.00" in d.find_element(By.ID, "offers").text)
    value = _until(on_b, lambda d: d.find_element(By.CSS_SELECTOR, field).get_attribute("value"))
    assert value == "0.1"


def test_place_and_cancel_an_offer_from_the_page(net: Net, pages) -> None:
    on_a, _ = pages
    form = on_a.find_element(By.ID, "place")
    form.find_element(By.NAME, "side").send_keys("buy")
    form.find_element(By.NAME, "price_usd").send_keys("28000.10")
    form.find_element(By.NAME, "amount_btc").send_keys("0.3")
    on_a.find_element(By.ID, "place-submit").click()
    result = _until(on_a, lambda d: d.find_element(By.ID, "place-result").text)
    offer_id = re.search(r"offer ([0-9a-f-]{36}) placed: buy 0.30000000 BTC at 28000.10", result)
    assert offer_id, result
    offer_id = offer_id.group(1)

    def cancel(d) -> bool:
        row = _row(d, "mine", "offer-id", offer_id)
        if row is None:
            return False
        row.find_element(By.CSS_SELECTOR, "button.cancel-button").click()
        return True

    _until(on_a, cancel, "cancel clicked")
    _until(on_a, lambda d: not _row(d, "mine", "offer-id", offer_id), "gone from my offers")
    assert net.offer(net.nodes[0], offer_id)["status"] == "cancelled"
    # a refusal is shown as the node's code and fields
    form.find_element(By.NAME, "price_usd").clear()
    form.find_element(By.NAME, "price_usd").send_keys("1.001")
    on_a.find_element(By.ID, "place-submit").click()
    text = _until(on_a, lambda d: "invalid_input" in d.find_element(By.ID, "place-result").text)
    assert text
    assert "price_usd: at most 2 decimal places" in on_a.find_element(By.ID, "place-result").text


def test_the_depth_chart_is_drawn_and_a_phone_screen_does_not_overflow(
    net: Net, pages, tmp_path: Path
) -> None:
    a, b = net.nodes
    net.create(a, "29500", "0.8", side="buy")
    net.create(b, "30900", "1.1")
    _, on_b = pages
    _until(
        on_b,
        lambda d: {"29500.00", "30900.00"} <= set(d.find_element(By.ID, "ladder").text.split()),
    )
    wait_until(lambda: _painted(on_b) > 500, what="the depth chart painted")
    shot = tmp_path / "screenshot.png"
    assert on_b.save_screenshot(str(shot)) and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("P2P_OFFERS_SCREENSHOT"):
        shutil.copy(shot, os.environ["P2P_OFFERS_SCREENSHOT"])
    phone = _browser(b.url, 390, 844)
    try:
        wait_until(lambda: _painted(phone) > 500, what="the chart on a phone")
        assert phone.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth"
        ), "the page is wider than a phone's screen"
    finally:
        phone.quit()


def _painted(driver) -> int:
    """How many pixels of the depth chart are not blank."""
    return driver.execute_script(
        "const c = document.getElementById('depth');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n;"
    )


def test_a_page_refused_a_stream_reads_once_and_goes_live_when_a_slot_frees(
    net: Net, pages
) -> None:
    _, b = net.nodes
    # only B's page holds a slot (a browser that just quit lets go within half a second)
    slots = wait_until(lambda: (e := net.get(b, "/health")["events"])["clients"] == 1 and e)
    held = [Listener(b.url) for _ in range(slots["max_clients"] - slots["clients"])]
    late = None
    try:
        assert all(h.status == 200 for h in held)
        late = _browser(b.url, live=False)
        _until(late, lambda d: d.find_element(By.ID, "status").text == "reconnecting", "refused")
        _until(late, lambda d: "30555.00" in d.find_element(By.ID, "ladder").text, "read once")
        for h in held:
            h.close()
        _until(late, lambda d: d.find_element(By.ID, "status").text == "live", "live again")
    finally:
        for h in held:
            h.close()
        if late is not None:
            late.quit()


def test_a_pending_bid_is_accepted_from_the_maker_s_page_and_fills_on_both(
    net: Net, pages, tmp_path
) -> None:
    """#9.1: B bids on A's manual offer (REST, 202 pending); A's page lists the bid with
    Accept/Reject; Accept on the page fills it, and the fill shows on both pages."""
    a, b = net.nodes
    on_a, on_b = pages
    offer = net.create(a, "30777.00", "1", accept="manual")
    wait_until(
        lambda: net.call(b, "GET", f"/offers/{offer['id']}").status_code == 200, BOUND_S, "b"
    )
    held = net.call(b, "POST", f"/offers/{offer['id']}/bids", {"amount_btc": "0.4"})
    assert held.status_code == 202, held.text
    bid_id = held.json()["bid_id"]
    # the text is read in the same try as the row is found: a re-render may replace the row
    text = _until(on_a, lambda d: _row_text(d, "pending", "bid-id", bid_id), "the bid on A's page")
    assert "0.40000000" in text and "30777.00" in text

    def accept(d) -> bool:
        found = _row(d, "pending", "bid-id", bid_id)
        if found is None:
            return False
        found.find_element(By.CSS_SELECTOR, "button.accept-button").click()
        return True

    _until(on_a, accept, "Accept clicked on A's page")
    result = _until(on_a, lambda d: d.find_element(By.ID, "bid-result").text, "the answer")
    assert result.startswith("accepted: 0.40000000 BTC at 30777.00"), result
    _until(on_a, lambda d: not _row(d, "pending", "bid-id", bid_id), "the bid leaves the list")
    fill_id = net.call(a, "GET", f"/offers/{offer['id']}").json()["fills"][0]["fill_id"]
    for driver, role in ((on_a, "maker"), (on_b, "taker")):  # b learns it on a resolve round
        text = _until(
            driver, lambda d: _row_text(d, "fills", "fill-id", fill_id), f"the {role}'s fill"
        )
        assert text.split()[2:5] == [role, "30777.00", "0.40000000"]
    shot = tmp_path / "manual.png"
    assert on_a.save_screenshot(str(shot)) and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
