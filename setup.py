"""
ament_python package: the runtime ``mesc3d_ros`` plus the PyTorch side ``training/`` as ``mesc3d_training``.

``training/`` is mapped to the import name ``mesc3d_training`` so that no generic top-level ``training`` module
lands in site-packages.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'mesc3d_ros'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=[PACKAGE] + ['mesc3d_training' + name.removeprefix('training')
                          for name in find_packages(include=['training', 'training.*'])],
    package_dir={'mesc3d_training': 'training'},
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', glob('launch/*.launch.py')),
        (f'share/{PACKAGE}/config', glob('config/*.yaml') + glob('config/*.xml') + glob('config/*.rviz')),
        # Per shipped model: the deployable form the node loads (<name>.json + .onnx + .source.json, written by
        # `mesc3d ship`) and the training checkpoint it came from (.safetensors + .yaml), plus the model card.
        (f'share/{PACKAGE}/models', glob('models/*.json') + glob('models/*.onnx') + glob('models/*.safetensors')
         + glob('models/*.yaml') + glob('models/*.md')),
    ],
    install_requires=['setuptools', 'numpy', 'pyyaml'],
    zip_safe=True,
    maintainer='mesc3d_ros maintainers',
    maintainer_email='maintainers@mesc3d-ros.invalid',
    description='MESC-3D single-image 3D reconstruction as a ROS 2 perception package',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'reconstruct_node = mesc3d_ros.reconstruct_node:main',
            'box_cloud_node = mesc3d_ros.box_cloud_node:main',
            'reconstruct_image = mesc3d_ros.reconstruct_image:main',
            'mesc3d = mesc3d_training.cli:main',
        ],
    },
)
