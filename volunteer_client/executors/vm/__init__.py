"""The ``vm`` executor: each unit in a fresh VM of the YADML VM image (``images/vm``).

* :mod:`.executor`: :class:`VmExecutor` (the :class:`~..base.Executor`), its
  :class:`VmOptions`, :func:`make_driver` and :func:`probe_driver`;
* :mod:`.base`: the :class:`VmDriver` interface both drivers implement;
* :mod:`.qemu`: :class:`QemuDriver` (``qemu-system-x86_64``, KVM or TCG);
* :mod:`.virtualbox`: :class:`VirtualBoxDriver` (``VBoxManage``);
* :mod:`.disk_image_store`: finding the VM disk image a unit names and checking it against
  its manifest;
* :mod:`.disks`: the unit's input and output disks (tar archives on raw disks).
"""

from __future__ import annotations

from .base import VmDriver, VmExit, VmRun, vm_prefix
from .disk_image_store import VmImage, VmImageStore, default_image_dir
from .executor import VmExecutor, VmOptions, make_driver, probe_driver
from .qemu import QemuDriver
from .virtualbox import VirtualBoxDriver

__all__ = [
    "QemuDriver",
    "VirtualBoxDriver",
    "VmDriver",
    "VmExecutor",
    "VmExit",
    "VmImage",
    "VmImageStore",
    "VmOptions",
    "VmRun",
    "default_image_dir",
    "make_driver",
    "probe_driver",
    "vm_prefix",
]
