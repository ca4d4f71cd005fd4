"""Synthetic data generators: a procedural street world written in the exact KITTI-360 on-disk format."""
