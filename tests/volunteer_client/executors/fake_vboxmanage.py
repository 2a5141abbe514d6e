#!/usr/bin/env python3
"""FAKE ``VBoxManage`` for the VirtualBox driver's tests: NOT VirtualBox.

VirtualBox is not in Debian and cannot run on the test machine, so this script stands in
for ``VBoxManage``: it records every argv (one JSON line per call in
``$FAKE_VBOX_DIR/calls.jsonl``), keeps the registered VMs and media in
``$FAKE_VBOX_DIR/state.json``, and answers with output in the format of VirtualBox 7.0's
``VBoxManage`` (``list vms``, ``showvminfo --machinereadable``, ``showmediuminfo``,
``createvm``...). Its "disks" are plain raw files (a real VDI has a header).

``$FAKE_VBOX_GUEST`` says what a started VM does:

* ``train`` (default): plays the guest at ``startvm``: unpacks the tar on the disk at SATA
  port 1, runs the real trainer (``python -m yadml_trainer.trainer``) on it, writes the
  status lines to UART 2's file and the trainer's output to UART 1's, writes the outputs as
  a tar onto the disk at port 2 and powers the VM off;
* ``hang``: the VM keeps running until ``controlvm poweroff``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import Any

STATE_DIR = Path(os.environ["FAKE_VBOX_DIR"])
STATE = STATE_DIR / "state.json"
PACKAGE_ROOT = Path(__file__).resolve().parents[3]


def load() -> dict[str, Any]:
    if STATE.exists():
        data: dict[str, Any] = json.loads(STATE.read_text())
        return data
    return {"vms": {}, "media": {}}


def save(state: dict[str, Any]) -> None:
    STATE.write_text(json.dumps(state, indent=1))


def error(message: str) -> int:
    print(f"VBoxManage: error: {message}", file=sys.stderr)
    return 1


def option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def find_vm(state: dict[str, Any], key: str) -> dict[str, Any] | None:
    for name, vm in state["vms"].items():
        if key in (name, vm["uuid"]):
            vm_: dict[str, Any] = vm
            return vm_
    return None


def register_medium(state: dict[str, Any], path: str, **extra: Any) -> dict[str, Any]:
    entry = state["media"].setdefault(path, {"uuid": str(uuid.uuid4()), "type": "normal"})
    entry.update(extra)
    result: dict[str, Any] = entry
    return result


def play_guest(vm: dict[str, Any]) -> None:
    """What the YADML VM's init does, natively: tar in, trainer, tar out, power off."""
    disks = vm["disks"]
    status = Path(vm["uart2"])
    console = Path(vm["uart1"])
    with tempfile.TemporaryDirectory() as tmp:
        unit, out = Path(tmp) / "unit", Path(tmp) / "out"
        unit.mkdir()
        out.mkdir()
        with tarfile.open(disks["1"], "r:") as archive:
            archive.extractall(unit, filter="data")
        status.write_text("YADML READY 1.00\n")
        threads = (unit / "threads").read_text().strip()
        env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))
        done = subprocess.run(
            [sys.executable, "-m", "yadml_trainer.trainer",
             "--shard", str(unit / "shard.safetensors"),
             "--weights", str(unit / "weights.safetensors"),
             "--task", str(unit / "task.json"),
             "--output", str(out / "output.safetensors"),
             "--progress", str(out / "progress"), "--threads", threads],
            capture_output=True, env=env, check=False,
        )  # fmt: skip
        console.write_bytes(done.stdout + done.stderr)
        (out / "exit").write_text(f"{done.returncode}\n")
        with status.open("a") as f:
            f.write(f"YADML PROGRESS 1.0000\nYADML EXIT {done.returncode} 2.00\n")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
            for name in ("exit", "progress", "output.safetensors"):
                if (out / name).is_file():
                    archive.add(out / name, name)
        with open(disks["2"], "r+b") as disk:
            disk.write(buffer.getvalue())
    vm["state"] = "poweroff"


def main(args: list[str]) -> int:
    with (STATE_DIR / "calls.jsonl").open("a") as log:
        log.write(json.dumps(args) + "\n")
    state = load()
    command = args[0] if args else ""
    if command == "--version":
        print("7.0.20r163906")
        return 0
    if args[:2] == ["list", "vms"]:
        for name, vm in state["vms"].items():
            print(f'"{name}" {{{vm["uuid"]}}}')
        return 0
    if command == "showmediuminfo":
        path = args[-1]
        if not Path(path).exists():
            return error(f"Could not find file for the medium '{path}' (VERR_FILE_NOT_FOUND)")
        entry = register_medium(state, path)
        save(state)
        print(f"UUID:           {entry['uuid']}\nParent UUID:    base\nState:          created")
        print(f"Type:           {entry['type']}\nLocation:       {path}\nStorage format: VDI")
        return 0
    if command == "modifymedium":
        register_medium(state, args[2], type=option(args, "--type"))
    elif command == "createvm":
        name = option(args, "--name")
        assert name is not None
        if name in state["vms"]:
            return error(f"Machine settings file '{name}.vbox' already exists")
        vm_uuid = str(uuid.uuid4())
        state["vms"][name] = {"uuid": vm_uuid, "state": "poweroff", "disks": {}}
        folder = Path(option(args, "--basefolder") or ".") / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.vbox").write_text("<VirtualBox/>\n")
        state["vms"][name]["folder"] = str(folder)
        print(f"Virtual machine '{name}' is created and registered.\nUUID: {vm_uuid}")
        print(f"Settings file: '{folder / (name + '.vbox')}'")
    elif command == "modifyvm":
        vm = find_vm(state, args[1])
        if vm is None:
            return error(f"Could not find a registered machine named '{args[1]}'")
        for n in ("1", "2"):
            if f"--uartmode{n}" in args:
                vm[f"uart{n}"] = args[args.index(f"--uartmode{n}") + 2]
    elif command == "storagectl":
        if find_vm(state, args[1]) is None:
            return error(f"Could not find a registered machine named '{args[1]}'")
    elif command == "createmedium":
        filename = option(args, "--filename")
        assert filename is not None
        path = filename
        parent = option(args, "--diffparent")
        size = int(option(args, "--sizebyte") or 0)
        with open(path, "wb") as f:
            f.truncate(size)
        entry = register_medium(state, path, parent=parent)
        print(f"0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%\n"
              f"Medium created. UUID: {entry['uuid']}")  # fmt: skip
    elif command == "convertfromraw":
        shutil.copyfile(args[1], args[2])
        print(f'Converting from raw image file="{args[1]}" to file="{args[2]}"...')
        print(f"Creating dynamic image with size {Path(args[1]).stat().st_size} bytes")
    elif command == "storageattach":
        vm = find_vm(state, args[1])
        if vm is None:
            return error(f"Could not find a registered machine named '{args[1]}'")
        medium = option(args, "--medium")
        register_medium(state, str(medium))
        vm["disks"][option(args, "--port")] = medium
    elif command == "startvm":
        vm = find_vm(state, args[1])
        if vm is None:
            return error(f"Could not find a registered machine named '{args[1]}'")
        print(f'Waiting for VM "{args[1]}" to power on...')
        print(f'VM "{args[1]}" has been successfully started.')
        vm["state"] = "running"
        if os.environ.get("FAKE_VBOX_GUEST", "train") == "train":
            play_guest(vm)
    elif command == "showvminfo":
        vm = find_vm(state, args[1])
        if vm is None:
            return error(f"Could not find a registered machine named '{args[1]}'")
        print(f'name="{args[1]}"\nUUID="{vm["uuid"]}"\nVMState="{vm["state"]}"')
        print('VMStateChangeTime="2026-11-25T17:00:00.000000000"')
    elif command == "controlvm":
        vm = find_vm(state, args[1])
        if vm is None:
            return error(f"Could not find a registered machine named '{args[1]}'")
        if vm["state"] != "running":
            return error(f"Machine '{args[1]}' is not currently running")
        vm["state"] = "poweroff"
        print("0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%")
    elif command == "clonemedium":
        shutil.copyfile(args[2], args[3])
        print("0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%")
        print(f"Clone medium created in format 'RAW'. UUID: {uuid.uuid4()}")
    elif command == "unregistervm":
        for name, vm in list(state["vms"].items()):
            if args[1] in (name, vm["uuid"]):
                if "--delete" in args:
                    for disk in vm["disks"].values():
                        if state["media"].get(disk, {}).get("type") != "multiattach":
                            Path(disk).unlink(missing_ok=True)
                            state["media"].pop(disk, None)
                    shutil.rmtree(vm.get("folder", "/nonexistent"), ignore_errors=True)
                del state["vms"][name]
                break
        else:
            return error(f"Could not find a registered machine named '{args[1]}'")
    elif command == "closemedium":
        path = args[2]
        if path not in state["media"]:
            return error(f"Could not find file for the medium '{path}'")
        state["media"].pop(path)
        if "--delete" in args:
            Path(path).unlink(missing_ok=True)
    else:
        return error(f"unknown command {args!r} (this is the fake VBoxManage of the tests)")
    save(state)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
