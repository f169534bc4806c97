"""Vendor dialects. Each only translates between its vendor's wire format and the canonical job."""
