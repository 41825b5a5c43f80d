"""The ROS 2 glue of occ_ros: the only package that imports rclpy or ROS message types.

    convert      messages → `CameraFrame` / `EgoPose` / K, and the reverse for publishers
    sync         approximate-time camera-set synchroniser with per-camera health and a dead-camera policy
    sync_match   the approximate-time matchers behind it (internal, or message_filters')
    tf           transform trees, pose buffers and rig-from-TF helpers (pure numpy)
    publish      result → MarkerArray / OccupancyGrid / PanopticOccupancy / timing messages
    diagnostics  node statistics → diagnostic_msgs/DiagnosticArray
    params       every node parameter, declared in one place, validated once
    node         `OccupancyNode` and the `occupancy_node` console script
    calibration  the node's live calibration: CameraInfo intrinsics, TF extrinsics, the pending rig
    decode       the worker's decode step: one camera set → CameraFrames, unusable cameras blanked
    node_stats   the node's counters and rolling timings (~/debug/*_ms, the /diagnostics figures)
    ingest       `ingest_hold`: camera images taken only while the worker is free, the held clock
    collector    the output collector of the replay tool (`occ_ros.apps.replay`)

Nothing is imported here, so `import occ_ros.ros.sync` does not pull in rclpy.
"""
