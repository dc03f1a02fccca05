"""{{name}}: restart a systemd unit when it is not active, then verify.

A firedrill recovery kernel in Python, built into a WebAssembly component
with componentize-py against the WIT contract in wit/kernel.wit. It reaches
the world only through the firedrill host: every command must match a
capability declared in describe(), on a target the runbook step granted.
`observe` commands run in dry-runs too; a `change` in a dry-run is recorded
as the plan and answered with `simulated=True` instead of being performed.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types

INPUT_SCHEMA = {
    "type": "object",
    "required": ["unit"],
    "additionalProperties": False,
    "properties": {
        "unit": {"type": "string", "pattern": "^[A-Za-z0-9@._-]{1,128}$", "description": "systemd unit"},
    },
}

OUTPUT_SCHEMA = {
    "type": "object",
    "required": ["unit", "was_active", "action"],
    "additionalProperties": False,
    "properties": {
        "unit": {"type": "string"},
        "was_active": {"type": "boolean"},
        "action": {"enum": ["none", "restarted", "restart-planned"]},
    },
}


def _exec(target: str, command: str) -> types.ExecResult:
    """Run `command` on `target`; a refused or failed call ends the run."""
    try:
        return host.exec(target, command)
    except Err as e:  # host-error: denied, failed or timeout
        kind = types.KernelError_Retryable if isinstance(e.value, types.HostError_Timeout) else types.KernelError_Failed
        raise Err(kind(f"`{command}` on {target}: {e.value.value}"))


def is_active(target: str, unit: str) -> bool:
    return _exec(target, f"systemctl is-active -- {unit}").stdout.strip() == "active"


class WitWorld(wit_world.WitWorld):
    def describe(self) -> types.Manifest:
        return types.Manifest(
            name="{{name}}",
            version="0.1.0",
            description="Restart a systemd unit when it is not active, then verify (Python)",
            input_schema=json.dumps(INPUT_SCHEMA, sort_keys=True),
            output_schema=json.dumps(OUTPUT_SCHEMA, sort_keys=True),
            # Restarting a unit that is down, twice, leaves it as once.
            idempotent=True,
            capabilities=types.Capabilities(
                exec=[
                    types.ExecCapability(pattern="systemctl is-active -- *", effect=types.Effect.OBSERVE),
                    types.ExecCapability(pattern="systemctl restart -- *", effect=types.Effect.CHANGE),
                ],
                http=[],
                secrets=[],
            ),
        )

    def run(self, invocation: types.Invocation) -> str:
        unit = json.loads(invocation.input)["unit"]
        target = invocation.targets[0]
        report = lambda was_active, action: json.dumps({"unit": unit, "was_active": was_active, "action": action})

        if is_active(target, unit):
            host.log(types.LogLevel.INFO, f"{unit} on {target} is active; nothing to do")
            return report(True, "none")
        restart = _exec(target, f"systemctl restart -- {unit}")
        if restart.simulated:
            host.log(types.LogLevel.INFO, f"dry-run: would restart {unit} on {target}")
            return report(False, "restart-planned")
        if restart.exit_code != 0:
            raise Err(types.KernelError_Failed(f"systemctl restart {unit} exited {restart.exit_code}: {restart.stderr.strip()}"))
        if not is_active(target, unit):
            raise Err(types.KernelError_Retryable(f"{unit} on {target} was restarted but is not active; check `journalctl -u {unit}`"))
        host.log(types.LogLevel.INFO, f"restarted {unit} on {target}")
        return report(False, "restarted")
