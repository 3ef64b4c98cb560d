"""Benchmarks: one script per claim, each printing ratios measured side by side in one run."""
