"""log-rotate-py: free disk space by truncating the largest log files.

A recovery kernel written in Python (componentize-py) against firedrill's
WIT contract. When the filesystem holding `path` is fuller than
`max_use_percent`, it lists the files under `path` (`du -a -k`), picks the
largest ones whose name ends with `suffix`, and truncates up to `max_files`
of them (`truncate -s 0`, a `change`: in a dry-run the host records the plan
and does nothing). Reading (`df`, `du`) is `observe` and runs in dry-runs too.
"""

import json
import shlex

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types

INPUT_SCHEMA = {
    "type": "object",
    "required": ["path"],
    "additionalProperties": False,
    "properties": {
        "path": {"type": "string", "minLength": 1, "description": "Directory holding the logs"},
        "max_use_percent": {"type": "integer", "minimum": 1, "maximum": 100, "default": 90},
        "suffix": {"type": "string", "minLength": 1, "default": ".log"},
        "max_files": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5},
    },
}

OUTPUT_SCHEMA = {
    "type": "object",
    "required": ["use_percent", "action", "truncated", "freed_kb"],
    "properties": {
        "use_percent": {"type": "integer"},
        "action": {"enum": ["none", "truncated"]},
        "truncated": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["path", "size_kb", "simulated"],
                "properties": {
                    "path": {"type": "string"},
                    "size_kb": {"type": "integer"},
                    "simulated": {"type": "boolean"},
                },
            },
        },
        "freed_kb": {"type": "integer"},
    },
}


def _fail(message: str, retryable: bool = False):
    kind = types.KernelError_Retryable if retryable else types.KernelError_Failed
    return Err(kind(message))


def _exec(target: str, command: str) -> types.ExecResult:
    try:
        return host.exec(target, command)
    except Err as e:  # host-error: denied, failed, timeout
        raise _fail(f"`{command}` on {target}: {e.value.value}", retryable=isinstance(e.value, types.HostError_Timeout))


def use_percent(df_output: str) -> int:
    """The Use% column of `df -P` (second line)."""
    lines = [l for l in df_output.splitlines() if l.strip()]
    if len(lines) < 2:
        raise ValueError(f"unexpected df output: {df_output!r}")
    fields = lines[-1].split()
    return int(fields[4].rstrip("%"))


def largest(du_output: str, suffix: str, limit: int):
    """(size_kb, path) of the largest files ending with `suffix`, largest first."""
    found = []
    for line in du_output.splitlines():
        size, _, path = line.partition("\t")
        if path.endswith(suffix) and size.strip().isdigit():
            found.append((int(size), path))
    found.sort(key=lambda f: (-f[0], f[1]))
    return found[:limit]


class WitWorld(wit_world.WitWorld):
    def describe(self) -> types.Manifest:
        effect = types.Effect
        return types.Manifest(
            name="log-rotate-py",
            version="1.0.0",
            description="Truncate the largest log files when a filesystem is too full (Python)",
            input_schema=json.dumps(INPUT_SCHEMA, sort_keys=True),
            output_schema=json.dumps(OUTPUT_SCHEMA, sort_keys=True),
            idempotent=True,
            capabilities=types.Capabilities(
                exec=[
                    types.ExecCapability(pattern="df -P *", effect=effect.OBSERVE),
                    types.ExecCapability(pattern="du -a -k *", effect=effect.OBSERVE),
                    types.ExecCapability(pattern="truncate -s 0 *", effect=effect.CHANGE),
                ],
                http=[],
                secrets=[],
            ),
        )

    def run(self, invocation: types.Invocation) -> str:
        params = json.loads(invocation.input)
        path = params["path"]
        threshold = params.get("max_use_percent", 90)
        suffix = params.get("suffix", ".log")
        max_files = params.get("max_files", 5)
        target = invocation.targets[0]

        df = _exec(target, f"df -P {path}")
        if df.exit_code != 0:
            raise _fail(f"df -P {path} exited {df.exit_code}: {df.stderr.strip()}")
        try:
            used = use_percent(df.stdout)
        except ValueError as e:
            raise _fail(str(e))
        host.log(types.LogLevel.INFO, f"{path}: {used}% used (limit {threshold}%)")
        if used < threshold:
            return json.dumps({"use_percent": used, "action": "none", "truncated": [], "freed_kb": 0})

        du = _exec(target, f"du -a -k {path}")
        if du.exit_code != 0:
            raise _fail(f"du -a -k {path} exited {du.exit_code}: {du.stderr.strip()}")
        truncated = []
        for size_kb, file in largest(du.stdout, suffix, max_files):
            # A file name from `du` may hold spaces: quote it, so that the host
            # splits it back into one word (which `truncate -s 0 *` allows).
            r = _exec(target, f"truncate -s 0 {shlex.quote(file)}")
            if r.exit_code != 0:
                raise _fail(f"truncate -s 0 {file} exited {r.exit_code}: {r.stderr.strip()}")
            host.log(types.LogLevel.INFO, f"truncated {file} ({size_kb} KiB){' [planned]' if r.simulated else ''}")
            truncated.append({"path": file, "size_kb": size_kb, "simulated": r.simulated})
        return json.dumps({
            "use_percent": used,
            "action": "truncated",
            "truncated": truncated,
            "freed_kb": sum(t["size_kb"] for t in truncated if not t["simulated"]),
        })
