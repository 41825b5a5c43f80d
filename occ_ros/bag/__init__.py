"""Synthetic driving world with ground truth, its renderer, and rosbag2 writing / reading / replay.

- `world`: the seeded scene (roads, ground classes, buildings, vegetation, stuff, moving things,
  ego odometry); `world_traffic`: its moving things and their trajectories. `render`: the
  rasterising camera renderer (RGB, depth, per-pixel class); `compose`: its per-pixel colour
  composition, compiled (numba).
- `groundtruth`: Occ3D semantics / instances / mask_camera per frame. `synth`: sequences of
  rendered frames with ground truth (what the bag writer and the trainer stream).
- `writer` / `reader`: rosbag2 bags with rosbags (no rclpy). `player`: replay through rclpy.
- `cli`: `occ-ros synth`; `player` also provides `occ-ros play`; `nuscenes`: nuScenes → bag.

Submodules are imported explicitly (`from occ_ros.bag.world import World`); this package
imports nothing heavy on its own.
"""
