"""Panoptic-FlashOcc in plain PyTorch: named builders, the composed network, checkpoints.

    model = build_model('pano-tiny')                     # or 'lite', 'm0', … (MODEL_NAMES)
    load_official_checkpoint(model, 'flashocc-r50-depth-tiny-pano.pth')
    out = model.eval()(img, cam_vec, *pool_index.tensors())

The BEV-pool index tensors come from `occ_ros.model.bev_pool` (built from calibration).
"""
from occ_ros.model.builders import MODEL_NAMES, build_from_config, build_model, model_config
from occ_ros.model.checkpoint import (
    FORMAT, FORMAT_VERSION, config_from_dict, config_to_dict, load_checkpoint,
    load_official_checkpoint, load_weights, save_checkpoint)
from occ_ros.model.flashocc import FlashOcc

__all__ = [
    'MODEL_NAMES', 'build_model', 'build_from_config', 'model_config', 'FlashOcc',
    'load_official_checkpoint', 'load_checkpoint', 'load_weights', 'save_checkpoint',
    'config_to_dict', 'config_from_dict', 'FORMAT', 'FORMAT_VERSION',
]
