"""The `crm-bulk` client commands: the REST API from a terminal (login, imports, bulk actions, jobs)."""
