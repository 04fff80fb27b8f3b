#!/usr/bin/env python3
"""The dashboard in a real browser: Debian's Chromium driven by Playwright for Python.

Run by tests/e2e/dashboard.rs against a server it started on a free port (it also makes the
tokens, the cameras and the first events):

    dashboard.py --base URL --auditor-token T --camera-token C --image FILE \
                 --expect-uploads N --other-camera cam-2 [--screenshots DIR]

Steps, each an assertion: the page asks to sign in; a camera token is refused with a clear
message; the auditor signs in (an HttpOnly, SameSite=Strict session cookie that is not the
token); the counts show what the server holds; an upload through the API appears on the
page within 2 seconds, then its verdict; its thumbnail loads; filtering by camera shows only
that camera; signing out ends the session. Prints one JSON line of measurements.
"""

import argparse
import json
import sys
import time
import urllib.request

from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"


def upload(base, token, path):
    with open(path, "rb") as f:
        body = f.read()
    request = urllib.request.Request(
        base + "/v1/images",
        data=body,
        method="POST",
        headers={"Authorization": "Bearer " + token, "Content-Type": "image/jpeg"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201, response.status
        return json.load(response)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--auditor-token", required=True)
    parser.add_argument("--camera-token", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--expect-uploads", type=int, required=True)
    parser.add_argument("--other-camera", required=True)
    parser.add_argument("--screenshots")
    args = parser.parse_args()
    measured = {}

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        errors, failed = [], []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "Failed to load" not in m.text else None)
        page.on("response", lambda r: failed.append(f"{r.status} {r.url.removeprefix(args.base)}") if r.status >= 400 else None)

        # The page is served with a strict CSP and asks to sign in.
        response = page.goto(args.base + "/")
        csp = response.headers.get("content-security-policy", "")
        assert "default-src 'none'" in csp and "script-src 'self'" in csp, csp
        expect(page.locator("#signin")).to_be_visible()

        # A camera token cannot sign in.
        page.fill("#token", args.camera_token)
        page.click("#login button[type=submit]")
        expect(page.locator("#login-error")).to_contain_text("camera token cannot sign in")
        expect(page.locator("#dashboard")).to_be_hidden()

        # The auditor signs in: a session cookie, HttpOnly and SameSite=Strict, not the token.
        page.fill("#token", args.auditor_token)
        page.click("#login button[type=submit]")
        expect(page.locator("#dashboard")).to_be_visible()
        cookies = {c["name"]: c for c in context.cookies()}
        session = cookies["camledger_session"]
        assert session["httpOnly"] and session["sameSite"] == "Strict", session
        assert session["value"] != args.auditor_token and args.auditor_token not in session["value"]
        assert page.evaluate("document.cookie") == "", "scripts cannot read the session cookie"

        # The counts are the server's.
        expect(page.locator("#count-uploads")).to_have_text(str(args.expect_uploads))
        expect(page.locator("#live")).to_have_text("live")
        rows_before = page.locator("#events tbody tr").count()
        assert rows_before == args.expect_uploads, rows_before

        # An upload through the API appears within 2 seconds, then its verdict.
        started = time.monotonic()
        created = upload(args.base, args.camera_token, args.image)
        seq = created["seq"]
        row = page.locator(f'#events tbody tr[data-seq="{seq}"]')
        row.wait_for(state="visible", timeout=2000)
        measured["event_visible_s"] = round(time.monotonic() - started, 3)
        expect(page.locator("#count-uploads")).to_have_text(str(args.expect_uploads + 1), timeout=2000)
        verdict = row.locator("td.verdict")
        expect(verdict).not_to_have_text("pending", timeout=30000)
        measured["verdict_visible_s"] = round(time.monotonic() - started, 3)
        assert verdict.inner_text().split(" ")[0] in ("ok", "spam"), verdict.inner_text()
        link = row.locator("td a").first
        assert link.get_attribute("href") == f"/v1/events/{seq}"
        thumb = row.locator("img")
        expect(thumb).to_have_attribute("src", f"/v1/events/{seq}/thumbnail")
        page.wait_for_function(
            "(img) => img.complete && img.naturalWidth > 0 && img.naturalWidth <= 160", arg=thumb.element_handle()
        )
        # The event link opens the event's JSON with the session cookie.
        event = page.evaluate(f"fetch('/v1/events/{seq}').then(r => r.json())")
        assert event["event"]["seq"] == seq, event
        if args.screenshots:
            page.wait_for_timeout(300)
            page.screenshot(path=f"{args.screenshots}/dashboard.png", full_page=True)

        # Filter by camera: only that camera's events, counted from the search API.
        page.select_option("#camera", args.other_camera)
        expect(page.locator("#filter-note")).to_contain_text(args.other_camera)
        expect(page.locator(f'#events tbody tr[data-camera="{args.other_camera}"]').first).to_be_visible()
        expect(page.locator(f'#events tbody tr[data-seq="{seq}"]')).to_have_count(0)
        cameras = page.locator("#events tbody tr").evaluate_all("rows => rows.map(r => r.dataset.camera)")
        assert cameras and all(c == args.other_camera for c in cameras), cameras
        stats = page.evaluate(f"fetch('/v1/stats?camera={args.other_camera}').then(r => r.json())")
        expect(page.locator("#count-uploads")).to_have_text(str(sum(c["uploads"] for c in stats["cameras"])))
        if args.screenshots:
            page.screenshot(path=f"{args.screenshots}/dashboard-filtered.png", full_page=True)

        # Signing out ends the session: the API answers 401 to the page again.
        page.click("#logout")
        expect(page.locator("#signin")).to_be_visible()
        status = page.evaluate("fetch('/v1/stats').then(r => r.status)")
        assert status == 401, status
        if args.screenshots:
            page.screenshot(path=f"{args.screenshots}/dashboard-signin.png")

        assert not errors, errors
        # The only refusals: the page's first look before signing in, the camera token's
        # sign-in, and the look after signing out.
        assert failed == ["401 /v1/stats", "403 /login", "401 /v1/stats"], failed
        browser.close()

    print(json.dumps(measured))


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"dashboard test failed: {e!r}", file=sys.stderr)
        raise
