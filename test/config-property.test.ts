/**
 * Property-based tests (fast-check) for hostile strings:
 *  1. validation: arbitrary Unicode in every string field of a config is either accepted or
 *     refused with `runner-fleet:<key path>: <problem>` lines only, and a forbidden character is
 *     always reported at its own key path;
 *  2. rendering: with arbitrary Unicode in every string that reaches user-data (validation
 *     bypassed), the document is printable ASCII, PyYAML (what cloud-init parses with) reads
 *     back exactly the structure we meant, and `cloud-init schema` accepts a sample of them.
 * PyYAML runs once for all documents (one python3 process); cloud-init schema on a sample.
 */
import { execFile, execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { renderUserData, userDataFiles, type UserDataInput } from "../components/cloud-init";
import { ConfigError } from "../components/config";
import { forbiddenCharacter } from "../components/config-values";
import type { FleetModel, HostModel } from "../components/model";
import { renderPoolsJson } from "../components/pools";
import { baseConfig, modelFrom } from "./support/fixtures";

const VALIDATION_RUNS = 3000;
const RENDER_RUNS = 1500;
const SCHEMA_SAMPLE = 12;
const SEED = 1515;

/** Any Unicode text, lone surrogates included, weighted towards the characters YAML cares about. */
const nasty = fc.oneof(
  { weight: 3, arbitrary: fc.string({ unit: "binary", maxLength: 24 }) },
  { weight: 2, arbitrary: fc.string({ unit: fc.constantFrom("\u2028", "\u2029", "\u0085", "\u0080", "\u009f", "\n", "\r", "\t", "\u0000", "\u007f", "\ufeff", "\ud800", "\u202e", ":", "#", "'", '"', "-", "|", ">", "&", "*", "!", "%", "@", "`", "{", "}", "[", "]", ",", " ", "é", "😀", "\\"), maxLength: 16 }) },
  { weight: 1, arbitrary: fc.string({ unit: "grapheme", maxLength: 24 }) },
);

/** Every place a string sits in the base config, as a path and a setter. */
function stringSlots(value: unknown, at: Array<string | number> = []): Array<Array<string | number>> {
  if (typeof value === "string") return [at];
  if (Array.isArray(value)) return value.flatMap((v, i) => stringSlots(v, [...at, i]));
  if (value && typeof value === "object") return Object.entries(value).flatMap(([k, v]) => stringSlots(v, [...at, k]));
  return [];
}

/** The base config with extra string fields set, so every kind of string field is in play. */
function richConfig(): Record<string, any> {
  const c = baseConfig();
  c.pools.small = { size: "small", labels: ["self-hosted", "linux"], runnerName: "runner", image: "ghcr.io/acme/runner:1", organization: "acme", kernelArgs: "console=ttyS0" };
  c.hosts.metal.tags = ["prod"];
  c.hosts.lab = { provider: "existing", address: "192.0.2.10", arch: "x86_64", vcpus: 8, memoryMib: 16384, roles: ["forgejo-runner"] };
  c.forgejo.labels = ["native-nix:host"];
  c.vault.mount = "ci";
  c.deploy.sshUser = "deploy";
  return c;
}

function keyPathOf(at: Array<string | number>): string {
  return `runner-fleet:${at.map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? p : `.${p}`)).join("")}`;
}

describe("validation of arbitrary Unicode in every string field", () => {
  const slots = stringSlots(richConfig());

  it(`${VALIDATION_RUNS} generated configs: accepted, or refused line by line at key paths; forbidden characters always named`, () => {
    expect(slots.length).toBeGreaterThan(15);
    let refused = 0;
    const started = Date.now();
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(slots.length - 1), nasty), { minLength: 1, maxLength: 4 }), (edits) => {
        const cfg = richConfig();
        const touched = new Map<string, string>();
        for (const [i, text] of edits) {
          const at = slots[i];
          let node: any = cfg;
          for (const p of at.slice(0, -1)) node = node[p];
          node[at.at(-1)!] = text;
          touched.set(keyPathOf(at), text);
        }
        let problems: string[] = [];
        try {
          modelFrom(cfg);
        } catch (err) {
          if (!(err instanceof ConfigError)) throw err;
          problems = err.problems;
        }
        if (problems.length) refused++;
        for (const p of problems) {
          expect(p).toMatch(/^runner-fleet:[^\n]*?: [^\n]+$/);
          // Messages are printable ASCII: no value can break a line or a terminal.
          expect(p).toMatch(/^[\x20-\x7e]+$/);
        }
        for (const [key, text] of touched) {
          if (forbiddenCharacter(text)) expect(problems.some((p) => p.startsWith(`${key}: contains the character U+`)), `${key}\n${problems.join("\n")}`).toBe(true);
        }
      }),
      { numRuns: VALIDATION_RUNS, seed: SEED },
    );
    expect(refused).toBeGreaterThan(VALIDATION_RUNS / 2);
    console.log(`validation property: ${VALIDATION_RUNS} configs (${refused} refused) in ${Date.now() - started} ms`);
  }, 120_000);
});

// ---------------------------------------------------------------------------------------------
// Rendering, with validation bypassed: the document's structure cannot be changed by any input

interface Case {
  userData: string;
  meant: unknown;
}

/** What a host's user-data must read as, with every file's content in plain text. */
function meantDocument(input: UserDataInput): unknown {
  return {
    users: [{ name: input.model.deploy.sshUser, lock_passwd: true, ssh_authorized_keys: input.model.ssh.authorizedKeys }],
    write_files: userDataFiles(input).map((f) => ({ path: f.path, content: f.content, owner: f.owner, permissions: f.permissions })),
    runcmd: [`if [ -x /run/current-system/sw/bin/runner-fleet-bootstrap ]; then /run/current-system/sw/bin/runner-fleet-bootstrap; fi`],
  };
}

/** Strings as UTF-8 can carry them: user-data is bytes, so a lone surrogate cannot reach it. */
const wellFormed = (s: string) => s.replace(/[\ud800-\udfff]/g, (c, i: number, all: string) => {
  const code = c.charCodeAt(0);
  const pair = code < 0xdc00 ? /[\udc00-\udfff]/.test(all[i + 1] ?? "") : /[\ud800-\udbff]/.test(all[i - 1] ?? "");
  return pair ? c : "\ufffd";
});

const hostile = nasty.map(wellFormed);

function hostileModel(base: FleetModel, s: string[]): { model: FleetModel; host: HostModel; roleId: string; wrapped: string } {
  const model = structuredClone(base);
  const at = (i: number) => s[i % s.length];
  model.stack = at(0);
  model.deploy.sshUser = at(1);
  model.ssh.authorizedKeys = [at(2), `ssh-ed25519 AAAA ${at(3)}`];
  model.vault.address = at(4);
  model.vault.mount = at(5);
  model.vault.authMount = at(6);
  model.github = { organization: at(7), url: at(8) };
  model.forgejo = { url: at(9), labels: [at(10)] };
  model.gitea = { url: at(11), labels: [] };
  const pool = model.pools.small;
  Object.assign(pool, { labels: [at(12), at(13)], image: at(14), runnerName: at(15), organization: at(16), kernelArgs: at(17) });
  const host = { ...model.hosts[0], name: at(18), tags: [at(19), at(20)], pools: ["small"] } as HostModel;
  return { model, host, roleId: at(21), wrapped: at(22) };
}

describe("user-data from arbitrary Unicode in every string (validation bypassed)", () => {
  it(`${RENDER_RUNS} documents are printable ASCII, PyYAML reads each as meant, cloud-init schema accepts a sample`, async () => {
    const base = modelFrom(baseConfig());
    const cases: Case[] = [];
    const started = Date.now();
    fc.assert(
      fc.property(fc.array(hostile, { minLength: 23, maxLength: 23 }), fc.constantFrom("aws", "existing"), (strings, provider) => {
        const { model, host, roleId, wrapped } = hostileModel(base, strings);
        const h = provider === "existing" ? { ...host, provider: "existing", address: "192.0.2.1", install: false } as HostModel : host;
        const input: UserDataInput = { host: h, model, poolsJson: renderPoolsJson([model.pools.small]), roleId: roleId || "r", wrappedSecretId: wrapped || "w" };
        if (model.ssh.authorizedKeys.length === 0) return;
        const userData = renderUserData(input);
        expect(userData).toMatch(/^#cloud-config\n[\x20-\x7e\n]*$/);
        cases.push({ userData, meant: meantDocument(input) });
      }),
      { numRuns: RENDER_RUNS, seed: SEED },
    );
    const rendered = Date.now() - started;

    // One python3 for every document: parse as cloud-init does, undo b64/gz+b64, compare.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-prop-"));
    const batch = path.join(dir, "cases.json");
    fs.writeFileSync(batch, JSON.stringify(cases));
    const py = [
      "import base64, gzip, json, sys, yaml",
      "cases = json.load(open(sys.argv[1]))",
      "bad = []",
      "for i, c in enumerate(cases):",
      "    doc = yaml.safe_load(c['userData'])",
      "    for f in doc.get('write_files', []):",
      "        enc = f.pop('encoding', None)",
      "        if enc == 'b64': f['content'] = base64.b64decode(f['content']).decode('utf-8')",
      "        elif enc == 'gz+b64': f['content'] = gzip.decompress(base64.b64decode(f['content'])).decode('utf-8')",
      "    if doc != c['meant']: bad.append(i)",
      "print(json.dumps({'checked': len(cases), 'bad': bad[:5]}))",
    ].join("\n");
    const pyStarted = Date.now();
    const result = JSON.parse(execFileSync("python3", ["-c", py, batch], { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 }));
    expect(result.checked).toBe(cases.length);
    expect(result.bad.map((i: number) => cases[i].userData)).toEqual([]);
    const pyMs = Date.now() - pyStarted;

    // cloud-init's own schema check on a spread-out sample, two at a time.
    const sample = Array.from({ length: SCHEMA_SAMPLE }, (_, i) => cases[Math.floor((i * cases.length) / SCHEMA_SAMPLE)]);
    const files = sample.map((c, i) => {
      const file = path.join(dir, `ud-${i}.yaml`);
      fs.writeFileSync(file, c.userData);
      return file;
    });
    const schemaStarted = Date.now();
    const failures: string[] = [];
    const queue = [...files];
    await Promise.all([0, 1].map(async () => {
      for (let f = queue.shift(); f !== undefined; f = queue.shift()) {
        try {
          const { stdout, stderr } = await promisify(execFile)("cloud-init", ["schema", "--config-file", f]);
          if (!/Valid cloud-config/.test(stdout + stderr) || /deprecat/i.test(stdout + stderr)) failures.push(`${f}: ${stdout}${stderr}`);
        } catch (err: any) {
          failures.push(`${f}: ${err.stdout ?? ""}${err.stderr ?? ""}${err.message}`);
        }
      }
    }));
    expect(failures).toEqual([]);
    console.log(`render property: ${cases.length} documents rendered in ${rendered} ms, PyYAML on all in ${pyMs} ms, cloud-init schema on ${files.length} in ${Date.now() - schemaStarted} ms`);
  }, 300_000);
});
