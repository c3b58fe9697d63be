"""tests/integration/test_console.py - the web console served by iocd: the page itself (built
into the binary, no internet needed) and, in a real headless Chromium, what an operator does
with it."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import Daemon, check, eq, run  # noqa: E402


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
        eq(d.get("/nope").status, 404, "an unknown page")


if __name__ == "__main__":
    run(globals())
