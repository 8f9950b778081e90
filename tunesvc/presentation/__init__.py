"""What people read: dashboard notes and figures, the static report, the dashboard server."""
