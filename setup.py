"""ament_python package `invdyn` (module `invdyn_ros`)."""

from glob import glob
import os

from setuptools import find_packages, setup

PACKAGE = 'invdyn'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    package_data={'invdyn_ros.core': ['models_data/*.urdf']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        (os.path.join('share', PACKAGE, 'launch'), glob('launch/*.launch.py')),
        (os.path.join('share', PACKAGE, 'config'), glob('config/*.yaml')),
        (os.path.join('share', PACKAGE, 'models'), glob('models/*.npz') + glob('models/*.md')),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='invdyn maintainers',
    maintainer_email='invdyn@example.org',
    description='Online-learned LSTM inverse dynamics feedforward for torque-controlled arms.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'invdyn = invdyn_ros.cli:main',
            'predictor = invdyn_ros.nodes.predictor:main',
            'trainer = invdyn_ros.nodes.trainer:main',
            'gp_baseline = invdyn_ros.nodes.gp_baseline:main',
            'lwr_sim = invdyn_ros.nodes.lwr_sim:main',
        ],
    },
)
