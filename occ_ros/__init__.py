"""occ_ros: real-time panoptic 3D occupancy from six surround cameras.

The generated ROS interfaces (`occ_ros.msg`) may be installed in a different directory than
these sources (a venv build, or an editable install beside a colcon overlay); extending the
package path lets both halves of the package be imported as one.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = '0.1.0'
