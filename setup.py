"""occ_ros: panoptic 3D occupancy from six surround cameras (Panoptic-FlashOcc) for ROS 2."""
from glob import glob

from setuptools import find_packages, setup

package_name = 'occ_ros'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(include=['occ_ros', 'occ_ros.*']),
    package_data={'occ_ros': ['py.typed'], 'occ_ros.weights': ['*.ckpt', '*.json']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*')),
        ('share/' + package_name + '/msg', glob('msg/*.msg')),
    ],
    python_requires='>=3.10',
    install_requires=['numpy', 'pillow', 'pyyaml'],
    zip_safe=False,
    maintainer='occ_ros developers',
    maintainer_email='occ-ros@example.org',
    description='Real-time panoptic 3D occupancy from six surround cameras (Panoptic-FlashOcc).',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'occ-ros = occ_ros.apps.cli:console_main',
            'occupancy_node = occ_ros.ros.entry:occupancy_node',
            'occupancy_lifecycle_node = occ_ros.ros.entry:occupancy_lifecycle_node',
        ],
    },
)
