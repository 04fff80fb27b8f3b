#!/usr/bin/env python3
"""Swagger UI at /docs in a real browser: Debian's Chromium driven by Playwright for Python.

Run by tests/e2e/openapi.rs against a server it started on a free port:

    docs.py --base URL --token T

Steps, each an assertion: /docs lands on Swagger UI, which reads /openapi.json and shows one
operation per operation of the document; "Try it out" on GET /v1/checkpoint with the token
given through "Authorize" reaches the server; nothing breaks the page's
Content-Security-Policy and nothing is requested from another origin. Prints one JSON line of
measurements.
"""

import argparse
import json
import re
import time
import urllib.parse
import urllib.request

from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    with urllib.request.urlopen(args.base + "/openapi.json", timeout=30) as response:
        document = json.load(response)
    operations = sum(1 for item in document["paths"].values() for m in item if m in METHODS)
    origin = urllib.parse.urlsplit(args.base).netloc

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        problems = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        elsewhere = []
        page.on(
            "request",
            lambda r: elsewhere.append(r.url)
            if urllib.parse.urlsplit(r.url).scheme in ("http", "https")
            and urllib.parse.urlsplit(r.url).netloc != origin
            else None,
        )
        # Violations are reported as events on the document, whatever the console shows.
        page.add_init_script(
            "window.__csp = []; document.addEventListener('securitypolicyviolation',"
            " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
        )

        started = time.monotonic()
        page.goto(args.base + "/docs")
        assert page.url.endswith("/docs/index.html"), page.url
        blocks = page.locator(".opblock")
        expect(blocks).to_have_count(operations, timeout=15000)
        rendered_s = time.monotonic() - started
        loading_problems = list(problems)

        # Authorize with the bearer token, then try GET /v1/checkpoint: the server answers
        # (404 before the first checkpoint), proving the UI's requests reach it.
        page.locator("button.authorize").first.click()
        dialog = page.locator(".modal-ux")
        bearer = dialog.locator(".auth-container").filter(has_text="(http, Bearer)")
        bearer.locator("input").first.fill(args.token)
        bearer.locator("button.authorize").click()
        dialog.locator("button.btn-done").first.click()
        checkpoint = page.locator("#operations-read-latest")
        checkpoint.locator(".opblock-summary").click()
        checkpoint.locator("button.try-out__btn").click()
        checkpoint.locator("button.execute").click()
        status = checkpoint.locator(".live-responses-table tr.response .response-col_status").first
        expect(status).to_have_text(re.compile(r"^\s*(200|404)"), timeout=10000)

        violations = page.evaluate("window.__csp")
        browser.close()

    assert not violations, f"Content-Security-Policy violations: {violations}"
    assert not elsewhere, f"requests to other origins: {elsewhere}"
    assert not loading_problems, f"errors while loading the page: {loading_problems}"
    # The browser logs the answer to "Try it out" when it is a 404 (no checkpoint yet).
    other = [m for m in problems[len(loading_problems) :] if "status of 404" not in m]
    assert not other, f"errors on the page: {other}"
    print(json.dumps({"operations": operations, "rendered_s": round(rendered_s, 3)}))


if __name__ == "__main__":
    main()
