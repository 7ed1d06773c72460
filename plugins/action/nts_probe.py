# -*- coding: utf-8 -*-
"""Action plugin of the nts_probe module: on the controller, probe in-process instead of starting a Python.

A task that runs on the controller (connection ``local``: ``delegate_to: localhost``, as the chrony_nts role's
pre-flight gate does) calls the same code the module runs (plugins/module_utils/nts_prober.py) inside the Ansible
worker, saving the module's Python start-up and imports, about 0.3 s of every run. Anywhere else (a managed host,
probing from its own network position), or with ``async``, the module is executed as usual.
"""

from __future__ import annotations

from ansible.plugins.action import ActionBase
from ansible_collections.nts.chrony.plugins.module_utils import nts_prober


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(nts_prober.PROBE_ARGUMENT_SPEC)
    # With async the module runs as an async job: _execute_module wraps it and returns the job id.
    _supports_async = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if self._connection.transport not in ("local", "ansible.builtin.local") or self._task.async_val:
            result.update(
                self._execute_module(
                    module_name="nts.chrony.nts_probe",
                    module_args=self._task.args,
                    task_vars=task_vars,
                    wrap_async=self._task.async_val and not self._connection.has_native_async,
                )
            )
            return result
        _spec, params = self.validate_argument_spec(argument_spec=nts_prober.PROBE_ARGUMENT_SPEC)
        out, failure, warnings = nts_prober.run_probe_task(params)
        result.update(out)
        if warnings:
            result["warnings"] = warnings
        if failure:
            result.update(failed=True, msg=failure)
        return result
