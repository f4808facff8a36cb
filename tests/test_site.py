"""The website as a reader sees it: every page opened in a real browser, with no network.

Builds the site (`bash lessons/build_book.sh`), serves `_build/html` on 127.0.0.1 and opens every page in
headless Chromium (Debian's `chromium` and `chromium-driver`, driven by Selenium; never a browser that a
tool downloads). Chromium resolves no host but 127.0.0.1, so a page that needs the network fails here as it
would for an offline reader, and every request a page makes is also checked to be local. On each page:
no console errors, no failed requests, no broken internal links or anchors, every image loaded with a
non-zero size, math typeset by MathJax (its output elements present, no raw `$$`), code cells foldable on
notebook pages, and Colab launch links pointing at the page's own notebook. The search page must find a
word. Screenshots of three pages are saved in `_build/site-test/` (or `$MINIRANK_SITE_ARTIFACTS`).

Building and browsing take about a minute, so the test runs only when MINIRANK_SITE_TEST=1 (.ci/run sets
it after installing the browser). MINIRANK_SITE_PREBUILT=1 tests the `_build/html` that is already there.
Where no browser or driver can be found the test is skipped, and the reason says what to install.
"""
from __future__ import annotations

import functools
import html.parser
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
ARTIFACTS = Path(os.environ.get("MINIRANK_SITE_ARTIFACTS", ROOT / "_build" / "site-test"))
COLAB = "https://colab.research.google.com/github/minirank-book/minirank/blob/main/"
SCREENSHOTS = ["index.html", "lessons/04_ranking_losses.html", "notebooks/03_first_single_token.html"]

pytestmark = pytest.mark.skipif(
    os.environ.get("MINIRANK_SITE_TEST") != "1",
    reason="the site test builds the book and opens it in Chromium: set MINIRANK_SITE_TEST=1 (as .ci/run does)")


def _browser() -> tuple[str, str]:
    """Paths of Debian's chromium and chromedriver, or skip saying how to install them."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("no browser for the site test: apt-get install chromium chromium-driver "
                    f"(found chromium={chromium}, chromedriver={driver})")
    return chromium, driver


class _Ids(html.parser.HTMLParser):
    """Every id (and old-style <a name>) a built page defines, for checking #anchors."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key == "id" or (tag == "a" and key == "name"):
                self.ids.add(value or "")


@functools.lru_cache(maxsize=None)
def _ids(path: Path) -> frozenset[str]:
    parser = _Ids()
    parser.feed(path.read_text(encoding="utf-8"))
    return frozenset(parser.ids)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the test reports failures itself
        pass


@pytest.fixture(scope="module")
def site() -> Path:
    """The built site: built now, unless MINIRANK_SITE_PREBUILT=1 says to test the one in _build/html."""
    if os.environ.get("MINIRANK_SITE_PREBUILT") != "1":
        started = time.perf_counter()
        done = subprocess.run(["bash", str(ROOT / "lessons" / "build_book.sh")], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert done.returncode == 0, f"bash lessons/build_book.sh failed:\n{done.stdout[-6000:]}"
        # Only Sphinx's warnings count: the first run's pip install may print its own before the build starts.
        log = done.stdout
        log = log[log.find("Running Jupyter-Book"):] if "Running Jupyter-Book" in log else log
        warnings = [line for line in log.splitlines() if "WARNING" in line]
        assert not warnings, "the book builds with warnings:\n" + "\n".join(warnings[:20])
        print(f"site built in {time.perf_counter() - started:.0f} s")
    assert (HTML / "index.html").is_file(), f"no site in {HTML}: run bash lessons/build_book.sh"
    return HTML


@pytest.fixture(scope="module")
def server(site: Path):
    handler = functools.partial(_Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser(server):
    chromium, driver_path = _browser()
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (see .ci/run)")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for a browser online
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
                     # No host resolves but the test server's: any request for the network fails, as offline.
                     "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                     "--disable-background-networking", "--disable-component-update", "--no-first-run",
                     "--disable-sync", "--disable-default-apps", "--disable-extensions"]:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    except Exception as err:  # a browser that is installed but cannot start here
        pytest.skip(f"chromium ({chromium}) with {driver_path} did not start: {err}")
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _pages(site: Path) -> list[str]:
    return sorted(str(p.relative_to(site)) for p in site.rglob("*.html") if "_static" not in p.parts
                  and "_sources" not in p.parts)


def _network(driver, origin: str) -> tuple[list[str], list[str]]:
    """Requests of the page just loaded: (those not to the test server, those that failed)."""
    foreign, failed, urls = [], [], {}
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        method, params = message.get("method"), message.get("params", {})
        if method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            urls[params["requestId"]] = url
            if not url.startswith((origin, "data:", "blob:", "about:")):
                foreign.append(url)
        elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
            failed.append(f"{params['response']['status']} {params['response']['url']}")
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            failed.append(f"{params.get('errorText')} {urls.get(params['requestId'], params['requestId'])}")
    return foreign, failed


_MATH_READY = """
const done = arguments[arguments.length - 1];
const math = document.querySelectorAll('.math');
if (math.length === 0) { done({math: 0}); return; }
const report = () => done({
  math: math.length,
  typeset: [...math].filter(m => m.querySelector('mjx-container') || m.tagName === 'MJX-CONTAINER').length,
  errors: document.querySelectorAll('mjx-merror').length,
  version: window.MathJax && MathJax.version});
const started = Date.now();
(function wait() {  // MathJax loads asynchronously: wait for it to exist, then for its first typesetting
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(report, report);
  } else if (Date.now() - started > 20000) {
    report();
  } else {
    setTimeout(wait, 100);
  }
})();
"""

_TEXT_OUTSIDE_CODE = """
const body = document.querySelector('main') || document.body;
const copy = body.cloneNode(true);
copy.querySelectorAll('pre, code, mjx-container, script, style').forEach(e => e.remove());
return copy.innerText;
"""

_IMAGES = """
window.scrollTo(0, document.body.scrollHeight);
return [...document.images].map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0,
                                       w: i.naturalWidth, h: i.naturalHeight}));
"""


def _check_page(driver, origin: str, site: Path, page: str) -> list[str]:
    problems: list[str] = []
    driver.get_log("performance")  # drop what earlier pages left
    driver.get_log("browser")
    driver.get(origin + page)
    driver.set_script_timeout(30)
    if driver.execute_script("return !!document.querySelector('meta[http-equiv=refresh]')"):
        deadline = time.time() + 15  # the root index.html redirects: check the page it leads to, once loaded
        while driver.current_url == origin + page and time.time() < deadline:
            time.sleep(0.1)
        while driver.execute_script("return document.readyState") != "complete" and time.time() < deadline:
            time.sleep(0.1)
        if driver.current_url == origin + page:
            problems.append("the redirect did not happen within 15 s")
    math = driver.execute_async_script(_MATH_READY)
    if math["math"]:
        if math["typeset"] != math["math"]:
            problems.append(f"math typeset in {math['typeset']} of {math['math']} formulas (MathJax {math['version']})")
        if math["errors"]:
            problems.append(f"{math['errors']} MathJax errors (mjx-merror)")
    text = driver.execute_script(_TEXT_OUTSIDE_CODE)
    if "$$" in text:
        problems.append("raw $$ in the text: math not parsed")
    deadline = time.time() + 10
    images = driver.execute_script(_IMAGES)
    while any(not image["ok"] for image in images) and time.time() < deadline:
        time.sleep(0.2)
        images = driver.execute_script(_IMAGES)
    problems += [f"image not loaded or of zero size: {image['src']}" for image in images if not image["ok"]]
    for entry in driver.get_log("browser"):
        if entry["level"] == "SEVERE":
            problems.append(f"console error: {entry['message']}")
    foreign, failed = _network(driver, origin)
    problems += [f"request to the network: {url}" for url in foreign]
    problems += [f"failed request: {what}" for what in failed]

    links = driver.execute_script("return [...document.querySelectorAll('a[href]')].map(a => a.href)")
    for link in sorted(set(links)):
        if not link.startswith(origin):
            continue
        url = urllib.parse.urlsplit(link)
        target = site / urllib.parse.unquote(url.path.removeprefix(urllib.parse.urlsplit(origin).path))
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            problems.append(f"broken link: {link}")
        elif url.fragment and target.suffix == ".html" and urllib.parse.unquote(url.fragment) not in _ids(target):
            problems.append(f"broken anchor: {link}")

    if page.startswith("notebooks/"):
        own = f"{COLAB}notebooks/{Path(page).stem}.ipynb"
        colab = driver.execute_script(
            "return [...document.querySelectorAll('a[href*=\"colab.research.google.com\"]')].map(a => a.href)")
        if not colab:
            problems.append("no Colab launch link")
        problems += [f"Colab link to another notebook: {link} (expected {own})" for link in colab if link != own]
        cells = driver.execute_script("return document.querySelectorAll('div.cell_input').length")
        folded = driver.execute_script("return document.querySelectorAll('details.minirank-code div.cell_input,"
                                       " details div.cell_input').length")
        if not cells or folded != cells:
            problems.append(f"{folded} of {cells} code cells can be folded")
    return problems


def test_every_page_loads_offline_and_whole(browser, server, site):
    pages = _pages(site)
    assert "index.html" in pages and any(p.startswith("notebooks/") for p in pages), pages
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    report = {}
    for page in pages:
        problems = _check_page(browser, server, site, page)
        if problems:
            report[page] = problems
        if page in SCREENSHOTS:
            browser.execute_script("window.scrollTo(0, 0)")
            browser.save_screenshot(str(ARTIFACTS / (page.replace("/", "__").replace(".html", ".png"))))
    assert not report, "pages with problems:\n" + "\n".join(
        f"{page}:\n  " + "\n  ".join(problems) for page, problems in report.items())
    shots = sorted(p.name for p in ARTIFACTS.glob("*.png"))
    assert len(shots) == len(SCREENSHOTS), f"screenshots in {ARTIFACTS}: {shots}"
    print(f"{len(pages)} pages checked; screenshots in {ARTIFACTS}")


def test_math_renders_on_the_losses_lesson(browser, server):
    browser.get(server + "lessons/04_ranking_losses.html")
    browser.set_script_timeout(30)
    math = browser.execute_async_script(_MATH_READY)
    assert math["math"] > 20 and math["typeset"] == math["math"], math
    assert str(math["version"]).startswith("3."), f"MathJax 3 expected, got {math['version']}"
    src = browser.execute_script("return [...document.scripts].map(s => s.src).filter(s => /mathjax/i.test(s))")
    assert src and all(s.startswith(server + "_static/mathjax/") for s in src), src


def test_code_cells_fold_and_unfold(browser, server):
    browser.get(server + "notebooks/04_ranking_losses.html")
    details = browser.find_element("css selector", "details.minirank-code")
    code = details.find_element("css selector", "div.cell_input")
    assert code.is_displayed()
    details.find_element("css selector", "summary").click()
    assert not code.is_displayed(), "clicking the fold did not hide the code"
    details.find_element("css selector", "summary").click()
    assert code.is_displayed()


def test_search_finds_a_word(browser, server):
    browser.get(server + "search.html?q=ListMLE")
    deadline = time.time() + 30
    found = []
    while time.time() < deadline and not found:
        time.sleep(0.5)
        found = browser.execute_script("return [...document.querySelectorAll('#search-results li a')].map(a => a.href)")
    assert any("04_ranking_losses" in link for link in found), f"searching 'ListMLE' found {found}"
    box = browser.execute_script("return document.querySelectorAll('input[name=q], form.bd-search').length")
    assert box, "no search box on the page"


def test_no_page_loads_a_script_or_stylesheet_from_the_network(site):
    """The issue's acceptance grep: links to papers are fine, loaded scripts and stylesheets are not."""
    loaded = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=\"(https?:)?//[^\"]+\"", re.IGNORECASE)
    found = {str(p.relative_to(site)): loaded.findall(p.read_text(encoding="utf-8")) and
             [m.group(0) for m in loaded.finditer(p.read_text(encoding="utf-8"))]
             for p in site.rglob("*.html")}
    found = {page: hits for page, hits in found.items() if hits}
    assert not found, f"pages that load from the network: {found}"
