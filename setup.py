"""ament_python package `invdyn` (module `invdyn_ros`)."""

from glob import glob
import os

from setuptools import Extension, find_packages, setup

PACKAGE = 'invdyn'

# The predictor's per-sample kernel (invdyn_ros/core/_fastpath.pyx), compiled with Cython. It
# is optional: without Cython or a C compiler the package installs and the predictor runs its
# numpy path (invdyn_ros.core.compiled.AVAILABLE says which). No fast-math: the acceleration
# filter must keep the numpy path's order of operations; -fopenmp-simd only honours the
# kernel's `#pragma omp simd` on the gate sums (no OpenMP runtime).
KERNEL_FLAGS = ['-O3', '-fno-math-errno', '-fopenmp-simd']


def extensions() -> list:
    try:
        from Cython.Build import cythonize
    except ImportError:
        print('invdyn: Cython not found, the compiled predictor kernel is not built '
              '(the predictor runs its numpy path)')
        return []
    ext = Extension('invdyn_ros.core._fastpath', ['invdyn_ros/core/_fastpath.pyx'],
                    extra_compile_args=KERNEL_FLAGS, optional=True)
    return cythonize([ext], language_level=3, quiet=True)


setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    ext_modules=extensions(),
    package_data={'invdyn_ros.core': ['models_data/*.urdf']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        (os.path.join('share', PACKAGE, 'launch'), glob('launch/*.launch.py')),
        (os.path.join('share', PACKAGE, 'config'), glob('config/*.yaml')),
        (os.path.join('share', PACKAGE, 'models'), glob('models/*.npz') + glob('models/*.md')),
    ],
    install_requires=['setuptools'],
    zip_safe=False,
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
