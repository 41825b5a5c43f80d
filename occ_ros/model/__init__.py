"""Panoptic-FlashOcc in plain PyTorch: named builders, the composed network, checkpoints.

    model = build_model('pano-tiny')                     # or 'lite', 'm0', … (MODEL_NAMES)
    load_official_checkpoint(model, 'flashocc-r50-depth-tiny-pano.pth')
    out = model.eval()(img, cam_vec, *pool_index.tensors())

The BEV-pool index tensors come from `occ_ros.model.bev_pool` (built from calibration).
The named configurations (`model_config`, `MODEL_NAMES`) import without torch; the network,
builders and checkpoint functions load it on first use (module `__getattr__`), so that the
metrics, the replay and the bag tools can read a model's grid without importing the network.
"""
from typing import TYPE_CHECKING

from occ_ros.core.lazy import lazy_attributes
from occ_ros.model.configs import MODEL_NAMES, model_config

if TYPE_CHECKING:
    from occ_ros.model.builders import build_from_config, build_model
    from occ_ros.model.checkpoint import (
        FORMAT, FORMAT_VERSION, config_from_dict, config_to_dict, load_checkpoint,
        load_official_checkpoint, load_weights, save_checkpoint)
    from occ_ros.model.flashocc import FlashOcc

__getattr__ = lazy_attributes(globals(), {
    'occ_ros.model.builders': ('build_from_config', 'build_model'),
    'occ_ros.model.flashocc': ('FlashOcc',),
    'occ_ros.model.checkpoint': ('FORMAT', 'FORMAT_VERSION', 'config_from_dict', 'config_to_dict', 'load_checkpoint',
                                 'load_official_checkpoint', 'load_weights', 'save_checkpoint'),
})

__all__ = [
    'MODEL_NAMES', 'build_model', 'build_from_config', 'model_config', 'FlashOcc',
    'load_official_checkpoint', 'load_checkpoint', 'load_weights', 'save_checkpoint',
    'config_to_dict', 'config_from_dict', 'FORMAT', 'FORMAT_VERSION',
]
