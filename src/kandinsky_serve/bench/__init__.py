"""Benchmarks: `kandinsky-serve bench engine` (ours against plain diffusers, same run)."""
