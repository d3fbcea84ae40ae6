"""`python -m crm_bulk.cli`: the same as the `crm-bulk` command."""

from crm_bulk.cli import main

main()
