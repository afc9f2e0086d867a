"""The hotline side of the hub: hosting country, the hotline directory, cases, forwarding between
hubs, the analyst's review pages and the per-hotline export (docs/hotlines.md).

One module per concern: ``signing`` (canonical JSON under Ed25519), ``directory`` (the signed map of
countries to hotlines), ``geo`` (DNS at the hub and the country database), ``store`` (cases, counts,
outbox, accounts over SQLite or PostgreSQL), ``cases`` (a report becomes a case; the case schema),
``peer`` (the HTTPS protocol between hubs and the outbox sender), ``review`` (the web pages),
``allowfeed`` (a rejected case becomes allow-list input and the next signed allow list), ``export`` (CSV/JSON per hotline),
``serve`` (one running hub) and ``cli`` (`gatewatch-hub hotline ...`). Must not touch the device's
code beyond the wire formats the hub already shares (agent.core.report, agent.lists.trust).
"""
