"""Route handlers, one controller per domain."""
