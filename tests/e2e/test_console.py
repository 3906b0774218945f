"""The console (`/ui` on the admin listener) in headless Chromium, against the real
gateway of this session: signing in, records written by the official SDK, keys made in
the console that then work (and stop working once revoked), experiments, the audit
trail and config versions, what an auditor is not offered, and the page's security
(a strict CSP that the page itself never trips, data rendered as text, never markup).

Chromium and ChromeDriver come from Debian's packages (`.ci/run` installs them); with
CI=true a missing browser fails the suite instead of skipping it."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest

from conftest import ADMIN_TOKEN, AUDITOR_TOKEN, Gateway

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

XSS = '<img src=x onerror="window.__asc_xss=1">'


def _binary(env: str, *names: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env]
    for n in names:
        found = shutil.which(n)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = _binary("ASC_CHROMIUM", "chromium", "chromium-browser", "google-chrome")
    driver_bin = _binary("ASC_CHROMEDRIVER", "chromedriver")
    if not chromium or not driver_bin:
        message = "Chromium and ChromeDriver are needed (Debian: apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    opts = Options()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_bin), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, condition, timeout: float = 15.0):
    return WebDriverWait(
        driver, timeout, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
    ).until(condition)


def visible(driver, element_id: str):
    return wait(driver, ec.visibility_of_element_located((By.ID, element_id)))


def text_of(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def severe_console_messages(driver) -> list[str]:
    """Errors the page raised: a CSP violation, an uncaught exception, a failed load. A
    401 from a deliberately wrong token is the one expected failure."""
    return [
        e["message"]
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and "status of 401" not in e["message"]
    ]


def open_console(driver, gateway: Gateway) -> None:
    driver.get(gateway.admin_base + "/ui")
    driver.execute_script("sessionStorage.clear()")
    driver.get(gateway.admin_base + "/ui")
    visible(driver, "signin")


def sign_in(driver, gateway: Gateway, token: str) -> None:
    open_console(driver, gateway)
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "signin-submit").click()
    visible(driver, "app")


def go(driver, view: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f'#tabs a[data-view="{view}"]').click()
    visible(driver, f"view-{view}")


def screenshot(driver, gateway: Gateway, name: str) -> None:
    driver.save_screenshot(str(Path(gateway.log_path).parent / f"console-{name}.png"))


def test_the_console_is_served_with_a_strict_policy_and_no_data(gateway: Gateway):
    page = httpx.get(gateway.admin_base + "/ui", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    for directive in ("default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"):
        assert directive in csp, csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert "<script src=\"/ui/app.js\"" in page.text
    script = httpx.get(gateway.admin_base + "/ui/app.js", timeout=10)
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["content-security-policy"] == csp
    assert httpx.get(gateway.admin_base + "/ui/app.css", timeout=10).headers["content-type"].startswith("text/css")
    missing = httpx.get(gateway.admin_base + "/ui/nope.js", timeout=10)
    assert missing.status_code == 404
    # The page holds no data: what it shows needs the token, as before.
    assert httpx.get(gateway.admin_base + "/admin/v1/tenants", timeout=10).status_code == 401
    # Not on the data plane.
    assert httpx.get(gateway.base_url + "/ui", timeout=10).status_code == 404


def test_a_wrong_token_is_refused_and_shows_nothing(browser, gateway: Gateway):
    open_console(browser, gateway)
    browser.find_element(By.ID, "token").send_keys("asc-not-a-token")
    browser.find_element(By.ID, "signin-submit").click()
    error = visible(browser, "signin-error")
    assert "401" in error.text and "unknown admin token" in error.text
    assert not browser.find_element(By.ID, "app").is_displayed()
    assert browser.execute_script("return sessionStorage.length") == 0
    assert severe_console_messages(browser) == []


def test_records_written_by_the_sdk_are_shown_as_text(browser, gateway: Gateway, oai: openai.OpenAI):
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt",
        messages=[{"role": "user", "content": "hello console"}],
        user=XSS,
    )
    request_id = raw.headers["x-asc-request-id"]
    sign_in(browser, gateway, ADMIN_TOKEN)
    assert text_of(browser, "who-actor") != ""
    assert text_of(browser, "who-role") == "platform_admin"
    go(browser, "records")
    browser.find_element(By.ID, "records-tenant").send_keys("full")
    selector = f'button[data-record="{request_id}"]'

    def found(d):
        # Records are written in batches: search again until it is there.
        d.find_element(By.ID, "records-search").click()
        time.sleep(0.2)
        return d.find_elements(By.CSS_SELECTOR, selector)

    link = wait(browser, found)[0]
    row = link.find_element(By.XPATH, "./ancestor::tr")
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[2] == "full"
    assert cells[3] == XSS, "the user id is shown as the text it is"
    assert cells[4] == "gpt"
    assert cells[6] == "success"
    assert row.find_elements(By.TAG_NAME, "img") == []
    link.click()
    detail = visible(browser, "record-json")
    assert f'"request_id": "{request_id}"' in detail.text
    assert '"surface": "openai"' in detail.text
    assert browser.execute_script("return window.__asc_xss") is None
    screenshot(browser, gateway, "records")
    assert severe_console_messages(browser) == []


def test_the_timeline_puts_records_and_events_in_one_order(browser, gateway: Gateway, oai: openai.OpenAI):
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt", messages=[{"role": "user", "content": "for the timeline"}]
    )
    request_id = raw.headers["x-asc-request-id"]
    sign_in(browser, gateway, ADMIN_TOKEN)
    go(browser, "timeline")

    def shown(d):
        d.find_element(By.ID, "timeline-search").click()
        time.sleep(0.2)
        return request_id in d.find_element(By.ID, "timeline-table").text

    wait(browser, shown)
    kinds = [r.find_elements(By.TAG_NAME, "td")[1].text for r in browser.find_elements(By.CSS_SELECTOR, "#timeline-table tbody tr")]
    assert "request" in kinds
    assert "config_loaded" in kinds, "the startup's config version is an event on the timeline"
    times = [r.find_elements(By.TAG_NAME, "td")[0].text for r in browser.find_elements(By.CSS_SELECTOR, "#timeline-table tbody tr")]
    assert times == sorted(times, reverse=True), "newest first"
    assert severe_console_messages(browser) == []


def test_a_key_made_in_the_console_works_until_revoked_there(browser, gateway: Gateway):
    tenant = f"console-{uuid.uuid4().hex[:8]}"
    made = httpx.post(
        gateway.admin_base + "/admin/v1/tenants",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        json={"name": tenant, "allowed_models": ["gpt"], "regions": ["us"]},
        timeout=10,
    )
    assert made.status_code == 201, made.text
    sign_in(browser, gateway, ADMIN_TOKEN)
    go(browser, "tenants")
    button = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, f'button[data-tenant="{tenant}"]'))
    row = [c.text for c in button.find_element(By.XPATH, "./ancestor::tr").find_elements(By.TAG_NAME, "td")]
    assert row[:4] == [tenant, "api", "gpt", "us"]
    button.click()
    visible(browser, "key-form")
    browser.find_element(By.ID, "key-name").send_keys("from-the-console")
    browser.find_element(By.ID, "key-create").click()
    key = visible(browser, "new-key-value").text
    assert key.startswith("sk-"), key

    client = openai.OpenAI(base_url=gateway.openai_base, api_key=key, max_retries=0, timeout=30)
    reply = client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content

    key_row = wait(
        browser, lambda d: d.find_element(By.XPATH, "//table[@id='keys-table']//tr[td[1]='from-the-console']")
    )
    prefix = key_row.find_elements(By.TAG_NAME, "td")[1].text
    assert prefix and key.startswith(prefix) and prefix != key, "only the prefix is listed"
    assert key not in browser.find_element(By.ID, "keys-table").text
    key_row.find_element(By.CSS_SELECTOR, "button.danger").click()
    wait(browser, ec.alert_is_present()).accept()
    assert "revoked" in visible(browser, "notice").text

    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])

    def usage_counted(d):
        d.find_element(By.CSS_SELECTOR, f'button[data-tenant="{tenant}"]').click()
        time.sleep(0.2)
        dl = d.find_element(By.ID, "usage").text
        return "Requests\n1" in dl or "Requests 1" in dl

    wait(browser, usage_counted)
    revoked = browser.find_element(By.XPATH, "//table[@id='keys-table']//tr[td[1]='from-the-console']")
    assert revoked.find_elements(By.TAG_NAME, "td")[4].text != "—"
    assert revoked.find_elements(By.CSS_SELECTOR, "button.danger") == []
    screenshot(browser, gateway, "tenants")
    assert severe_console_messages(browser) == []


def test_switching_tenants_quickly_shows_only_the_last_ones_data(browser, gateway: Gateway):
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    names = [f"quick-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for name in names:
        made = httpx.post(
            gateway.admin_base + "/admin/v1/tenants", headers=admin,
            json={"name": name, "allowed_models": ["gpt"]}, timeout=10,
        )
        assert made.status_code == 201, made.text
        key = httpx.post(
            gateway.admin_base + f"/admin/v1/tenants/{name}/keys", headers=admin,
            json={"name": f"key-of-{name}"}, timeout=10,
        )
        assert key.status_code == 201, key.text
    slow, last = names
    sign_in(browser, gateway, ADMIN_TOKEN)
    go(browser, "tenants")
    wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, f'button[data-tenant="{last}"]'))
    # The first tenant's answers arrive late (its requests slowed in the page), after
    # the second tenant, opened right after it, is shown.
    browser.execute_script(
        """
        const slow = arguments[0];
        const real = window.fetch.bind(window);
        window.fetch = (url, init) => real(url, init).then((r) =>
          String(url).includes(slow) ? new Promise((ok) => setTimeout(() => ok(r), 800)) : r);
        """,
        slow,
    )
    browser.find_element(By.CSS_SELECTOR, f'button[data-tenant="{slow}"]').click()
    browser.find_element(By.CSS_SELECTOR, f'button[data-tenant="{last}"]').click()
    wait(browser, lambda d: f"key-of-{last}" in d.find_element(By.ID, "keys-table").text)
    time.sleep(1.5)  # the slowed answers have arrived by now
    assert text_of(browser, "tenant-name") == last
    keys = browser.find_element(By.ID, "keys-table").text
    assert f"key-of-{last}" in keys and f"key-of-{slow}" not in keys, keys
    assert severe_console_messages(browser) == []


def test_experiments_are_shown_and_paused_and_resumed(browser, gateway: Gateway):
    sign_in(browser, gateway, ADMIN_TOKEN)
    go(browser, "experiments")
    card = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, 'article[data-experiment="sdk-canary"]'))
    state = lambda: browser.find_element(  # noqa: E731
        By.CSS_SELECTOR, 'article[data-experiment="sdk-canary"] [data-field="state"]'
    ).text
    assert state() == "running"
    arms = [r.find_elements(By.TAG_NAME, "td")[0].text for r in card.find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert arms[:2] == ["baseline", "candidate"]
    assert "error_rate" in card.text, "the guard is listed"

    browser.find_element(By.CSS_SELECTOR, 'article[data-experiment="sdk-canary"] button[data-action="pause"]').click()
    wait(browser, lambda d: state() == "paused")
    status = httpx.get(
        gateway.admin_base + "/admin/v1/experiments/sdk-canary",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    ).json()
    assert status["state"] == "paused"
    assert status["decisions"][-1]["action"] == "pause"

    browser.find_element(By.CSS_SELECTOR, 'article[data-experiment="sdk-canary"] button[data-action="resume"]').click()
    wait(browser, lambda d: state() == "running")
    assert "resume" in visible(browser, "notice").text
    screenshot(browser, gateway, "experiments")
    assert severe_console_messages(browser) == []


def test_the_audit_trail_verifies_and_exports(browser, gateway: Gateway):
    sign_in(browser, gateway, ADMIN_TOKEN)
    go(browser, "audit")
    browser.find_element(By.ID, "audit-verify").click()
    result = visible(browser, "audit-result")
    assert result.get_attribute("data-ok") == "true"
    text = result.text
    assert "intact" in text
    entries = int(text.split("Entries\n")[1].split("\n")[0])
    assert entries > 0
    browser.find_element(By.ID, "export-run").click()
    link = visible(browser, "export-link")
    assert link.get_attribute("href").startswith("blob:")
    lines = int(link.text.split("(")[1].split(" ")[0])
    assert lines >= entries
    assert severe_console_messages(browser) == []


def test_config_versions_and_reload(browser, gateway: Gateway):
    sign_in(browser, gateway, ADMIN_TOKEN)
    go(browser, "config")
    first = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#config-table tbody tr"))
    cells = [c.text for c in first.find_elements(By.TAG_NAME, "td")]
    assert cells[0].isdigit() and cells[3].endswith("asc.yaml") and len(cells[4]) == 16, cells
    visible(browser, "config-reload").click()
    assert "Config reloaded: version" in visible(browser, "notice").text
    first = browser.find_element(By.CSS_SELECTOR, "#config-table tbody tr button.link")
    first.click()
    visible(browser, "config-diff")
    assert severe_console_messages(browser) == []


def test_an_auditor_reads_everything_and_is_offered_no_change(browser, gateway: Gateway):
    tenant = f"audited-{uuid.uuid4().hex[:8]}"
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    url = gateway.admin_base + "/admin/v1/tenants"
    assert httpx.post(url, headers=admin, json={"name": tenant}, timeout=10).status_code == 201
    key = httpx.post(f"{url}/{tenant}/keys", headers=admin, json={"name": "k"}, timeout=10).json()
    sign_in(browser, gateway, AUDITOR_TOKEN)
    assert text_of(browser, "who-role") == "auditor"
    go(browser, "tenants")
    wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, f'button[data-tenant="{tenant}"]')).click()
    listed = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#keys-table tbody tr"))
    assert listed.find_elements(By.TAG_NAME, "td")[1].text == key["prefix"]
    assert key["key"] not in browser.page_source, "an auditor never sees key material"
    assert not browser.find_element(By.ID, "key-form").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, "#keys-table button") == []
    go(browser, "experiments")
    wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, 'article[data-experiment="sdk-canary"]'))
    assert browser.find_elements(By.CSS_SELECTOR, "article.experiment button") == []
    go(browser, "config")
    wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#config-table tbody tr"))
    assert not browser.find_element(By.ID, "config-reload").is_displayed()
    go(browser, "audit")
    browser.find_element(By.ID, "audit-verify").click()
    assert visible(browser, "audit-result").get_attribute("data-ok") == "true"
    # Signing out forgets the token: a reload of the page asks again.
    browser.find_element(By.ID, "signout").click()
    visible(browser, "signin")
    browser.refresh()
    visible(browser, "signin")
    assert browser.execute_script("return sessionStorage.length") == 0
    assert severe_console_messages(browser) == []
