"""The web page: an offer created on node A through REST, until it is a row of node B's page.

What a trader watching node B's page waits for: A signs and stores the offer, pushes it to
B, B checks and applies it, publishes a ``book`` event, the page (real headless Chromium)
refetches /book and /offers and redraws. The clock runs from the POST sent to the moment a
script in the page sees the row, polled every 5 ms inside the browser (no WebDriver round
trip in the measurement). Needs Debian's ``chromium`` and ``chromium-driver`` and selenium.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import requests
from _common import base_parser, emit, log, network, summarize

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

WAIT_JS = """
const [id, done] = [arguments[0], arguments[arguments.length - 1]];
const t0 = performance.now();
(function poll() {
  if (document.querySelector(`#offers tr[data-offer-id="${id}"]`)) return done(performance.now());
  if (performance.now() - t0 > 10000) return done(null);
  setTimeout(poll, 5);
})();
"""


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        emit({"bench": "page", "skipped": "needs chromium and chromium-driver"})
        return
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = shutil.which("chromium") or ""
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    started = time.perf_counter()
    with network(nodes=2, grapes=1) as net:
        a, b = net.urls
        driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
        try:
            driver.set_script_timeout(15)
            driver.get(b + "/")
            while driver.find_element("id", "status").text != "live":
                time.sleep(0.05)
            http = requests.Session()
            samples: list[float] = []
            for i in range(args.samples):
                # the page's clock and ours differ: measure both ends in the page
                sent = driver.execute_script("return performance.now()")
                offer: dict[str, Any] = http.post(
                    a + "/offers",
                    json={"side": "sell", "price_usd": f"{30000 + i}.00", "amount_btc": "0.01"},
                    timeout=10,
                ).json()
                seen = driver.execute_async_script(WAIT_JS, offer["id"])
                if seen is not None:
                    samples.append(seen - sent)
                http.delete(f"{a}/offers/{offer['id']}", timeout=10)
            log(f"{len(samples)} of {args.samples} offers appeared on B's page")
        finally:
            driver.quit()
    emit(
        {
            "bench": "page",
            "on_b_page": summarize(samples),
            "wall_s": round(time.perf_counter() - started, 1),
        }
    )


if __name__ == "__main__":
    main()
