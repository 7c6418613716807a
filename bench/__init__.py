"""CPS benchmark harness: `python -m bench.run`."""
