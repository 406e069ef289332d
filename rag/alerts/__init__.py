"""Alerts: saved searches that notify when a newly indexed post matches them.

* ``model`` — the alert and its rules (``semantic``, ``words``), checked when saved;
* ``words`` — the words rule (lemma-aware, like the sparse index);
* ``matcher`` — does a committed post match an alert (the dispatcher's check and ``alerts test``);
* ``outbox`` — the posts each ingest batch commits, recorded with the commit;
* ``store`` — the alerts and their matches in Redis (each (alert, post) recorded once);
* ``delivery`` — the ``Notifier`` interface and the delivery queues (retries, dead letters);
* ``webhook`` — signed JSON POSTs;
* ``dispatcher`` — outbox → matches → deliveries, on a thread or one pass at a time;
* ``claims`` — one process per queue entry at a time.
"""
