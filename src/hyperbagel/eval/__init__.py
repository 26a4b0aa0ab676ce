"""Benchmark runners, speed measurement, paired statistics and reports."""
