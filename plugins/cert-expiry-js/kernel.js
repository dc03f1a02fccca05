// cert-expiry-js: renew a TLS certificate that is about to expire.
//
// A recovery kernel written in JavaScript (componentize-js) against
// firedrill's WIT contract (sdk/wit/kernel.wit). It reads the certificate's
// end date on the granted target (`openssl x509 -enddate`, an `observe` call:
// it runs in dry-runs too). When fewer than `warn_days` days are left it asks
// certbot to renew it (`certbot renew --cert-name NAME`, a `change`: in a
// dry-run the host records it as the plan and answers `simulated`), then
// reads the end date again and fails unless the renewal moved it past
// `warn_days`. Renewing a certificate that is not due is a no-op, so the
// kernel is idempotent.
import { log, exec, now } from 'firedrill:kernel/host@0.1.0';

const INPUT_SCHEMA = {
  type: 'object',
  required: ['file', 'cert_name'],
  additionalProperties: false,
  properties: {
    file: { type: 'string', minLength: 1, description: 'PEM certificate on the target' },
    cert_name: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,128}$', description: 'certbot certificate name' },
    warn_days: { type: 'integer', minimum: 0, maximum: 3650, default: 14 },
  },
};

const OUTPUT_SCHEMA = {
  type: 'object',
  required: ['file', 'not_after', 'days_left', 'action'],
  additionalProperties: false,
  properties: {
    file: { type: 'string' },
    not_after: { type: 'string', description: 'End date after the action (RFC 3339)' },
    days_left: { type: 'integer' },
    action: { enum: ['none', 'renewed', 'renew-planned'] },
  },
};

const DAY_MS = 86400000;

export function describe() {
  return {
    name: 'cert-expiry-js',
    version: '1.0.0',
    description: 'Renew a TLS certificate with certbot when it expires within warn_days, then verify (JavaScript)',
    inputSchema: JSON.stringify(INPUT_SCHEMA),
    outputSchema: JSON.stringify(OUTPUT_SCHEMA),
    idempotent: true,
    capabilities: {
      exec: [
        { pattern: 'openssl x509 -enddate -noout -in *', effect: 'observe' },
        { pattern: 'certbot renew --non-interactive --cert-name *', effect: 'change' },
      ],
      http: [],
      secrets: [],
    },
  };
}

// `notAfter=Nov 23 12:00:00 2027 GMT` -> milliseconds since the epoch.
export function parseNotAfter(line) {
  const m = /^notAfter=(\w{3})\s+(\d{1,2}) (\d{2}):(\d{2}):(\d{2}) (\d{4}) GMT$/.exec(line.trim());
  if (!m) throw new Error(`unexpected openssl output: ${JSON.stringify(line)}`);
  const month = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'].indexOf(m[1]);
  if (month < 0) throw new Error(`unknown month in ${JSON.stringify(line)}`);
  return Date.UTC(+m[6], month, +m[2], +m[3], +m[4], +m[5]);
}

// Run `command` on `target`; a host error or a non-zero exit becomes a kernel
// error (a host timeout is worth a retry, anything else is not).
function run1(target, command) {
  let r;
  try {
    r = exec(target, command);
  } catch (e) {
    // host-error: { tag: 'denied' | 'failed' | 'timeout', val }
    const payload = e.payload ?? e;
    throw { tag: payload.tag === 'timeout' ? 'retryable' : 'failed', val: `${command} on ${target}: ${payload.val ?? e}` };
  }
  if (r.exitCode !== 0) {
    throw { tag: 'failed', val: `${command} exited ${r.exitCode}: ${r.stderr.trim()}` };
  }
  return r;
}

function endDate(target, file) {
  const r = run1(target, `openssl x509 -enddate -noout -in ${file}`);
  try {
    return parseNotAfter(r.stdout);
  } catch (e) {
    throw { tag: 'failed', val: String(e.message ?? e) };
  }
}

export function run(invocation) {
  const input = JSON.parse(invocation.input);
  const warnDays = input.warn_days ?? 14;
  const target = invocation.targets[0];
  const daysLeft = (t) => Math.floor((t - Number(now())) / DAY_MS);
  const report = (t, action) =>
    JSON.stringify({ file: input.file, not_after: new Date(t).toISOString(), days_left: daysLeft(t), action });

  const before = endDate(target, input.file);
  log('info', `${input.file} expires in ${daysLeft(before)} days (renew under ${warnDays})`);
  if (daysLeft(before) >= warnDays) return report(before, 'none');

  const renew = run1(target, `certbot renew --non-interactive --cert-name ${input.cert_name}`);
  if (renew.simulated) {
    log('info', `would renew ${input.cert_name} (dry-run)`);
    return report(before, 'renew-planned');
  }
  const after = endDate(target, input.file);
  if (daysLeft(after) < warnDays) {
    throw { tag: 'failed', val: `certbot renewed ${input.cert_name} but ${input.file} still expires in ${daysLeft(after)} days; check certbot's log on ${target}` };
  }
  log('info', `renewed ${input.cert_name}: ${input.file} now expires in ${daysLeft(after)} days`);
  return report(after, 'renewed');
}
