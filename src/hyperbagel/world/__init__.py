"""Shapes World: scenes, renderer, detector (the judge), task generators, benchmark suites and scoring."""
