"""Layer 3: fault management — alarms, correlation, subscriptions, notifications."""
