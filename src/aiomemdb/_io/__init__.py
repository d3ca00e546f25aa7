"""The I/O parts around the kernel, each owning its task: flusher, loader, journal (and its fsync), sweeper."""
