"""Dispatch: the scheduler that plans jobs, releases their chunks fairly and finishes them."""

from crm_bulk.dispatch.scheduler import SchedulerCounters, run_scheduler

__all__ = ["SchedulerCounters", "run_scheduler"]
