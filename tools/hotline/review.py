"""The analysts' review pages (Flask, server-rendered): log-in, the queue of cases, decisions, summary.

Owns the web interface of a hotline hub: local accounts (passwords hashed with argon2-cffi's
Argon2id defaults), sessions (Flask's signed cookie: HttpOnly, SameSite=Strict, Secure behind TLS,
8 hours), CSRF protection on every form (Flask-WTF's CSRFProtect), the queue (URL, host, address,
country, list and entry, counts, times, the hubs it came from), the actions (confirm and request
takedown, record takedown done, reject as false positive) and the summary with its SVG chart.
The hub never has the image and no page ever shows or links one: hosting URLs are text. Must not
touch SQL (``tools.hotline.store``) or what a decision means (``tools.hotline.hub``).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from datetime import timedelta
from typing import Dict, List, Tuple

from agent.core.errors import ConfigError
from tools.hotline.export import summary

log = logging.getLogger(__name__)

MAX_NAME = 64
MAX_PASSWORD = 1024
LOCK_AFTER = 5          # failed log-ins in a row for one account ...
LOCK_SECONDS = 60.0     # ... lock it for this long (the password is not even checked meanwhile)
ACTION_LABELS = {"confirm": "Confirm, request takedown", "removed": "Record takedown done",
                 "reject": "Reject as false positive"}


def hasher():
    """The password hasher (argon2id, the library's current defaults)."""
    from argon2 import PasswordHasher
    return PasswordHasher()


def add_account(store, name: str, password: str) -> None:
    """Create or replace an analyst account."""
    from agent.lists.trust import check_name
    check_name("account", name)
    if not isinstance(password, str) or not 12 <= len(password) <= MAX_PASSWORD:
        raise ConfigError("a password has 12 to %d characters" % MAX_PASSWORD)
    store.set_account(name, hasher().hash(password))


def load_secret(path: str) -> bytes:
    """The session signing secret: read from ``path``, or made there (0600) on first start."""
    try:
        with open(path, "rb") as f:
            data = f.read(256)
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    data = secrets.token_bytes(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return data


class LoginGuard:
    """Failed log-ins per account: after LOCK_AFTER in a row the account is locked for LOCK_SECONDS."""

    def __init__(self, clock=time.monotonic) -> None:
        self._fails: Dict[str, Tuple[int, float]] = {}
        self._lock = threading.Lock()
        self.clock = clock

    def locked(self, name: str) -> bool:
        with self._lock:
            n, until = self._fails.get(name, (0, 0.0))
            return n >= LOCK_AFTER and self.clock() < until

    def failed(self, name: str) -> None:
        with self._lock:
            n, _ = self._fails.get(name, (0, 0.0))
            if len(self._fails) > 10000:  # bounded: names that do not exist are tried too
                self._fails.clear()
            self._fails[name] = (n + 1, self.clock() + LOCK_SECONDS)

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._fails.pop(name, None)


def chart_svg(rows: List[dict]) -> str:
    """A horizontal stacked bar chart (SVG) of cases per country by status, with median hours to removal."""
    from markupsafe import escape
    colours = (("new", "#d08a1e"), ("takedown_requested", "#2f7fd0"), ("removed", "#2e9a48"), ("rejected", "#a0a4ab"))
    rows = rows[:30]
    top = max([r["cases"] for r in rows] + [1])
    bar_h, gap, left, width = 22, 8, 90, 460
    height = 40 + len(rows) * (bar_h + gap) + 30
    out = ['<svg xmlns="http://www.w3.org/2000/svg" id="chart" width="%d" height="%d" role="img" '
           'aria-label="cases per hosting country by status" font-family="DejaVu Sans" font-size="12">'
           % (left + width + 330, height)]
    for i, (name, colour) in enumerate(colours):
        out.append('<rect x="%d" y="8" width="12" height="12" fill="%s"/><text x="%d" y="18">%s</text>'
                   % (left + i * 175, colour, left + i * 175 + 16, name.replace("_", " ")))
    for i, r in enumerate(rows):
        y = 36 + i * (bar_h + gap)
        out.append('<text x="%d" y="%d" text-anchor="end">%s</text>' % (left - 8, y + 15, escape(r["name"])))
        x = float(left)
        for name, colour in colours:
            w = width * r[name] / top
            if w > 0:
                out.append('<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"><title>%s: %d %s</title></rect>'
                           % (x, y, w, bar_h, colour, escape(r["name"]), r[name], name))
            x += w
        label = "%d case%s" % (r["cases"], "" if r["cases"] == 1 else "s")
        if r["median_hours"] is not None:
            label += ", median %.1f h to removal" % r["median_hours"]
        out.append('<text x="%.1f" y="%d">%s</text>' % (x + 6, y + 15, label))
    out.append("</svg>")
    return "".join(out)


def create_app(hub, secret_key: bytes, secure_cookies: bool = True, guard: LoginGuard = None):
    """The review WSGI app for ``hub`` (a tools.hotline.hub.HotlineHub)."""
    from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
    from flask import Flask, abort, flash, redirect, render_template, request, session, url_for
    from flask_wtf.csrf import CSRFError, CSRFProtect
    from markupsafe import Markup

    app = Flask("gatewatch-review", template_folder=os.path.join(os.path.dirname(__file__), "templates"))
    app.config.update(SECRET_KEY=secret_key, SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
                      SESSION_COOKIE_SECURE=secure_cookies, SESSION_COOKIE_NAME="gatewatch_review",
                      PERMANENT_SESSION_LIFETIME=timedelta(hours=8), MAX_CONTENT_LENGTH=16384,
                      WTF_CSRF_TIME_LIMIT=8 * 3600, WTF_CSRF_SSL_STRICT=secure_cookies)
    CSRFProtect(app)
    ph = hasher()
    dummy = ph.hash(secrets.token_hex(16))  # unknown accounts cost the same time as known ones
    guard = guard or LoginGuard()
    app.extensions["gatewatch_login_guard"] = guard

    def page(template, status=200, **kw):
        return render_template(template, me=hub.me, user=session.get("user"), **kw), status

    @app.after_request
    def headers(resp):
        resp.headers["Content-Security-Policy"] = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; "
                                                   "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.errorhandler(CSRFError)
    def csrf_error(e):
        log.warning("refused a form without a valid CSRF token: %s", e.description)
        return page("login.html" if not session.get("user") else "base.html", 400,
                    title="Refused", error="Refused: %s Reload the page and try again; nothing was changed."
                    % e.description)

    def need_login():
        if not session.get("user"):
            return redirect(url_for("login"))
        return None

    @app.get("/login")
    def login():
        return page("login.html", title="Log in", error=None)

    @app.post("/login")
    def login_post():
        name = request.form.get("name", "")[:MAX_NAME + 1]
        password = request.form.get("password", "")
        if len(name) > MAX_NAME or len(password) > MAX_PASSWORD:
            return page("login.html", 400, title="Log in", error="Account or password too long.")
        if guard.locked(name):
            log.warning("log-in refused: account locked after repeated failures")
            return page("login.html", 429, title="Log in",
                        error="Too many failed log-ins for this account: wait a minute and try again.")
        stored = hub.store.account_hash(name) if name else None
        ok = False
        try:
            ok = ph.verify(stored or dummy, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        if not ok:
            guard.failed(name)
            log.warning("log-in failed (wrong account or password)")
            return page("login.html", 401, title="Log in", error="Wrong account or password.")
        guard.succeeded(name)
        session.clear()
        session.permanent = True
        session["user"] = name
        if ph.check_needs_rehash(stored):
            hub.store.set_account(name, ph.hash(password))
        return redirect(url_for("queue"))

    @app.post("/logout")
    def logout():
        session.clear()
        return redirect(url_for("login"))

    def actions(case):
        if case["status"] in ("removed", "rejected"):
            return []
        out = []
        if hub.may_decide(case, "confirm") and case["status"] == "new":
            out.append(("confirm", ACTION_LABELS["confirm"]))
        if hub.may_decide(case, "removed") and case["status"] == "takedown_requested":
            out.append(("removed", ACTION_LABELS["removed"]))
        if hub.may_decide(case, "reject"):
            out.append(("reject", ACTION_LABELS["reject"]))
        return out

    @app.get("/")
    def queue():
        r = need_login()
        if r:
            return r
        open_cases = hub.store.cases(status=("new", "takedown_requested"), limit=500)
        mine = [c for c in open_cases if c["responsible"] in (hub.me, None)]
        others = [c for c in hub.store.cases(limit=500) if c["responsible"] not in (hub.me, None)]
        return page("queue.html", title="Queue", mine=mine, others=others, actions=actions,
                    outbox=hub.store.outbox()[:50])

    @app.post("/cases/<case_id>/<action>")
    def act(case_id, action):
        r = need_login()
        if r:
            return r
        if action not in ACTION_LABELS or len(case_id) != 32 or any(c not in "0123456789abcdef" for c in case_id):
            abort(404)
        try:
            hub.decide(case_id, action, session["user"])
            flash("Case %s: %s." % (case_id[:12], ACTION_LABELS[action].lower()))
        except ConfigError as e:
            flash("Not done: %s" % e)
        return redirect(url_for("queue"))

    @app.get("/summary")
    def summary_page():
        r = need_login()
        if r:
            return r
        figures = summary(hub.store.cases(limit=100000))
        return page("summary.html", title="Summary", figures=figures, chart=Markup(chart_svg(figures["country"])))

    return app
