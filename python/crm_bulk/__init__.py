"""crm-bulk: bulk actions over CRM contacts, applied to PostgreSQL in chunks and logged to ClickHouse."""

__version__ = "0.1.0"
__all__ = ["__version__"]
