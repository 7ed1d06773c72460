"""Running the project's modules through the real `ansible` CLI on localhost, with JSON output.

Run outside the repo (cwd "/"): its ansible.cfg enables profile_tasks (which breaks the JSON output) and names the lab
inventory; the modules are the checkout's collection, by FQCN (nts.chrony.NAME), through ANSIBLE_COLLECTIONS_PATH.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ANSIBLE = REPO / ".venv" / "bin" / "ansible"
CWD = "/"
# explicit local target: independent of the inventory named in the repo's ansible.cfg
LOCAL = ["-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}"]


def module_env() -> dict[str, str]:
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(REPO / ".collections"),
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="json",
        ANSIBLE_DEPRECATION_WARNINGS="0",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
    )
    env.pop("ANSIBLE_CONFIG", None)
    return env
