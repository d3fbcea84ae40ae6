"""The Kafka queue's former single-module path, still imported for topic clean-up by some integration
tests; the code lives in `crm_bulk.queue.kafka`, split by role."""

from __future__ import annotations

from crm_bulk.queue.kafka.admin import delete_topics

__all__ = ["delete_topics"]
