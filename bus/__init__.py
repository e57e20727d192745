"""databus: bus."""
