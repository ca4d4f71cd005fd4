"""``bts-density``: Behind the Scenes (CVPR 2023) as a nerfstudio method. See docs/bts-density.md.

encoder.py (ResNet from methods/common/backbone.py + Monodepth2 decoder) -> density_field.py (features + PE -> MLP ->
softplus) -> model.py (rendering, composed from bts_studio.core) -> losses.py; batch.py (BTSBatch, [groups, patches,
p, p]); datamanager.py + augmentation.py (frame groups, patches, colour jitter; images from
methods/common/image_store.py); pipeline.py (training and per-group evaluation); sources.py + conditioning.py (what a
render is conditioned on); inference.py (the API for occupancy and BEV code); import_official.py; method_config.py.
"""
