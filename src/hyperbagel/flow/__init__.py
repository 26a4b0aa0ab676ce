"""Rectified-flow conventions, schedules, guidance and samplers (the model predicts velocity; this owns the rest)."""
