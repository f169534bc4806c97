"""kandinsky-serve: self-hosted Kandinsky 2.x image generation."""

__version__ = "0.1.0"
