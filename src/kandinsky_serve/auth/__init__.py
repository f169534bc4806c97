"""API keys, what a job costs, and how often a key may call."""
