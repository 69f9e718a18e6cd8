"""Serving benchmark against a running server: `python benchmarks/bench_serving.py --help`."""

from kvserve.bench.serve import main

main()
