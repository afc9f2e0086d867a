"""Run the agent daemon: lists, updates, confirmation, reports, and the intakes, until SIGTERM.

Owns starting and stopping every part in order and the agent's status. Each part owns its own job
(``agent.config`` the settings, ``agent.updates``, ``agent.confirm.client``, ``agent.policy``,
``agent.action``, ``agent.reports``, the intakes); this module only wires them together.

State folder (``agent.state_dir``)::

    lists/         the last good signed list files (agent.lists.store)
    versions.json  the highest version accepted per list, the last timestamp per source (agent.updates)
    log-heads.json the newest transparency-log head seen per log, fork evidence (agent.lists.translog)
    trust/         *.pub trusted keys, used when ``lists.trust`` is empty
    spool/         reports awaiting the hub's acknowledgement (agent.reports.spool)
    pending/       hits the hub could not confirm, report fields only (agent.reports.pending)
    client_id      this device's MQTT client id (generated once)
    device_secret  the key of the daily-rotating report pseudonym (generated once, 0600)
    status.json    written atomically by the daemon, read by `gatewatch status`
    gatewatch.sock the local check API (default path)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
import time
from typing import Any, Dict, List

from agent import __version__
from agent.atomicfile import write_atomic
from agent.action import Action
from agent.config import parse_listen, policy_settings
from agent.core.errors import ConfigError, GatewatchError

log = logging.getLogger("gatewatch.daemon")


def _read_or_create(path: str, make, mode: int = 0o644) -> str:
    try:
        with open(path, "r", encoding="utf-8") as f:
            value = f.read().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    value = make()
    write_atomic(path, (value + "\n").encode(), mode=mode)
    return value


def _redact(url: str) -> str:
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return "%s://***@%s" % (scheme, rest.rsplit("@", 1)[1])
    return url


class Agent:
    """The running agent. ``start()``, ``stop()``, ``run()`` (until SIGTERM/SIGINT)."""

    def __init__(self, conf: Dict[str, Dict[str, Any]], *, hal_backend=None):
        self.conf = conf
        self.state_dir = conf["agent"]["state_dir"]
        self.hal = hal_backend
        self.client = None
        self.topics = None
        self.updater = None
        self.confirmer = None
        self.reporter = None
        self.spool = None
        self.localapi = None
        self.servers: List[Any] = []
        self.listening: Dict[str, str] = {}
        self._loop = None
        self._loop_thread = None
        self._stop = threading.Event()
        self._status_thread = None
        self.started_at = time.time()
        self.led = None
        self.firewall = None
        self.watchdog = None

    # -- start/stop
    def start(self) -> "Agent":
        """Start every part; on any failure, stop what was started and raise."""
        try:
            return self._start()
        except BaseException:
            try:
                self.stop()
            except Exception:
                log.exception("cleanup after a failed start")
            raise

    def _start(self) -> "Agent":
        from agent.confirm.client import ConfirmCache, Confirmer
        from agent.confirm.tokens import TokenWallet
        from agent.policy import Policy, PolicyInspector
        from agent.matching.scanner import Scanner
        from agent.lists.store import ListStore, load_folder
        from agent.updates.updater import Updater

        c = self.conf
        os.makedirs(self.state_dir, exist_ok=True)
        self._start_hal()
        self.client_id = c["agent"]["client_id"] or _read_or_create(
            os.path.join(self.state_dir, "client_id"), lambda: "gw-" + os.urandom(6).hex())
        self.device_secret = None
        if c["reports"]["pseudonym"]:
            self.device_secret = _read_or_create(os.path.join(self.state_dir, "device_secret"),
                                                 lambda: os.urandom(32).hex(), mode=0o600)
        self.trust = self._trust()
        max_bytes = c["lists"]["max_bytes"]
        self.store = ListStore(os.path.join(self.state_dir, "lists"), self.trust, max_bytes=max_bytes)
        self.store.remove_leftovers()
        lists = dict(self.store.load())
        self.refused = list(self.store.refused)
        if c["lists"]["dir"]:
            # a folder given by the operator: read, never written; the same rule as the state folder
            folder = load_folder(c["lists"]["dir"], self.trust, max_bytes=max_bytes, log_verifier=self.store.log)
            self.refused.extend(folder.refused)
            for ident, lst in folder.lists.items():
                if ident not in lists or lst.version > lists[ident].version:
                    lists[ident] = lst
            if not lists:
                raise ConfigError("no list in %s passed verification:%s" % (
                    c["lists"]["dir"], "".join("\n  %s: %s" % r for r in folder.refused)
                    or " the folder holds no .gwl file"))
        self.scanner = Scanner(list(lists.values()))
        log.info("lists in force: %s", ", ".join("%s v%d" % (k, v.version) for k, v in sorted(lists.items()))
                 or "none (nothing is blocked until a list arrives)")

        if c["broker"]["url"] or c["broker"]["urls"]:
            self._start_mqtt()
            self.updater = Updater(self.client, self.topics, self.store,
                                   fetch_timeout=c["lists"]["fetch_timeout"], on_lists=self._on_lists,
                                   on_status=self.write_status, use_deltas=c["lists"]["use_deltas"],
                                   retry=(max(0.1, c["lists"]["retry_delay"]), 3600.0))
            for ident, lst in lists.items():  # lists from lists.dir count as held
                self.updater.lists.setdefault(ident, lst)
            # the token topic is named by the broker login (the ACL's %u); the shipped broker makes the
            # client id the login, so either names it
            self.confirmer = Confirmer(self.client, self.topics, c["broker"].get("username") or self.client_id,
                                       timeout=c["policy"]["confirm_timeout"],
                                       cache=ConfirmCache(c["confirm"]["cache_max"]),
                                       max_ttl=c["confirm"]["max_ttl"],
                                       wallet=TokenWallet(os.path.join(self.state_dir, "tokens.json")),
                                       lists=lambda: self.scanner.lists).start()
        self._start_reports()
        r = c["reports"]
        self.action = Action(spool=self.spool, reporter=self.reporter, hosting=r["hosting"], region=r["region"],
                             device_secret=self.device_secret, firewall=self.firewall,
                             firewall_seconds=c["policy"]["firewall_seconds"], led=self.led)
        from agent.allow import AllowLists
        # allow lists arrive like every list; the policy reads those in force from the scanner's set
        self.policy = Policy(policy_settings(c), self.confirmer.ask if self.confirmer else None,
                             self.scanner.confirm, self.action.report, pending=self.pending,
                             allow=AllowLists(lambda: self.scanner.lists))
        self.inspector = self.action.wrap(PolicyInspector(lambda: self.scanner, self.policy))
        if c["localapi"]["enabled"]:
            path = c["localapi"]["socket"] or os.path.join(self.state_dir, "gatewatch.sock")
            self.localapi = LocalApiFactory.make(path, self.inspector, c["localapi"]["max_bytes"], self.status)
        self._start_servers()
        if self.updater is not None:
            self.updater.start()
        if self.client is not None:
            self.client.start()
        self._status_thread = threading.Thread(target=self._status_loop, name="gatewatch-status", daemon=True)
        self._status_thread.start()
        self._led_idle()
        log.info("gatewatch agent %s started (client id %s)", __version__, self.client_id)
        return self

    def _start_hal(self) -> None:
        name = self.conf["agent"]["hal"] or None
        if self.hal is None:
            try:
                import hal
                self.hal = hal.get_backend(name)
            except ImportError:
                log.warning("no HAL package; running without LED, firewall or watchdog")
                return
            except GatewatchError as exc:
                if name:
                    raise
                log.warning("no HAL backend: %s", exc)
                return
        for attr, cls in (("led", "StatusLed"), ("firewall", "Firewall")):
            try:
                setattr(self, attr, getattr(self.hal, cls)())
            except Exception as exc:  # a board without an LED still scans
                log.info("HAL %s unavailable: %s", cls, exc)
        wd = self.conf["agent"]["watchdog"]
        if wd:
            self.watchdog = self.hal.Watchdog()
            self.watchdog.start(wd)

    def _led_idle(self) -> None:
        away = None
        if self.client is not None and not self.client.connected:
            away = time.time() - self.started_at
        self.action.idle(lists_in_force=len(self.scanner.lists), broker_away_for=away)

    def _trust(self):
        from agent.lists.trust import TrustStore

        specs = list(self.conf["lists"]["trust"])
        if not specs:
            folder = os.path.join(self.state_dir, "trust")
            if os.path.isdir(folder):
                specs = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".pub"))
        if not specs:
            raise ConfigError("no trusted keys: set lists.trust or put <source>.pub files in %s"
                              % os.path.join(self.state_dir, "trust"))
        return TrustStore.from_specs(specs)

    def _start_mqtt(self) -> None:
        from agent.mqtt import MqttClient, Topics

        b = self.conf["broker"]
        password = b["password"] or None
        if b["password_file"]:
            try:
                with open(b["password_file"], "r", encoding="utf-8") as f:
                    password = f.readline().rstrip("\n")
            except OSError as exc:
                raise ConfigError("cannot read broker.password_file %s: %s" % (b["password_file"], exc.strerror))
        tls = {k: v for k, v in (("ca_certs", b["ca"]), ("certfile", b["cert"]), ("keyfile", b["key"])) if v}
        self.topics = Topics(b["prefix"])
        status_topic = self.topics.status(self.client_id)
        will = (status_topic, json.dumps({"client": self.client_id, "online": False}).encode(), 1, True)
        urls = ([b["url"]] if b["url"] else []) + list(b["urls"])  # the nodes of one broker
        self.client = MqttClient(urls, self.client_id, username=b["username"] or None, password=password,
                                 tls=tls or None, keepalive=b["keepalive"], will=will,
                                 on_connect=lambda _c: self.write_status())

    def _start_reports(self) -> None:
        from agent.reports.spool import ReportSpool

        from agent.reports.pending import PendingHits

        r = self.conf["reports"]
        self.spool = ReportSpool(os.path.join(self.state_dir, "spool"), max_bytes=r["spool_max_bytes"],
                                 max_reports=r["spool_max_reports"], policy=r["spool_policy"])
        # unconfirmed hits, on disk for `gatewatch reports export` (only report fields; agent.reports.pending)
        self.pending = PendingHits(os.path.join(self.state_dir, "pending"), hosting=r["hosting"],
                                   max_records=policy_settings(self.conf).reconfirm_max)
        if self.client is not None:
            from agent.reports.reporter import Reporter
            # kept until the hub's collector acknowledges it on <prefix>/ack/<random token>
            self.reporter = Reporter(self.client, self.spool, self.topics, ack=r["ack"],
                                     resend_after=r["resend_after"], resend_max=r["resend_max"]).start()

    def _start_servers(self) -> None:
        wanted = [(name, self.conf[name]["listen"]) for name in ("icap", "proxy", "dns", "tls") if self.conf[name]["listen"]]
        if not wanted:
            return
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="gatewatch-intakes", daemon=True)
        self._loop_thread.start()
        for name, listen in wanted:
            server = make_server(name, self.inspector, self.conf, istag=self.istag)
            host, port = parse_listen(listen, {"icap": 1344, "proxy": 3128, "dns": 5353, "tls": 3130}[name])
            try:
                asyncio.run_coroutine_threadsafe(server.start(host, port), self._loop).result(10)
            except OSError as exc:
                raise ConfigError("cannot listen on %s:%d for %s: %s (is another program using the port? "
                                  "set %s.listen to a free one)" % (host, port, name, exc.strerror or exc, name))
            self.servers.append((name, server))
            self.listening[name] = "%s:%d" % (host, server.port)
            log.info("%s intake listening on %s:%d", name, host, server.port)

    def stop(self) -> None:
        """Stop in reverse order; reports stay spooled for the next start. Safe to call twice."""
        if getattr(self, "_stopped", False):
            return
        self._stopped = True
        self._stop.set()
        if self.localapi is not None:
            self.localapi.close()
        for _name, server in self.servers:
            try:
                asyncio.run_coroutine_threadsafe(server.close(), self._loop).result(10)
            except Exception as exc:
                log.warning("closing %s: %s", _name, exc)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(5)
        if self.updater is not None:
            self.updater.stop()
        if self.confirmer is not None:
            self.confirmer.stop()
        if self.reporter is not None:
            self.reporter.stop()
        if self._status_thread is not None:
            self._status_thread.join(10)  # so that the final status is the last one written
        if getattr(self, "policy", None) is not None:
            try:
                self.write_status(final=True)
            except Exception:
                log.exception("final status write failed")
        if self.client is not None:
            self.client.stop()
        if self.spool is not None:
            self.spool.close()
        if getattr(self, "pending", None) is not None:
            self.pending.close()
        if self.watchdog is not None:
            try:
                self.watchdog.stop()
            except Exception:
                pass
        log.info("gatewatch agent stopped")

    def catch_signals(self) -> None:
        """SIGTERM and SIGINT from now on ask for a clean stop (also while ``start()`` is running)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())

    def run(self) -> int:
        """Run until SIGTERM or SIGINT; exit 0 after a clean shutdown."""
        self.catch_signals()
        try:
            while not self._stop.wait(1.0):
                pass
        finally:
            self.stop()
        return 0

    def istag(self) -> str:
        """ICAP ISTag: changes whenever the lists in force change, so caches revalidate."""
        return self.scanner.fingerprint()

    # -- events
    def _on_lists(self, lists) -> None:
        self.action.show("updating")
        self.scanner.swap(list(lists.values()))  # one step: scans see the old or the new tuple
        if self.confirmer is not None:
            self.confirmer.lists_changed()
        log.info("lists in force: %s", ", ".join("%s v%d" % (k, v.version) for k, v in sorted(lists.items()))
                 or "none (nothing is blocked until a list arrives)")
        self._led_idle()

    # -- status
    def status(self) -> dict:
        """Everything `gatewatch status` shows; nothing about subscribers."""
        now = time.time()
        lists = self.updater.snapshot() if self.updater is not None else {}
        for lst in self.scanner.lists:
            d = lists.setdefault(lst.ident, {"version": lst.version, "via": "folder"})
            d.setdefault("created", lst.manifest["created"])
            d.setdefault("expires", lst.manifest["expires"])
            d.setdefault("signal", lst.signal)
            d.setdefault("entries", lst.entries)
            d["version"] = lst.version
        out = {
            "agent": __version__, "pid": os.getpid(), "client_id": self.client_id,
            "written_at": now, "uptime_s": int(now - self.started_at),
            "broker": {"url": _redact(self.client.url if self.client is not None else self.conf["broker"]["url"]) or None,
                       "connected": bool(self.client is not None and self.client.connected),
                       "connects": self.client.connects if self.client is not None else 0},
            "lists": lists,
            "lists_refused": [{"file": r.file, "reason": r.reason} for r in self.refused],
            "list_faults": dict(self.scanner.faults),
            "log": self.store.log.status(),  # transparency logs: head held, fork evidence, last refusal
            "policy": dict(self.policy.counters.as_dict(), mode=self.policy.settings.mode),
            "reports": dict(self.reporter.stats() if self.reporter is not None else
                            {"spool_depth": self.spool.stats()["depth"], "spool_dropped": self.spool.stats()["dropped"]},
                            pending=len(self.pending) if getattr(self, "pending", None) is not None else 0),
            "confirm": self.confirmer.stats() if self.confirmer is not None else None,
            "intakes": dict(self.listening, localapi=self.localapi.path if self.localapi is not None else None),
            "hal": getattr(self.hal, "name", None),
            "led": getattr(self.led, "state", None),
        }
        return out

    def write_status(self, final: bool = False) -> None:
        """Write status.json atomically and publish the retained status topic."""
        st = self.status()
        if final:
            st["stopped"] = True
            st["broker"]["connected"] = False  # about to disconnect
        write_atomic(os.path.join(self.state_dir, "status.json"), json.dumps(st, indent=1, sort_keys=True).encode())
        if self.client is not None and self.client.connected:
            public = {"client": self.client_id, "online": not final, "agent": __version__,
                      "lists": {k: {"version": v.get("version"), "last_refusal": v.get("last_refusal"),
                                    "stale": v.get("stale"), "expired": v.get("expired"), "behind": v.get("behind")}
                                for k, v in st["lists"].items()},
                      "spool_depth": st["reports"]["spool_depth"],
                      "log_fork": any(v.get("fork") for v in st["log"].values()),
                      # counts only (never which list, entry or image): lets an operator see an allow
                      # list or the two-countries rule at work across the fleet
                      "allowed": st["policy"]["allowed"], "uncorroborated": st["policy"]["uncorroborated"]}
            self.client.publish(self.topics.status(self.client_id), json.dumps(public, sort_keys=True).encode(),
                                qos=1, retain=True)

    def _status_loop(self) -> None:
        interval = max(0.5, self.conf["agent"]["status_interval"])
        while not self._stop.wait(interval):
            try:
                if self.client is not None and self.client.connected and self.policy.counters.pending:
                    n = self.policy.reconfirm()
                    if n:
                        log.info("%d hit(s) confirmed by the hub after it was unreachable; reported", n)
                # freshness (agent.updates): expired lists leave the scanner as at a restart; a source
                # without fresh signed word for lists.stale_hours is stale; either shows a fault
                if self.updater is not None:
                    fresh = self.updater.check_freshness(stale_after=self.conf["lists"]["stale_hours"] * 3600)
                    self.action.idle(lists_in_force=len(self.scanner.lists),
                                     lists_stale=fresh["fault"] or self.store.log.fault(),
                                     broker_away_for=None if self.client.connected else time.time() - self.started_at)
                else:  # lists.dir only: the same expiry rule, refusals listed as at a start
                    from agent.updates.freshness import expire_lists
                    kept, gone = expire_lists({l.ident: l for l in self.scanner.lists}, time.time())
                    if gone:
                        self.refused.extend(gone)
                        self._on_lists(kept)
                        self.action.idle(lists_in_force=len(kept), broker_away_for=None, lists_stale=True)
                    elif self.store.log.fault():  # a forked log: the last good lists stay, the LED says so
                        self.action.idle(lists_in_force=len(self.scanner.lists), broker_away_for=None, lists_stale=True)
                self._led_idle()
                self.write_status()
                if self.watchdog is not None:
                    self.watchdog.kick()
            except Exception:
                log.exception("status write failed")


class LocalApiFactory:
    """Builds the local API (kept apart so that tests can run the agent without one)."""

    @staticmethod
    def make(path, inspector, max_bytes, status):
        from agent.intake.localapi import LocalApi
        return LocalApi(path, inspector, max_bytes=max_bytes, status=status).start()


def make_server(kind: str, inspector, conf: Dict[str, Dict[str, Any]], istag=None):
    """The ICAP, proxy, DNS or TLS server object for an intake, configured from ``conf``."""
    if kind in ("dns", "tls"):
        return _make_name_server(kind, inspector, conf[kind])
    if kind == "icap":
        from agent.intake.icap.protocol import IcapLimits
        from agent.intake.icap.server import IcapServer
        return IcapServer(inspector, istag=istag, limits=IcapLimits(early_head=conf["icap"]["early_head"]))
    from agent.intake.proxy.server import ProxyLimits, ProxyServer
    p = conf["proxy"]
    clients = None if [c.strip().lower() for c in p["clients"]] == ["any"] else p["clients"]
    return ProxyServer(inspector, mode=p["mode"], clients=clients,
                       allow_loopback_upstream=p["allow_loopback_upstream"],
                       undecodable_images=p["undecodable_images"],
                       limits=ProxyLimits(max_connections_per_client=p["max_connections_per_client"],
                                          max_scan_bytes=p["max_scan_bytes"], max_held_bytes=p["max_held_bytes"]))


def _make_name_server(kind: str, inspector, c: Dict[str, Any]):
    """The DNS forwarder or the TLS splice (url/domain lists), configured from its section."""
    if kind == "dns":
        from agent.intake.dns.message import BlockAnswer
        from agent.intake.dns.server import DnsServer, Upstreams
        try:
            block = BlockAnswer(c["block_address"], c["block_ttl"])
        except ValueError as exc:
            raise ConfigError("dns.block_address/block_ttl: %s" % exc)
        return DnsServer(inspector, upstreams=Upstreams(c["upstream"], c["resolv_file"]), block=block)
    from agent.intake.tls.server import TlsSpliceServer
    clients = None if [x.strip().lower() for x in c["clients"]] == ["any"] else c["clients"]
    return TlsSpliceServer(inspector, clients=clients, allow_loopback_upstream=c["allow_loopback_upstream"])
