"""Alerting: notifiers drain the registry's outbox to Slack, PagerDuty and the log.

base      the Notifier interface, the Alert record built from an outbox row, delivery errors
policy    which channels a verdict goes to, and with which severity (the [alerts] config)
deliver   deliver_due: one pass over the due outbox rows, with backoff and the notification log
slack, pagerduty, log   the notifiers; only the CLI builds them
"""
