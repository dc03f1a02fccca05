#!/usr/bin/env python3
"""Check firedrill's audit checkpoints and proofs without trusting firedrill.

Standard library only (Python 3.8+), written from the published formats,
not from firedrill's code:

- checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes, Ed25519
  (RFC 8032; the verification below is the RFC's section 6 reference),
- the tree: RFC 9162 section 2.1 (leaf = SHA-256(0x00 || record hash),
  node = SHA-256(0x01 || left || right)),
- a record's hash: SHA-256(prev_hash || JSON array of its fields), the
  fields and their order as docs/audit.md states.

Usage:
  verify-audit.py checkpoint  --key KEY CHECKPOINT_FILE
  verify-audit.py inclusion   --key KEY PROOF_FILE    (from `firedrill audit prove`)
  verify-audit.py consistency --key KEY PROOF_FILE    (from `firedrill audit consistency`)

KEY is a verifier key `name+id+base64` (`firedrill audit key` prints it) or a
file with one per line; --key may be repeated. Exit 0: verified; 1: it does
not verify (the message says why); 2: bad usage or input.
"""

import base64
import hashlib
import json
import re
import sys

# ---- Ed25519 verification: RFC 8032, section 6 -------------------------

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def _inv(x):
    return pow(x, P - 2, P)


def _recover_x(y, sign):
    if y >= P:
        return None
    x2 = (y * y - 1) * _inv(D * y * y + 1)
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    if (x & 1) != sign:
        x = P - x
    return x


_GY = 4 * _inv(5) % P
_GX = _recover_x(_GY, 0)
_G = (_GX, _GY, 1, _GX * _GY % P)


def _add(p1, p2):
    a = (p1[1] - p1[0]) * (p2[1] - p2[0]) % P
    b = (p1[1] + p1[0]) * (p2[1] + p2[0]) % P
    c = 2 * p1[3] * p2[3] * D % P
    d = 2 * p1[2] * p2[2] % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f, g * h, f * g, e * h)


def _mul(s, pt):
    q = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            q = _add(q, pt)
        pt = _add(pt, pt)
        s >>= 1
    return q


def _equal(p1, p2):
    return (p1[0] * p2[2] - p2[0] * p1[2]) % P == 0 and (p1[1] * p2[2] - p2[1] * p1[2]) % P == 0


def _decompress(s):
    if len(s) != 32:
        return None
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % P)


def ed25519_verify(public, message, signature):
    if len(public) != 32 or len(signature) != 64:
        return False
    a = _decompress(public)
    r = _decompress(signature[:32])
    if a is None or r is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= L:
        return False
    h = int.from_bytes(hashlib.sha512(signature[:32] + public + message).digest(), "little") % L
    return _equal(_mul(s, _G), _add(r, _mul(h, a)))


# ---- Signed notes and checkpoints (C2SP) --------------------------------


class Invalid(Exception):
    """The input does not verify."""


def parse_key(text):
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise ValueError("a verifier key is name+id+base64, got %r" % text)
    name, key_id, b64 = parts
    raw = base64.b64decode(b64, validate=True)
    if len(raw) != 33 or raw[0] != 1:
        raise ValueError("key %s is not an Ed25519 verifier key" % name)
    computed = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if computed.hex() != key_id:
        raise ValueError("key %s: the key id %s does not match the key" % (name, key_id))
    return (name, computed, raw[1:])


def open_checkpoint(note, keys):
    """The (origin, size, root bytes) of a note signed by one of keys."""
    split = note.find("\n\n")
    if split < 0:
        raise Invalid("not a signed note: no blank line before the signatures")
    body, sigs = note[: split + 1], note[split + 2 :]
    lines = body.split("\n")
    if len(lines) < 4:
        raise Invalid("a checkpoint body has an origin, a size and a root hash")
    origin, size_text, root_b64 = lines[0], lines[1], lines[2]
    if not re.fullmatch(r"0|[1-9][0-9]*", size_text):
        raise Invalid("the tree size %r is not a decimal number" % size_text)
    root = base64.b64decode(root_b64, validate=True)
    if len(root) != 32:
        raise Invalid("the root hash is not 32 bytes")
    if not sigs.endswith("\n"):
        raise Invalid("a signed note ends with a newline")
    signers = []
    for line in sigs[:-1].split("\n"):
        if not line.startswith("\u2014 "):
            raise Invalid("a signature line does not start with an em dash")
        name, _, b64 = line[2:].partition(" ")
        raw = base64.b64decode(b64, validate=True)
        signers.append("%s+%s" % (name, raw[:4].hex()))
        for key_name, key_id, public in keys:
            if key_name == name and key_id == raw[:4]:
                if not ed25519_verify(public, body.encode(), raw[4:]):
                    raise Invalid("the signature by %s does not verify: the checkpoint was altered" % name)
                return origin, int(size_text), root
    raise Invalid("no signature by a trusted key (signed by %s)" % (", ".join(signers) or "nobody"))


# ---- Records and the RFC 9162 tree --------------------------------------


def record_hash(r):
    fields = [r["seq"], r["time"], r["actor_kind"], r["actor_id"], r["action"],
              r["subject"], r["outcome"], r["details"], r["run_id"]]
    canonical = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(r["prev_hash"].encode() + canonical.encode()).hexdigest()


def node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(index, size, leaf, proof, root):
    """RFC 9162 section 2.1.3.2."""
    if index < 0 or index >= size:
        raise Invalid("leaf %d is not in a tree of %d" % (index, size))
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise Invalid("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise Invalid("the inclusion proof is too short")
    if r != root:
        raise Invalid("the inclusion proof does not lead to the checkpoint's root")


def verify_consistency(m, n, old_root, new_root, proof):
    """RFC 9162 section 2.1.4.2."""
    if m < 1 or m > n:
        raise Invalid("sizes %d and %d cannot be consistent" % (m, n))
    if m == n:
        if proof or old_root != new_root:
            raise Invalid("checkpoints of one size must have one root and an empty proof")
        return
    path = ([old_root] if m & (m - 1) == 0 else []) + list(proof)
    if not path:
        raise Invalid("the consistency proof is empty")
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise Invalid("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node(c, fr)
            sr = node(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise Invalid("the consistency proof is too short")
    if fr != old_root:
        raise Invalid("the proof does not lead to the old checkpoint's root: the new log does not extend it")
    if sr != new_root:
        raise Invalid("the proof does not lead to the new checkpoint's root")


def hashes(items):
    return [base64.b64decode(h, validate=True) for h in items]


# ---- Command line ---------------------------------------------------------


def main(argv):
    if len(argv) < 2 or argv[0] not in ("checkpoint", "inclusion", "consistency"):
        print(__doc__, file=sys.stderr)
        return 2
    what, rest = argv[0], argv[1:]
    keys, files = [], []
    while rest:
        arg = rest.pop(0)
        if arg == "--key" and rest:
            value = rest.pop(0)
            try:
                with open(value, encoding="utf-8") as f:
                    lines = f.read().splitlines()
            except OSError:
                lines = [value]
            keys.extend(parse_key(k) for k in lines if k.strip())
        else:
            files.append(arg)
    if not keys or len(files) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    with open(files[0], encoding="utf-8") as f:
        text = f.read()
    try:
        if what == "checkpoint":
            origin, size, root = open_checkpoint(text, keys)
            print("checkpoint OK: %s, %d records, root %s" % (origin, size, base64.b64encode(root).decode()))
        elif what == "inclusion":
            proof = json.loads(text)
            origin, size, root = open_checkpoint(proof["checkpoint"], keys)
            record = proof["record"]
            if size != proof["tree_size"]:
                raise Invalid("the proof is for size %d, the checkpoint says %d" % (proof["tree_size"], size))
            if record["seq"] != proof["leaf_index"] + 1:
                raise Invalid("record %d is not leaf %d" % (record["seq"], proof["leaf_index"]))
            if record_hash(record) != record["hash"]:
                raise Invalid("record %d's contents do not match its hash: it was modified" % record["seq"])
            leaf = hashlib.sha256(b"\x00" + bytes.fromhex(record["hash"])).digest()
            verify_inclusion(proof["leaf_index"], size, leaf, hashes(proof["proof"]), root)
            print("inclusion OK: record %d (%s %s) is in %s at %d records"
                  % (record["seq"], record["action"], record["subject"], origin, size))
        else:
            proof = json.loads(text)
            o1, m, old_root = open_checkpoint(proof["old_checkpoint"], keys)
            o2, n, new_root = open_checkpoint(proof["new_checkpoint"], keys)
            if o1 != o2:
                raise Invalid("the checkpoints are of two logs (%s, %s)" % (o1, o2))
            if (m, n) != (proof["old_size"], proof["new_size"]):
                raise Invalid("the proof's sizes do not match the checkpoints'")
            verify_consistency(m, n, old_root, new_root, hashes(proof["proof"]))
            print("consistency OK: %s at %d records extends its checkpoint at %d" % (o1, n, m))
    except Invalid as e:
        print("FAILED: %s" % e, file=sys.stderr)
        return 1
    except (KeyError, TypeError, ValueError) as e:
        print("error: malformed input: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
