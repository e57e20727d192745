"""databus: stream_processors."""
