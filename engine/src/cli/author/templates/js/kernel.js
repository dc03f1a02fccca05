// {{name}}: restart a systemd unit when it is not active, then verify.
//
// A firedrill recovery kernel in JavaScript, built into a WebAssembly
// component with componentize-js against the WIT contract in wit/kernel.wit.
// It reaches the world only through the firedrill host: every command must
// match a capability declared in describe(), on a target the runbook step
// granted. `observe` commands run in dry-runs too; a `change` in a dry-run is
// recorded as the plan and answered with `simulated: true` instead.
import { log, exec } from 'firedrill:kernel/host@0.1.0';

const INPUT_SCHEMA = {
  type: 'object',
  required: ['unit'],
  additionalProperties: false,
  properties: {
    unit: { type: 'string', pattern: '^[A-Za-z0-9@._-]{1,128}$', description: 'systemd unit' },
  },
};

const OUTPUT_SCHEMA = {
  type: 'object',
  required: ['unit', 'was_active', 'action'],
  additionalProperties: false,
  properties: {
    unit: { type: 'string' },
    was_active: { type: 'boolean' },
    action: { enum: ['none', 'restarted', 'restart-planned'] },
  },
};

export function describe() {
  return {
    name: '{{name}}',
    version: '0.1.0',
    description: 'Restart a systemd unit when it is not active, then verify (JavaScript)',
    inputSchema: JSON.stringify(INPUT_SCHEMA),
    outputSchema: JSON.stringify(OUTPUT_SCHEMA),
    // Restarting a unit that is down, twice, leaves it as once.
    idempotent: true,
    capabilities: {
      exec: [
        { pattern: 'systemctl is-active -- *', effect: 'observe' },
        { pattern: 'systemctl restart -- *', effect: 'change' },
      ],
      http: [],
      secrets: [],
    },
  };
}

// Run `command` on `target`; a refused or failed call ends the run.
function run1(target, command) {
  try {
    return exec(target, command);
  } catch (e) {
    // host-error: { tag: 'denied' | 'failed' | 'timeout', val }
    const p = e.payload ?? e;
    throw { tag: p.tag === 'timeout' ? 'retryable' : 'failed', val: `${command} on ${target}: ${p.val ?? e}` };
  }
}

const isActive = (target, unit) => run1(target, `systemctl is-active -- ${unit}`).stdout.trim() === 'active';

export function run(invocation) {
  const { unit } = JSON.parse(invocation.input);
  const target = invocation.targets[0];
  const report = (wasActive, action) => JSON.stringify({ unit, was_active: wasActive, action });

  if (isActive(target, unit)) {
    log('info', `${unit} on ${target} is active; nothing to do`);
    return report(true, 'none');
  }
  const restart = run1(target, `systemctl restart -- ${unit}`);
  if (restart.simulated) {
    log('info', `dry-run: would restart ${unit} on ${target}`);
    return report(false, 'restart-planned');
  }
  if (restart.exitCode !== 0) {
    throw { tag: 'failed', val: `systemctl restart ${unit} exited ${restart.exitCode}: ${restart.stderr.trim()}` };
  }
  if (!isActive(target, unit)) {
    throw { tag: 'retryable', val: `${unit} on ${target} was restarted but is not active; check \`journalctl -u ${unit}\`` };
  }
  log('info', `restarted ${unit} on ${target}`);
  return report(false, 'restarted');
}
