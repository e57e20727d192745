"""databus: schemas."""
