"""Measuring: timed runs, the side-by-side comparison, agreement between placements, `verify`
and the comparison plot."""
