"""Helpers shared by the tests (test-only; never imported by the product)."""
