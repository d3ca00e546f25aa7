"""Where a store keeps its data between runs: the protocol and the built-in implementations."""
