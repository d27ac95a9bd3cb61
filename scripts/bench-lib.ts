/**
 * Pure helpers for `npm run bench`: reading a plan's --json output without holding it in
 * memory, counting resources per host, deciding which provider modules the floor must load,
 * parsing GNU time, and summarising a V8 CPU profile by package. Tested in test/bench.test.ts.
 */
import * as fs from "node:fs";
import * as readline from "node:readline";

// ---------------------------------------------------------------------------------------------
// Plan output

export interface PlanSummary {
  /** Every registered resource, components included (what the plan counts). */
  total: number;
  /** Component resources: our own `runner-fleet:*` types. */
  components: number;
  /** Provider (custom) resources: everything else. */
  custom: number;
  names: string[];
  types: string[];
}

/**
 * `plan --json` prints `JSON.stringify(doc, null, 2)`, so each resource's own fields sit at
 * exactly six spaces of indentation; nested inputs are deeper. Matching that indentation reads
 * a plan of any size line by line instead of parsing hundreds of megabytes at once.
 */
const FIELD = /^ {6}"(urn|type|name)": ("(?:[^"\\]|\\.)*")/;

export function planFieldOf(line: string): { field: "urn" | "type" | "name"; value: string } | undefined {
  const m = FIELD.exec(line);
  return m ? { field: m[1] as "urn" | "type" | "name", value: JSON.parse(m[2]) as string } : undefined;
}

export function summarisePlanLines(lines: Iterable<string>): PlanSummary {
  const names: string[] = [];
  const types: string[] = [];
  for (const line of lines) {
    const f = planFieldOf(line);
    if (f?.field === "name") names.push(f.value);
    else if (f?.field === "type") types.push(f.value);
  }
  if (names.length !== types.length) throw new Error(`plan output is inconsistent: ${names.length} names, ${types.length} types`);
  const components = types.filter(isOwnComponent).length;
  return { total: types.length, components, custom: types.length - components, names, types };
}

export async function summarisePlanFile(file: string): Promise<PlanSummary> {
  const lines: string[] = [];
  const rl = readline.createInterface({ input: fs.createReadStream(file), crlfDelay: Infinity });
  // Keep only the lines that can matter: the six-space-indented fields.
  for await (const line of rl) if (line.startsWith('      "') && !line.startsWith('       ')) lines.push(line);
  return summarisePlanLines(lines);
}

export function isOwnComponent(type: string): boolean {
  return type.startsWith("runner-fleet:");
}

/**
 * Resources per host: a resource belongs to the host whose name it starts with, followed by the
 * end of the name or a separator (so `aws-0001` does not claim `aws-00010-x`). Returns the count
 * for each host in `hosts` (0 when none).
 */
export function resourcesPerHost(names: string[], hosts: string[]): Map<string, number> {
  const counts = new Map(hosts.map((h) => [h, 0]));
  // Longest names first: a resource belongs to the most specific host.
  const sorted = [...hosts].sort((a, b) => b.length - a.length);
  for (const name of names) {
    const owner = sorted.find((h) => name === h || (name.startsWith(h) && !/[a-z0-9]/i.test(name[h.length])));
    if (owner) counts.set(owner, (counts.get(owner) ?? 0) + 1);
  }
  return counts;
}

// ---------------------------------------------------------------------------------------------
// What the floor loads

/**
 * The provider modules a plan touched, from the resource types it registered (`pkg:module/...`)
 * and the @pulumi imports in the program's source. Returned as what the floor does: import the
 * package (azure-native by subpath, as the program must) and read the submodule property,
 * which is what makes a provider's lazy index load that module.
 */
export interface ModuleLoad {
  /** What to import: `@pulumi/aws`, `@pulumi/azure-native/compute`. */
  specifier: string;
  /** A property to read on it (a lazily loaded submodule such as `ec2`), if any. */
  property?: string;
}

export function modulesToLoad(types: Iterable<string>, sourceImports: Iterable<string>): ModuleLoad[] {
  const loads = new Map<string, ModuleLoad>();
  const add = (l: ModuleLoad) => loads.set(`${l.specifier}#${l.property ?? ""}`, l);
  for (const spec of sourceImports) {
    if (spec === "@pulumi/azure-native") throw new Error("the program imports @pulumi/azure-native from its root; import a subpath instead");
    add({ specifier: spec });
  }
  for (const type of types) {
    const [pkg, mod] = type.split(":");
    if (!pkg || mod === undefined || isOwnComponent(type) || pkg === "pulumi") continue;
    const module = mod.split("/")[0];
    if (pkg === "azure-native") add({ specifier: `@pulumi/azure-native/${module}` });
    else if (module === "index" || module === "") add({ specifier: `@pulumi/${pkg}` });
    else add({ specifier: `@pulumi/${pkg}`, property: module });
  }
  return [...loads.values()].sort((a, b) => `${a.specifier}#${a.property ?? ""}`.localeCompare(`${b.specifier}#${b.property ?? ""}`));
}

/**
 * Where the SDK class for a resource type lives: `aws:ec2/instance:Instance` is `Instance` in
 * `@pulumi/aws`, submodule `ec2`; `pulumi:providers:aws` is `@pulumi/aws`'s `Provider`.
 * Undefined for our own components and anything that is not a provider resource.
 */
export function classOf(type: string): { load: ModuleLoad; className: string } | undefined {
  const [pkg, mod, name] = type.split(":");
  if (!pkg || mod === undefined || !name || isOwnComponent(type)) return undefined;
  if (pkg === "pulumi") return mod === "providers" ? { load: { specifier: name === "azure-native" ? "@pulumi/azure-native/provider" : `@pulumi/${name}` }, className: "Provider" } : undefined;
  const module = mod.split("/")[0];
  if (pkg === "azure-native") return { load: { specifier: `@pulumi/azure-native/${module}` }, className: name };
  if (module === "index" || module === "") return { load: { specifier: `@pulumi/${pkg}` }, className: name };
  return { load: { specifier: `@pulumi/${pkg}`, property: module }, className: name };
}

/** Value imports of `@pulumi/*` in TypeScript source (type-only imports load nothing). */
export function pulumiImports(source: string): string[] {
  const found = new Set<string>();
  const re = /^\s*import\s+(?!type\s)[^;]*?from\s+["'](@pulumi\/[^"']+)["']/gm;
  for (const m of source.matchAll(re)) found.add(m[1]);
  for (const m of source.matchAll(/(?:require|import)\(\s*["'](@pulumi\/[^"']+)["']\s*\)/g)) found.add(m[1]);
  return [...found].sort();
}

// ---------------------------------------------------------------------------------------------
// Measurements

/** `/usr/bin/time -f "%e %M"`: wall seconds and peak resident set in KiB (last line). */
export function parseGnuTime(text: string): { wallSeconds: number; maxRssKib: number } {
  const line = text.trim().split("\n").filter((l) => /^\d+(\.\d+)? \d+$/.test(l.trim())).at(-1);
  if (!line) throw new Error(`cannot read GNU time output: ${JSON.stringify(text.slice(-200))}`);
  const [wall, rss] = line.trim().split(" ");
  return { wallSeconds: Number(wall), maxRssKib: Number(rss) };
}

export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

// ---------------------------------------------------------------------------------------------
// CPU profile

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
export interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Where a function lives, for grouping: ours, the SDK, a provider, the TypeScript loader, ... */
export function categoryOf(url: string, functionName: string, root: string): string {
  if (!url) {
    if (functionName === "(garbage collector)") return "V8: garbage collector";
    if (functionName === "(idle)") return "idle (waiting on I/O or timers)";
    if (functionName === "(program)") return "V8: (program) native code";
    return "node/V8 built-ins";
  }
  const file = url.replace(/^file:\/\//, "");
  const nm = file.lastIndexOf("/node_modules/");
  if (nm >= 0) {
    const parts = file.slice(nm + "/node_modules/".length).split("/");
    const pkg = parts[0].startsWith("@") ? `${parts[0]}/${parts[1]}` : parts[0];
    if (pkg === "@pulumi/pulumi") return "@pulumi/pulumi (SDK)";
    if (pkg.startsWith("@pulumi/")) return `providers (${pkg})`;
    if (pkg === "tsx" || pkg === "esbuild" || pkg.startsWith("@esbuild/")) return "tsx/esbuild (TypeScript loader)";
    if (["@grpc/grpc-js", "google-protobuf", "@protobufjs/base64", "protobufjs", "semver", "@opentelemetry/api", "source-map-support", "@logdna/tail-file", "minimist"].includes(pkg) || pkg.startsWith("@opentelemetry/")) {
      return `SDK dependencies (${pkg})`;
    }
    return `libraries (${pkg})`;
  }
  if (file.startsWith("node:") || !file.startsWith("/")) return "node built-ins";
  if (file.startsWith(root)) return "runner-fleet (our code)";
  return "other";
}

export interface ProfileSummary {
  totalMs: number;
  byCategory: Array<{ category: string; ms: number; share: number }>;
  topFunctions: Array<{ fn: string; where: string; category: string; ms: number }>;
}

/** Self time per function and per category, from sample counts weighted by their time deltas. */
export function summariseProfile(profile: CpuProfile, root: string, top = 20): ProfileSummary {
  const self = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    self.set(profile.samples[i], (self.get(profile.samples[i]) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const byNode = new Map(profile.nodes.map((n) => [n.id, n]));
  const byCategory = new Map<string, number>();
  const byFunction = new Map<string, { fn: string; where: string; category: string; ms: number }>();
  let total = 0;
  for (const [id, us] of self) {
    const node = byNode.get(id);
    if (!node) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const category = categoryOf(url, functionName, root);
    const ms = us / 1000;
    total += ms;
    byCategory.set(category, (byCategory.get(category) ?? 0) + ms);
    const short = url.replace(/^file:\/\//, "").replace(/^.*\/node_modules\//, "").replace(`${root}/`, "");
    const where = url ? `${short}:${lineNumber + 1}` : "";
    const key = `${functionName}@${where}`;
    const entry = byFunction.get(key) ?? { fn: functionName || "(anonymous)", where, category, ms: 0 };
    entry.ms += ms;
    byFunction.set(key, entry);
  }
  return {
    totalMs: total,
    byCategory: [...byCategory].map(([category, ms]) => ({ category, ms, share: total ? ms / total : 0 })).sort((a, b) => b.ms - a.ms),
    topFunctions: [...byFunction.values()].sort((a, b) => b.ms - a.ms).slice(0, top),
  };
}

/** Fixed-width text table. */
export function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join("  ").trimEnd()).join("\n");
}
