"""Completion webhooks: endpoints per account, an outbox written with each job's start and end, signed
(Standard Webhooks) at-least-once delivery with backoff to addresses checked against SSRF, and the
delivery log."""
