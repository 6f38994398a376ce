"""What operators see of the service: Prometheus metrics, log lines, optional traces."""
