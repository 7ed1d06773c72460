"""Stand-in for the get-pip.py script ansible-test downloads to put pip into its empty virtual environments.

ansible-test fetches get-pip from a CI file host that is out of reach here; it looks for a cached copy at
``~/.ansible/test/cache/get_pip_<version>.py`` first, and tools/sanity.sh installs this file there when none is
cached. Like get-pip.py it runs pip from a wheel on sys.path and installs what it is given: the wheel is the one
Python bundles for ensurepip, and pip itself then comes from PyPI at the version ansible-test pins. get-pip's own
``--no-setuptools``/``--no-wheel`` flags are accepted and dropped (nothing beyond the named packages is installed).
"""

from __future__ import annotations

import glob
import os
import sys


def main() -> int:
    import ensurepip

    wheels = sorted(glob.glob(os.path.join(os.path.dirname(ensurepip.__file__), "_bundled", "pip-*.whl")))
    if not wheels:
        print("ansible_test_get_pip: this Python has no bundled pip wheel (ensurepip/_bundled)", file=sys.stderr)
        return 1
    sys.path.insert(0, wheels[-1])
    from pip._internal.cli.main import main as pip_main

    args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
    return pip_main(["install", "--upgrade", "--force-reinstall", *args])


if __name__ == "__main__":
    sys.exit(main())
