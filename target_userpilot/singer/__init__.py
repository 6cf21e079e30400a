"""The Singer side: everything that touches the SDK (sinks, the reader, the fast path)."""
