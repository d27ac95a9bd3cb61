/**
 * Fuzzing the validator with mutated copies of the committed stack files (Pulumi.dev.yaml and
 * Pulumi.prod.yaml). Each case deletes, replaces, renames or wraps parts of the config with
 * hostile values (wrong types, huge and non-finite numbers, prototype names, path traversal,
 * line separators, secure values at plain keys). The contract, on every case:
 *  - either a model, or a ConfigError whose every line is `runner-fleet:<key path>: <problem>`
 *    in printable ASCII; never another exception, never a stack trace;
 *  - quickly (no hang): each case under a second;
 *  - no message quotes a secret: neither the secret keys' values nor a decrypted secure value
 *    at a plain key.
 * A few mutated files also go through the real `npm run plan`: exit 1, the same lines, no trace;
 * and a few mutations the validator accepted plan with exit 0 (no component crashes on them).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import fc from "fast-check";
import { stringify } from "yaml";
import { describe, expect, it } from "vitest";
import { buildFleetModel, ConfigError, PROJECT, SECRET_KEYS } from "../components/config";
import { projectConfig } from "../components/load";
import { parseStackFile } from "../scripts/stack-file";
import { ROOT, runPlan } from "./support/fixtures";

const RUNS_PER_STACK = 2500;
const PLAN_CASES = 4;
const ACCEPTED_PLAN_CASES = 4;
const SEED = 1515;
const DECRYPTED = "PLANTED-DECRYPTED-VALUE-0b9e";
const SECRET_VALUE = "PLANTED-SECRET-KEY-VALUE-51aa";
const LINE = /^runner-fleet:[^\n]*?: [\x20-\x7e]+$/;

function stack(name: string): { raw: Record<string, unknown>; aws?: string; azure?: string } {
  const file = path.join(ROOT, `Pulumi.${name}.yaml`);
  const { config } = parseStackFile(fs.readFileSync(file, "utf8"), file);
  return { raw: projectConfig(config), aws: config["aws:region"], azure: config["azure-native:location"] };
}

type Path = Array<string | number>;

function paths(value: unknown, at: Path = []): Path[] {
  const here = at.length ? [at] : [];
  if (Array.isArray(value)) return [...here, ...value.flatMap((v, i) => paths(v, [...at, i]))];
  if (value && typeof value === "object") return [...here, ...Object.entries(value).flatMap(([k, v]) => paths(v, [...at, k]))];
  return here;
}

const hostileValue = fc.oneof(
  fc.constantFrom<unknown>(
    null, true, false, 0, -1, 1.5, 1e15, 2 ** 53, Number.MAX_VALUE, -0, ".inf", ".nan", "", " ", "0", "no",
    "constructor", "__proto__", "valueOf", "../../../../tmp/x.vhd", "/etc/passwd", "999.1.1.1", "0.0.0.0/0", "::/0",
    "http://example.org", "https://u:p@example.org", "x\u2028bootcmd: [id]", "\u0085", "\u0080", "\ud800", "a".repeat(5000),
    [], {}, [null], { secure: "v1:AAAA:BBBB" }, "meta", "99999999999h", "0s", "us-east-1a", "mars-1",
  ),
  fc.string({ unit: "binary", maxLength: 12 }),
  fc.integer(),
  fc.double(),
);

interface Mutation {
  raw: Record<string, unknown>;
  secureKeys: string[];
}

const mutation = (base: Record<string, unknown>) => {
  const all = paths(base);
  return fc.array(
    fc.tuple(fc.constantFrom("delete", "replace", "rename", "secure-section", "secret-plain"), fc.nat(all.length - 1), hostileValue,
      fc.constantFrom("constructor", "__proto__", "valueOf", "meta", "x y", "Upper", "a\u2028b", "")),
    { minLength: 1, maxLength: 3 },
  ).map((ops): Mutation => {
    const raw = structuredClone(base);
    const secureKeys: string[] = [];
    for (const [op, index, value, name] of ops) {
      const at = all[index];
      let parent: any = raw;
      for (const p of at.slice(0, -1)) parent = parent?.[p];
      if (parent === null || typeof parent !== "object") continue;
      const last = at.at(-1)!;
      if (op === "delete") {
        if (Array.isArray(parent)) parent.splice(Number(last), 1);
        else delete parent[last];
      } else if (op === "replace") {
        parent[last] = value;
      } else if (op === "rename" && !Array.isArray(parent) && Object.hasOwn(parent, last)) {
        const v = parent[last];
        delete parent[last];
        Object.defineProperty(parent, name, { value: v, enumerable: true, writable: true, configurable: true });
      } else if (op === "secure-section") {
        // What the Pulumi CLI hands the program for a secure value: the plaintext, key marked secret.
        const key = String(at[0]);
        raw[key] = DECRYPTED;
        secureKeys.push(key);
      } else if (op === "secret-plain") {
        raw[Object.values(SECRET_KEYS)[index % 3]] = SECRET_VALUE;
      }
    }
    return { raw, secureKeys };
  });
};

function assertContract(m: Mutation, ctx: { aws?: string; azure?: string }) {
  const started = Date.now();
  let problems: string[] = [];
  try {
    buildFleetModel(m.raw, {
      stack: "fuzz", secretsSet: new Set(Object.values(SECRET_KEYS)), awsRegion: ctx.aws, azureLocation: ctx.azure,
      baseDir: ROOT, requireImageFiles: false, secureKeys: new Set(m.secureKeys),
    });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw new Error(`not a ConfigError: ${(err as Error)?.stack ?? String(err)}`);
    problems = err.problems;
  }
  expect(Date.now() - started).toBeLessThan(1000);
  for (const p of problems) {
    expect(p).toMatch(LINE);
    expect(p).not.toContain(DECRYPTED);
    expect(p).not.toContain(SECRET_VALUE);
  }
  for (const key of m.secureKeys) {
    // (A later operation may have deleted the key again.)
    if (!Object.values(SECRET_KEYS).includes(key) && Object.hasOwn(m.raw, key)) expect(problems).toContainEqual(expect.stringMatching(new RegExp(`^${PROJECT}:${key}: holds a secret`)));
  }
  return problems.length;
}

describe("fuzzing the validator with mutated committed stacks", () => {
  for (const name of ["dev", "prod"]) {
    it(`Pulumi.${name}.yaml: ${RUNS_PER_STACK} mutations keep the contract`, () => {
      const base = stack(name);
      let refused = 0;
      const started = Date.now();
      fc.assert(fc.property(mutation(base.raw), (m) => {
        if (assertContract(m, base) > 0) refused++;
      }), { numRuns: RUNS_PER_STACK, seed: SEED });
      expect(refused).toBeGreaterThan(RUNS_PER_STACK / 2);
      console.log(`fuzz ${name}: ${RUNS_PER_STACK} mutations (${refused} refused) in ${Date.now() - started} ms`);
    }, 180_000);
  }

  it(`${ACCEPTED_PLAN_CASES} accepted mutations also plan: what validation lets through never crashes a component`, async () => {
    const base = stack("prod");
    const accepted: Record<string, unknown>[] = [];
    fc.assert(fc.property(mutation(base.raw), (m) => {
      if (accepted.length < ACCEPTED_PLAN_CASES && m.secureKeys.length === 0 && assertContract(m, base) === 0) accepted.push(m.raw);
    }), { numRuns: 600, seed: SEED + 1 });
    expect(accepted.length).toBe(ACCEPTED_PLAN_CASES);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-fuzz-ok-"));
    for (const [i, raw] of accepted.entries()) {
      const doc: Record<string, unknown> = { "aws:region": base.aws, "azure-native:location": base.azure };
      for (const [k, v] of Object.entries(raw)) doc[`${PROJECT}:${k}`] = v;
      for (const k of Object.values(SECRET_KEYS)) doc[`${PROJECT}:${k}`] = `placeholder for ${k}`;
      const file = path.join(dir, `Pulumi.ok${i}.yaml`);
      fs.writeFileSync(file, stringify({ config: doc }));
      const r = await runPlan(["--config", file]);
      expect(r.code, `${file}\n${r.stderr}`).toBe(0);
    }
  }, 300_000);

  it(`${PLAN_CASES} mutated stack files through npm run plan: exit 1, key-path lines, no trace, no secret`, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-fuzz-"));
    const text = fs.readFileSync(path.join(ROOT, "Pulumi.prod.yaml"), "utf8");
    const edits: Array<(t: string) => string> = [
      (t) => t.replace("batchSize: 2", "batchSize: .inf").replace("address: 192.0.2.10", "address: 999.1.1.1"),
      (t) => t.replace("mount: ci\n", "mount: ci\n    wrapTtl: 0s\n").replace("pools: [default, medium]", "pools: [constructor, __proto__]"),
      (t) => t.replace("runner-fleet:vault:\n    address: https://vault.acme.example:8200\n    mount: ci\n", "runner-fleet:vault:\n    secure: v1:cHJvZHNhbHQ=:UExBTlRFRA==\n"),
      (t) => t.replace("aws:region: eu-central-1", "aws:region: mars-1").replace("labels: [self-hosted, fireactions, linux, x64]", "labels: [\"x\\u2028bootcmd: [id]\"]"),
    ];
    for (const [i, edit] of edits.entries()) {
      const edited = edit(text);
      expect(edited, `edit ${i} changed nothing`).not.toBe(text);
      const file = path.join(dir, `Pulumi.fuzz${i}.yaml`);
      fs.writeFileSync(file, edited);
      const r = await runPlan(["--config", file]);
      expect(r.code, r.stderr).toBe(1);
      // The committed files carry no secrets: the plan first notes each placeholder it uses.
      const all = r.stderr.split("\n").filter((l) => l && !/^npm (warn|notice)/.test(l));
      const notes = all.filter((l) => l.startsWith("note: "));
      for (const n of notes) expect(n).toMatch(/^note: runner-fleet:\w+ is not set in Pulumi\.fuzz\d\.yaml; this offline plan uses a marked placeholder\./);
      const lines = all.filter((l) => !l.startsWith("note: "));
      expect(lines[0]).toMatch(/^invalid stack config \(\d+ problems?\):$/);
      for (const l of lines.slice(1)) expect(l).toMatch(LINE);
      expect(r.stderr).not.toMatch(/\n\s+at |plan failed/);
      expect(r.stderr).not.toContain("UExBTlRFRA");
    }
    expect(edits).toHaveLength(PLAN_CASES);
  }, 300_000);
});
