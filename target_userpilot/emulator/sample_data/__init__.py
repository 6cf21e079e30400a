"""Sample Singer messages for the demo."""
