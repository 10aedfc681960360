"""ament_python package `invdyn` (module `invdyn_ros`)."""

from glob import glob
import os

from setuptools import Extension, find_packages, setup

PACKAGE = 'invdyn'

# Two optional C kernels, compiled with Cython. Without Cython or a C compiler the package
# installs and runs its pure Python paths (invdyn_ros.core.compiled.AVAILABLE and
# invdyn_ros.core.fused_lstm.available() say which).
# - _fastpath: the predictor's per-sample kernel. No fast-math: the acceleration filter must
#   keep the numpy path's order of operations; -fopenmp-simd only honours the kernel's
#   `#pragma omp simd` on the gate sums (no OpenMP runtime).
# - _lstm_kernel: the LSTM recurrence of offline training (float32, BLAS from scipy).
#   -fno-trapping-math lets its saturating tanh vectorise (no result changes: the clamps are
#   selects that let NaN through).
KERNEL_FLAGS = ['-O3', '-fno-math-errno', '-fopenmp-simd']
#: The rational tanh both kernels include.
TANH_HEADER = 'invdyn_ros/core/_rational_tanh.h'
KERNELS = {
    'invdyn_ros.core._fastpath': ('invdyn_ros/core/_fastpath.pyx', KERNEL_FLAGS),
    'invdyn_ros.core._lstm_kernel': ('invdyn_ros/core/_lstm_kernel.pyx',
                                     KERNEL_FLAGS + ['-fno-trapping-math']),
}


def extensions() -> list:
    try:
        from Cython.Build import cythonize
    except ImportError:
        print('invdyn: Cython not found, the compiled kernels are not built '
              '(the package runs its pure Python paths)')
        return []
    out = []
    for name, (source, flags) in KERNELS.items():
        try:   # each on its own: the training kernel needs scipy's BLAS declarations
            out += cythonize([Extension(name, [source], depends=[TANH_HEADER],
                                        extra_compile_args=flags, optional=True)],
                             language_level=3, quiet=True)
        except Exception as exc:   # noqa: B902 (Cython raises several kinds)
            print(f'invdyn: {name} not built ({exc}); its pure Python path runs')
    return out


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
