"""Benchmarks: side-by-side measurements that print ratios (not tests; see RESULTS.md)."""
