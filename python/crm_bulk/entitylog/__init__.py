"""The entity log: every entity's final outcome and every job event, from the Postgres outbox to ClickHouse.

`outbox` and `events` write the outboxes in the chunk's transaction; `shipper` moves them to ClickHouse;
`store` reads them back for the API (`views`) over an engine (`engine`): a clickhouse-connect client in
this process (`clickhouse`) or the store host that owns chDB beside the API process (`host`). Nothing is
re-exported here, so a worker that writes outboxes never loads the ClickHouse client.
"""
