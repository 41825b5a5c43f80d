"""`occ-ros nuscenes-to-bag`: one nuScenes scene (+ optional Occ3D ground truth) → a rosbag2 bag.

    occ-ros nuscenes-to-bag --dataroot DIR --version v1.0-mini --scene scene-0061 --out BAG
                            [--occ-gts DIR] [--storage mcap|sqlite3] [--keyframes-only]
                            [--reader auto|devkit|json] [--skip-missing-gt]

Reading the dataset
-------------------
Two interchangeable readers feed one extraction (`load_scene`):
- `DevkitTables`: the official `nuscenes-devkit` (`nuscenes.nuscenes.NuScenes`), used when it is
  importable (`--reader auto`, the default). The devkit needs all 13 v1.0 tables (category,
  attribute, visibility, instance, sensor, calibrated_sensor, ego_pose, log, scene, sample,
  sample_data, sample_annotation, map).
- `JsonTables`: a small reader of the v1.0 JSON tables this converter needs (scene, sample,
  sample_data, calibrated_sensor, ego_pose, sensor, log), with named errors for missing,
  unparsable or inconsistent tables. No dependency beyond the standard library.
Both give the same records (the devkit only adds shortcut fields), so both give the same bag.

Conventions (all checked by `test/test_nuscenes.py`)
---------------------------------------------------
- Stamps: nuScenes timestamps are microseconds since the epoch; bag and header stamps are
  ``µs · 1000`` nanoseconds. Every message's header stamp equals its bag timestamp.
- Images: every camera `sample_data` of the scene, keyframes (2 Hz) **and sweeps** (≈ 12 Hz)
  by default — the cameras as recorded; `keyframes_only=True` (`--keyframes-only`) keeps the
  2 Hz keyframes. The six nuScenes cameras are not triggered together (each fires as the
  lidar sweeps past it): each image keeps its own timestamp, so the six stamps of one "frame"
  differ by up to ≈ 50 ms. `/<CAM>/image_raw/compressed`, sensor_msgs/CompressedImage with the
  JPEG file bytes copied unchanged, format ``'jpeg'``, frame ``<cam>_optical_frame``.
- `/<CAM>/camera_info` with every image (same stamp): K = calibrated_sensor.camera_intrinsic,
  plumb_bob with zero distortion (nuScenes images are undistorted), P = [K | 0], size from the
  sample_data record (checked against the JPEG header; the header is used when the record has
  no size).
- `/tf_static` (once, at the first stamp, latched QoS): ``base_link → <cam>_optical_frame`` from
  calibrated_sensor (translation, rotation quaternion **w, x, y, z**). The nuScenes camera
  sensor frame *is* an optical frame (x right, y down, z forward), so no axis swap is applied.
  Plus ``map → odom``: the scene's first ego pose in the nuScenes global (map) frame.
- Odometry: nuScenes `ego_pose` is the pose of the ego (base_link: rear axle on the ground,
  x forward, y left, z up) in the global frame, T_global_ego. ``odom`` is the ego frame at the
  scene's first published pose, so T_odom_base(t) = T_global_ego(t0)⁻¹ · T_global_ego(t)
  (REP-105: odom starts at the origin and is continuous; the global pose is recovered through
  ``map → odom``). One `/odom` (nav_msgs/Odometry, odom → base_link, twist in base_link from
  central differences) and one `/tf` per distinct ego pose timestamp of the written images and
  of the LIDAR_TOP keyframes, in time order (each camera image has its own ego pose at its own
  timestamp, so a consumer can look up the exact pose of every image).
- Ground truth (`occ_gts`): Occ3D ``<occ_gts>/<scene>/<sample_token>/labels.npz`` (or
  ``<occ_gts>/<sample_token>/labels.npz``), read with `occ_ros.core.occ3d.load_ground_truth`.
  One occ_ros/msg/PanopticOccupancy per keyframe sample on `/ground_truth/panoptic`, frame
  base_link, stamped at the sample's LIDAR_TOP timestamp (Occ3D GT is in the ego frame of the
  lidar keyframe), `visible` = mask_camera. The optional `instances` array (Occ3D-panoptic,
  SparseOcc layout) becomes `instances` with ids kept only on thing-class voxels (the message
  says 0 = stuff/free); the instance table gives per id the majority thing class, the mean voxel
  centre (ego metres) and the voxel count. Without `instances` the grid is all zero.
- Beside the messages, inside the bag directory (rosbag2 ignores unlisted files): `rig.yaml`
  (`occ_ros.geometry.save_rig`, cameras in nuScenes network order) and `nuscenes.json` (scene,
  log, the odom origin, and per keyframe sample its token, lidar stamp and camera stamps — what
  an evaluation needs to pair outputs with ground truth).

Topic names, frame names, message construction, QoS and the rosbags typestore with the
project's messages come from `occ_ros.bag.writer` (the synthetic-bag writer), so both kinds of
bag look the same to the node and to `occ-ros eval`.

Modules: `tables` (readers), `scene` (one scene in memory), `convert` (scene → bag); the
command line is `occ_ros.apps.nuscenes_to_bag`.
"""
from occ_ros.bag.nuscenes.convert import SCENE_FILE, NuScenesBagSummary, convert_scene
from occ_ros.bag.nuscenes.scene import (
           SceneData,
           ego_twists,
           load_occ3d_gt,
           load_scene,
           odometry_track,
)
from occ_ros.bag.nuscenes.tables import (
           NuScenesError,
           Tables,
           devkit_available,
           open_tables,
)

__all__ = ['SCENE_FILE', 'NuScenesBagSummary', 'convert_scene', 'SceneData', 'ego_twists', 'load_occ3d_gt',
           'load_scene', 'odometry_track', 'NuScenesError', 'Tables', 'devkit_available', 'open_tables']
