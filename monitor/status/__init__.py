"""The built-in status page (docs/status.md): server-rendered HTML for people without Grafana."""
