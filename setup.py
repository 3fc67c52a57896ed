# The package's metadata is in setup.cfg; this only adds wsmux's optional C
# accelerator (wsmux/_speedups.c).  Optional: where it cannot be built (no C
# compiler, no Python headers) the install goes on, and wsmux cuts and
# frames messages in Python (wsmux/_frames.py says which it uses).
from setuptools import Extension, setup

setup(ext_modules=[Extension("wsmux._speedups", ["wsmux/_speedups.c"], optional=True)])
