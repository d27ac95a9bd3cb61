/**
 * Parsers for the config values whose text alone says too little: addresses (compared in normal
 * form), CIDRs (no host bits), OpenSSH public keys (the blob decoded), durations (bounded), and
 * the characters no config string may hold. Pure; each returns a problem or a normal form.
 */

/**
 * Characters no config string may hold: C0 and C1 controls and DEL (PyYAML reads U+0085 as a line
 * break and refuses the rest), line and paragraph separators (line breaks to PyYAML), lone
 * surrogates (not UTF-8), BOM and the non-characters U+FFFE/U+FFFF, and bidirectional overrides
 * (they make text read differently from what it is).
 */
const FORBIDDEN_CHAR = /[\p{Cc}\p{Zl}\p{Zp}\p{Cs}\uFEFF\uFFFE\uFFFF\u202A-\u202E\u2066-\u2069]/u;

/** The first forbidden character of a string, as U+XXXX, or undefined. */
export function forbiddenCharacter(text: string): string | undefined {
  const found = FORBIDDEN_CHAR.exec(text);
  if (!found) return undefined;
  return `U+${(found[0].codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, "0")}`;
}

// ---------------------------------------------------------------------------------------------
// Addresses

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** An IPv6 address in its canonical text (RFC 5952, as WHATWG URL writes it), or undefined. */
function normalIpv6(text: string): string | undefined {
  if (!text.includes(":") || !/^[0-9A-Fa-f:.]+$/.test(text)) return undefined;
  try {
    return new URL(`http://[${text}]/`).hostname.slice(1, -1);
  } catch {
    return undefined;
  }
}

export type AddressKind = "ipv4" | "ipv6" | "hostname";

/**
 * The normal form of an IP address or hostname: IPv4 dotted decimal (no leading zeros: they read
 * as octal elsewhere), IPv6 compressed lower case (an IPv4-mapped one as its IPv4 address), a
 * hostname lower case without the trailing dot. A name whose last label is all digits is not a
 * hostname (RFC 3696 section 2), so `999.1.1.1` is refused rather than looked up.
 */
export function normalAddress(text: string): { kind: AddressKind; normal: string } | { problem: string } {
  if (IPV4.test(text)) return { kind: "ipv4", normal: text };
  const v6 = normalIpv6(text);
  if (v6 !== undefined) {
    const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(v6);
    if (mapped) {
      const [hi, lo] = [parseInt(mapped[1], 16), parseInt(mapped[2], 16)];
      return { kind: "ipv4", normal: [hi >> 8, hi & 255, lo >> 8, lo & 255].join(".") };
    }
    return { kind: "ipv6", normal: v6 };
  }
  const name = text.toLowerCase().replace(/\.$/, "");
  const labels = name.split(".");
  if (name.length === 0 || name.length > 253 || !labels.every((l) => LABEL.test(l))) {
    return { problem: "must be an IP address or a hostname" };
  }
  if (/^\d+$/.test(labels[labels.length - 1])) {
    return { problem: "is neither an IP address nor a hostname (a hostname's last label is not all digits)" };
  }
  return { kind: "hostname", normal: name };
}

function ipv4Bits(text: string): bigint {
  return text.split(".").reduce((acc, octet) => (acc << 8n) | BigInt(Number(octet)), 0n);
}

function ipv6Bits(normal: string): bigint {
  const [head, tail] = normal.includes("::") ? normal.split("::") : [normal, undefined];
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const groups = tail === undefined ? left : [...left, ...Array(8 - left.length - right.length).fill("0"), ...right];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
}

/** A CIDR in normal form, refusing host bits (198.51.100.7/24 is a typo for .0/24 or /32). */
export function normalCidr(text: string): { normal: string; prefix: number; family: 4 | 6 } | { problem: string } {
  const match = /^([^/]+)\/(\d{1,3})$/.exec(text);
  const fail = { problem: "must be a CIDR such as 198.51.100.0/24 or 2001:db8::/48" };
  if (!match) return fail;
  const prefix = Number(match[2]);
  if (IPV4.test(match[1])) {
    if (prefix > 32 || String(prefix) !== match[2]) return fail;
    const hostBits = ipv4Bits(match[1]) & ((1n << BigInt(32 - prefix)) - 1n);
    if (hostBits !== 0n) return { problem: `has host bits set after the /${prefix} prefix` };
    return { normal: `${match[1]}/${prefix}`, prefix, family: 4 };
  }
  const v6 = normalIpv6(match[1]);
  if (v6 === undefined || prefix > 128 || String(prefix) !== match[2]) return fail;
  const hostBits = ipv6Bits(v6) & ((1n << BigInt(128 - prefix)) - 1n);
  if (hostBits !== 0n) return { problem: `has host bits set after the /${prefix} prefix` };
  return { normal: `${v6}/${prefix}`, prefix, family: 6 };
}

// ---------------------------------------------------------------------------------------------
// OpenSSH public keys (RFC 4253 section 6.6, RFC 5656 section 3.1, RFC 8709, OpenSSH PROTOCOL.u2f)

export const SSH_KEY_TYPES = [
  "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
] as const;

/** Reads SSH wire-format strings off a buffer; undefined once the data runs short. */
class Wire {
  private at = 0;
  constructor(private readonly buf: Buffer) {}
  string(): Buffer | undefined {
    if (this.at + 4 > this.buf.length) return undefined;
    const len = this.buf.readUInt32BE(this.at);
    if (this.at + 4 + len > this.buf.length) return undefined;
    const out = this.buf.subarray(this.at + 4, this.at + 4 + len);
    this.at += 4 + len;
    return out;
  }
  get done(): boolean {
    return this.at === this.buf.length;
  }
}

/** Point sizes of uncompressed ECDSA public keys (0x04 || X || Y). */
const EC_POINT = { nistp256: 65, nistp384: 97, nistp521: 133 } as const;

/**
 * Checks an `authorized_keys` line: a known type, a blob that is canonical base64 and decodes to
 * a key of that same type with the right sizes. Returns what is wrong, or undefined.
 */
export function checkSshKey(line: string): string | undefined {
  const match = /^(\S+) (\S+)( .*)?$/.exec(line);
  if (!match) return "must be an OpenSSH public key (ssh-ed25519 AAAA... comment)";
  const [, type, blob] = match;
  if (!(SSH_KEY_TYPES as readonly string[]).includes(type)) return `key type ${type} is not one of ${SSH_KEY_TYPES.join(", ")}`;
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(blob) || blob.length % 4 !== 0) return "the key blob is not base64";
  const bytes = Buffer.from(blob, "base64");
  if (bytes.toString("base64") !== blob) return "the key blob is not canonical base64 (truncated or altered?)";
  const wire = new Wire(bytes);
  const name = wire.string()?.toString("latin1");
  if (name !== type) return `the key blob is a ${name === undefined ? "truncated key" : JSON.stringify(name)} key, not ${type}`;
  const broken = `the ${type} key blob is malformed`;
  if (type === "ssh-ed25519" || type === "sk-ssh-ed25519@openssh.com") {
    if (wire.string()?.length !== 32) return `${broken} (an Ed25519 key is 32 bytes)`;
    if (type === "sk-ssh-ed25519@openssh.com" && wire.string() === undefined) return `${broken} (no application)`;
  } else if (type === "ssh-rsa") {
    const e = wire.string();
    const n = wire.string();
    if (!e || !n || e.length === 0) return broken;
    const bits = (n.length - (n[0] === 0 ? 1 : 0)) * 8;
    if (bits < 1024) return `${broken} (an RSA modulus of ${bits} bits; OpenSSH refuses keys under 1024)`;
  } else {
    const curve = type.slice("ecdsa-sha2-".length) as keyof typeof EC_POINT;
    if (wire.string()?.toString("latin1") !== curve) return `${broken} (its curve is not ${curve})`;
    const point = wire.string();
    if (!point || point.length !== EC_POINT[curve] || point[0] !== 4) return `${broken} (not an uncompressed ${curve} point)`;
  }
  if (!wire.done) return `${broken} (bytes after the key)`;
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Durations

/** The longest duration accepted: a year. Vault and the providers parse durations into Go's int64 nanoseconds. */
export const MAX_DURATION_SECONDS = 366 * 24 * 3600;

/** Seconds in `90s`, `30m`, `2h`; undefined when not such a duration. */
export function durationSeconds(text: string): number | undefined {
  const match = /^(\d{1,10})([smh])$/.exec(text);
  if (!match) return undefined;
  return Number(match[1]) * { s: 1, m: 60, h: 3600 }[match[2] as "s" | "m" | "h"];
}

// ---------------------------------------------------------------------------------------------
// Nix signing keys

/**
 * A Nix key as nix.conf and `nix-store --generate-binary-cache-key` write it: `<name>:<base64>`,
 * the name up to the first colon (docs/upstream.md). A public key is 32 bytes of ed25519, a
 * secret key 64 (libsodium's seed followed by the public key).
 */
const NIX_KEY = /^([A-Za-z0-9][A-Za-z0-9._-]{0,127}):([A-Za-z0-9+/]+={0,2})$/;

export function parseNixKey(text: string, bytes: 32 | 64): { name: string; key: Buffer } | undefined {
  const m = NIX_KEY.exec(text.trim());
  if (!m) return undefined;
  const key = Buffer.from(m[2], "base64");
  if (key.length !== bytes || key.toString("base64") !== m[2]) return undefined;
  return { name: m[1], key };
}

/** A problem with a Nix public key (`name:base64` of 32 bytes), or undefined. */
export function nixPublicKeyProblem(text: string): string | undefined {
  return parseNixKey(text, 32) ? undefined : "must be a Nix public key, <name>:<base64 of 32 bytes> (nix key convert-secret-to-public < cache-signing-key)";
}
