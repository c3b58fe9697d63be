"""tests/integration/test_console.py - the web console served by iocd: the page itself (built
into the binary, no internet needed) and, in a real headless Chromium, what an operator does
with it."""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import IOCD, Daemon, Failure, check, eq, run, wait_for  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLES = os.path.join(ROOT, "examples", "rules")
SHOTS = os.path.join(ROOT, "build", "test-logs", "console")


def browser():
    """Headless Debian Chromium driven by chromedriver (python3-selenium), logging the page's
    console so JavaScript errors can be asserted on."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise Failure("python3-selenium is missing: make test installs it (tools/deps.sh test)")
    for path in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        check(os.path.exists(path), "%s is missing: make test installs chromium and "
              "chromium-driver (tools/deps.sh test)" % path)
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1500,1000", "--lang=en-US"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def js_errors(drv, network=True):
    """The page's errors since the last call (the log drains as it is read): JavaScript
    exceptions and console errors, and failed requests unless network is False."""
    return [e["message"] for e in drv.get_log("browser") if e["level"] == "SEVERE" and
            (network or e.get("source") != "network")]


def shot(drv, name):
    os.makedirs(SHOTS, exist_ok=True)
    drv.save_screenshot(os.path.join(SHOTS, name + ".png"))


def page_wait(drv, script, what, timeout=45):
    """Waits until the JavaScript expression is truthy in the page; returns its value."""
    return wait_for(lambda: drv.execute_script("return (" + script + ");"), timeout=timeout,
                    what=what + " in the page", interval=0.1)


def test_page_is_served_at_root_without_a_token():
    with Daemon(config='return { tokens = { { name = "wall", token = "s3", role = "read" } } }\n') as d:
        d.start()
        for path in ("/", "/console", "/index.html"):
            r = d.get(path)
            eq(r.status, 200, path)
            check(r.header("Content-Type").startswith("text/html"), "%s is HTML" % path)
            check("operations console" in r.text, "%s is the console" % path)
            check("http://" not in r.text and "https://" not in r.text,
                  "the page loads nothing from the internet")
        eq(d.get("/api/v1/incidents").status, 401, "the data behind it still needs the token")
        city = d.get("/api/v1/status/city", headers={"Authorization": "Bearer s3"}).json()["data"]
        eq((city["utc_offset_s"], city["latitude"], city["longitude"]), (25200, 21.59, 105.85),
           "the city the console draws: Asia/Ho_Chi_Minh, Thái Nguyên")
        eq(d.get("/nope").status, 404, "an unknown page")


def test_operator_works_an_incident_in_a_real_browser():
    """The demo city feeds a real iocd; in headless Chromium the overview fills with domains
    and wards, an injected fault appears as an incident, acknowledging it in the page shows
    acknowledged in the page and through the API, the incident's chart and the explorer draw
    points, the other views render, and the page logs no JavaScript error."""
    with Daemon("--rules", EXAMPLES) as d:
        d.start()
        d.wait_log(r"rules loaded")
        sim = subprocess.Popen([IOCD, "simulate", "--url", "http://" + d.http_addr,
                                "--devices", "400", "--interval", "2s"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        drv = browser()
        try:
            url = "http://" + d.http_addr + "/"
            drv.get(url)
            # The overview: every domain tile, and the wards that report.
            page_wait(drv, "document.querySelectorAll('#domains .tile').length >= 6",
                      "six domain tiles")
            page_wait(drv, "document.querySelectorAll('#wards .ward').length >= 10",
                      "the wards of the city")
            # A fault injected by the simulator becomes an incident in the list.
            first = page_wait(drv, "(document.querySelector('#list tr.row') || {}).dataset",
                              "an incident row")
            # The simulator registered its devices: incidents say where they are (UTF-8 end to
            # end: "Số 289 Thống Nhất, phường Phan Đình Phùng") and stand on the ward map.
            wait_for(lambda: [i for i in d.get("/api/v1/incidents").json()["data"]["incidents"]
                              if "phường" in (i.get("address") or "")],
                     timeout=45, what="an incident with its device's address")
            page_wait(drv, "document.querySelectorAll('#map circle.inc').length > 0",
                      "incidents on the ward map")
            shot(drv, "overview")
            # Vietnamese and back, times in the city's zone (UTC+7).
            drv.find_element("id", "lang").click()
            eq(drv.execute_script("return document.querySelector('#nav a').textContent"),
               "Tổng quan", "the overview tab in Vietnamese")
            check("UTC+7" in drv.find_element("id", "live").text, "times in the city's zone")
            shot(drv, "overview-vi")
            drv.find_element("id", "lang").click()
            eq(drv.execute_script("return document.querySelector('#nav a').textContent"),
               "Overview", "back in English")
            inc_id = int(first["id"])
            drv.execute_script("document.querySelector('#list tr.row[data-id=\"%d\"]').click();"
                               % inc_id)
            page_wait(drv, "document.getElementById('d-state')", "the incident's detail")
            state = drv.execute_script("return document.getElementById('d-state').dataset.state")
            if state == "firing":
                drv.find_element("id", "who").send_keys("Lan")
                drv.find_element("id", "act-text").send_keys("crew on the way")
                drv.find_element("id", "b-ack").click()
                page_wait(drv, "document.getElementById('d-state').dataset.state === "
                          "'acknowledged'", "acknowledged in the detail")
                inc = d.get("/api/v1/incidents/%d" % inc_id).json()["data"]
                eq((inc["state"], inc["acknowledged_by"], inc["ack_note"]),
                   ("acknowledged", "Lan", "crew on the way"), "acknowledged through the API")
                page_wait(drv, "[...document.querySelectorAll('#list tr.row')].some(r => "
                          "r.dataset.id === '%d' && r.querySelector('.state').dataset.state === "
                          "'acknowledged')" % inc_id, "acknowledged in the list")
            # The chart of the series that triggered it draws points.
            page_wait(drv, "[...document.querySelectorAll('#d-chart path.line')].some(p => "
                      "(p.getAttribute('d').match(/L/g) || []).length >= 2)",
                      "the incident's chart with points", timeout=60)
            shot(drv, "incident")
            # Explore: a PromQL query over the last hour.
            drv.get(url + "#explore")
            box = page_wait(drv, "document.getElementById('q')", "the query box")
            box.clear()
            box.send_keys("avg by (ward) (water_pressure_bar)")
            drv.find_element("id", "q-run").click()
            page_wait(drv, "[...document.querySelectorAll('#q-chart path.line')].some(p => "
                      "(p.getAttribute('d').match(/L/g) || []).length >= 2) && "
                      "document.querySelectorAll('#q-chart path.line').length >= 10",
                      "one line per ward with points")
            info = drv.find_element("id", "q-info").text
            check("series" in info, "the explorer says how many series: %r" % info)
            shot(drv, "explore")
            eq(js_errors(drv), [], "errors in the page before the bad query")
            # A bad query shows Prometheus' error, not a blank chart (its 400 is expected).
            box.clear()
            box.send_keys("sum(")
            drv.find_element("id", "q-run").click()
            err = page_wait(drv, "document.getElementById('q-err').textContent", "the error")
            check("parse error" in err, "the parse error is shown: %r" % err)
            # Rules with their evaluations, silences, KPIs.
            drv.get(url + "#rules")
            page_wait(drv, "[...document.querySelectorAll('#rules td')].some(t => "
                      "t.textContent.startsWith('camera_offline'))", "the rules table")
            page_wait(drv, "[...document.querySelectorAll('#rules tr')].some(r => "
                      "/ago/.test(r.textContent))", "a rule's last evaluation")
            shot(drv, "rules")
            drv.get(url + "#silences")
            drv.find_element("id", "s-matchers").send_keys('{ward="tan_lap"}')
            drv.find_element("id", "s-comment").send_keys("pump maintenance")
            drv.find_element("id", "s-create").click()
            page_wait(drv, "[...document.querySelectorAll('#silences td')].some(t => "
                      "t.textContent === 'pump maintenance')", "the new silence")
            sil = d.get("/api/v1/silences").json()["data"]
            eq([(s["matchers"], s["state"]) for s in sil], [('{ward="tan_lap"}', "active")],
               "the silence through the API")
            drv.get(url + "#kpi")
            page_wait(drv, "document.querySelectorAll('#k-domain tbody tr td.num').length > 0",
                      "KPIs by domain")
            shot(drv, "kpi")
            eq(js_errors(drv, network=False), [], "JavaScript errors in the page")
        except Failure as e:
            shot(drv, "failure")
            raise Failure("%s\nthe page's errors: %r\nthe detail: %s" % (
                e, js_errors(drv), drv.execute_script(
                    "return (document.getElementById('detail') || {}).innerText")))
        finally:
            drv.quit()
            sim.terminate()
            sim.wait(20)


if __name__ == "__main__":
    run(globals())
