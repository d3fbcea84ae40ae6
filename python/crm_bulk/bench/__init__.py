"""The throughput benchmark suite behind `crm-bulk bench`: data, baselines, scenarios, report."""
