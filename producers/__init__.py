"""databus: producers."""
