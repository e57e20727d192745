"""databus: sinks."""
