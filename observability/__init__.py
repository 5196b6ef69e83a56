"""What operators see of a running Relay: Prometheus metrics and structured logs."""
