"""Secrets the tests use: distinctive, so a test can search every output for them."""

#: The key the keyed emulator wants.
API_KEY = "sk-pizzagpt-test-7f3a9c1e5d2b8a6f"
