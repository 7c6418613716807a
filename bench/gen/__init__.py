"""Generated protobuf stubs for the benchmark (regenerate with `make bench-proto`)."""
