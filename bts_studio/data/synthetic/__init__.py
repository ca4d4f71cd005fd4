"""Synthetic data generators (every one lives here): a procedural street in the exact KITTI-360 on-disk format
(``kitti360_*``) and procedural ShapeNet-like object classes in the SRN and DVR formats (``shapenet_*``). They write
through the format writers in ``bts_studio/data/<family>/``."""
