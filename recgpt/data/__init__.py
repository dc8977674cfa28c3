"""Data preparation: sources, cleaning, splits, rendering and corpus outputs."""
