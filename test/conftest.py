"""Test-wide environment: DDS stays on loopback with a per-run domain, before anything imports rclpy."""
import os
import tempfile

os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')     # child processes: no OpenMP spin-waiting
os.environ.setdefault('ROS_DOMAIN_ID', str(100 - os.getpid() % 50))   # 51..100, one per test run
os.environ.setdefault('ROS_LOG_DIR', tempfile.mkdtemp(prefix='occ_ros_roslog_'))
_profile = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        'config', 'fastdds_shm_large.xml')
if os.path.exists(_profile):
    os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', _profile)
