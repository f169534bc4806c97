"""Kandinsky 2.2 and 2.1 on diffusers. Knows nothing of HTTP or queues."""
