"""Workers: the supervised pool of processes that consume chunk messages and apply them."""

from crm_bulk.worker.pool import run_worker_pool

__all__ = ["run_worker_pool"]
