"""Singer target for Userpilot."""
