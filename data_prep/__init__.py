"""Data preparation: CW simulator, relabelling, splits and user-data import."""
