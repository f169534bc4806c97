"""Outbound HTTP to addresses callers choose (input image URLs, webhooks): which addresses may be
reached (`addresses`), and requests pinned to the address that was checked (`pinned`)."""
