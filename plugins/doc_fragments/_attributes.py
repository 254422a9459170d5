# Copyright (c) netpol.cilium contributors
# Apache License 2.0 (see LICENSE)
"""Attribute documentation shared by the modules of netpol.cilium (private to the collection)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in C(check_mode) and return changed status prediction without modifying target.
  diff_mode:
    description: >-
      Will return details on what has changed (or possibly needs changing in C(check_mode)), when in diff mode.
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
      - This assumes that the system controlled/queried by the module has not changed in a relevant way.
"""

    ACTIONGROUP_CILIUM = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/netpol.cilium.cilium) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - netpol.cilium.cilium
"""

    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details:
      - This action does not modify state.
  diff_mode:
    support: N/A
    details:
      - This action does not modify state.
  idempotent:
    support: full
    details:
      - This action does not modify state.
"""
