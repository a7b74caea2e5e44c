"""Case sources and their scorers."""
