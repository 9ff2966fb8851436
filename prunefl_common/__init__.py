"""What the device (prunefl_edge) and the server (coordinator) share; it imports neither."""
