"""torch.compile on a CPU (inductor) builds C++ kernels: tests that compile need a C++ compiler.

CI installs g++ when it is missing (.ci/run), so there these tests always run.
"""

import os
import shutil

import pytest

needs_compiler = pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "g++")) is None,
    reason="torch.compile on a CPU (inductor) builds C++ kernels and this machine has no C++ compiler (g++ or $CXX)",
)
