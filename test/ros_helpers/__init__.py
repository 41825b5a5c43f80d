"""Helper processes and process management for the ROS integration tests (not collected by pytest)."""
