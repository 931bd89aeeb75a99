"""Monitoring: metrics collection, anomaly detection, alerting, notifications, incidents."""
