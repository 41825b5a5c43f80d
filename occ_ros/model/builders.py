"""The one function that turns a ModelConfig into a FlashOcc (`build_from_config`), and
`build_model(name)`; the named configurations themselves live in `occ_ros.model.configs`.

`MODEL_NAMES` and `model_config` are re-exported from `configs` for the callers of this module.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from occ_ros.core.config import ModelConfig
from occ_ros.model.configs import MODEL_NAMES, model_config  # noqa: F401  (re-exported)
from occ_ros.model.bev_encoder import CustomResNet
from occ_ros.model.depthnet import DepthNet
from occ_ros.model.flashocc import FlashOcc
from occ_ros.model.heads import CenternessHead, OccHead
from occ_ros.model.necks import CustomFPN, FPNLSS
from occ_ros.model.resnet import ResNet
from occ_ros.model.view_transform import BEVDepthViewTransformer, LSSViewTransformer

BEV_STAGE_STRIDES = (2, 2, 2)          # CustomResNet default
FPN_LSS_INPUTS = (0, 2)                # FPN_LSS input_feature_index


def build_from_config(cfg: ModelConfig) -> FlashOcc:
    """Instantiate the network a ModelConfig describes (random init, train mode)."""
    backbone = ResNet(cfg.backbone_depth, cfg.backbone_out_indices)
    neck = CustomFPN(backbone.out_channels, cfg.neck_out_channels)
    d, c = cfg.depth.n, cfg.context_channels
    view: LSSViewTransformer
    if cfg.depthnet == 'bevdepth':
        mid = cfg.depthnet_mid_channels or cfg.neck_out_channels
        view = BEVDepthViewTransformer(
            DepthNet(cfg.neck_out_channels, mid, c, d, cfg.aspp_mid_channels), cfg)
    else:
        view = LSSViewTransformer(nn.Conv2d(cfg.neck_out_channels, d + c, 1), cfg)
    pre = CustomResNet(c, [c], [1], [1], out_ids=[0]) if cfg.num_frames > 1 else None
    bev_backbone = CustomResNet(cfg.bev_in_channels, cfg.bev_channels, cfg.bev_blocks,
                                BEV_STAGE_STRIDES)
    lo, hi = FPN_LSS_INPUTS
    scale = 1
    for s in BEV_STAGE_STRIDES[lo + 1:hi + 1]:
        scale *= s
    bev_neck = FPNLSS(cfg.bev_channels[lo] + cfg.bev_channels[hi], cfg.bev_neck_channels,
                      scale_factor=scale, extra_upsample=BEV_STAGE_STRIDES[0],
                      input_ids=FPN_LSS_INPUTS)
    occ = OccHead(cfg.bev_neck_channels, cfg.occ_head_channels, cfg.grid.nz, cfg.num_classes,
                  variant=cfg.occ_head)
    centerness = None
    if cfg.centerness:
        centerness = CenternessHead(cfg.bev_neck_channels, cfg.centerness_share_channels,
                                    cfg.num_det_classes, all_heads=cfg.centerness_all_heads)
    return FlashOcc(cfg, backbone, neck, view, bev_backbone, bev_neck, occ, centerness, pre)


def build_model(name: str, **overrides: Any) -> FlashOcc:
    """Build a named model (random init). `overrides` replace ModelConfig fields."""
    return build_from_config(model_config(name, **overrides))
