/**
 * npm run plan -- --stack NAME | --config FILE [--json] [--out DIR]
 *
 * Runs the real index.ts under Pulumi's mock runtime with a stack's config: no network, no
 * Pulumi CLI, no cloud credentials. Prints the hosts, what would be created and any warnings;
 * --json prints every resource with its inputs (secrets as "[secret]"); --out writes the files
 * each host would receive and inventory.json.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { capacityOf } from "../components/capacity";
import { OFFLINE_ENV } from "../components/load";
import type { FleetModel } from "../components/model";
import { installMocks, redact, reveal, settle, type RecordedResource } from "./mock-runtime";
import { readStackFile } from "./stack-file";

const ROOT = path.resolve(__dirname, "..");
const USAGE = "usage: npm run plan -- (--stack NAME | --config FILE) [--json] [--out DIR]";

interface Options {
  stack: string;
  configFile: string;
  json: boolean;
  out?: string;
}

function fail(message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(1);
}

function parseOptions(argv: string[]): Options {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        stack: { type: "string" },
        config: { type: "string" },
        json: { type: "boolean", default: false },
        out: { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
    }));
  } catch (err) {
    fail(`${(err as Error).message}\n${USAGE}`);
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  if (!values.stack === !values.config) fail(`give exactly one of --stack and --config\n${USAGE}`);
  const configFile = values.config ? path.resolve(values.config) : path.join(ROOT, `Pulumi.${values.stack}.yaml`);
  if (!fs.existsSync(configFile)) fail(`${configFile}: no such stack file`);
  // A config file named Pulumi.<stack>.yaml plans as that stack.
  const stack = values.stack ?? /^Pulumi\.(.+)\.ya?ml$/.exec(path.basename(configFile))?.[1] ?? "plan";
  return { stack, configFile, json: values.json ?? false, ...(values.out ? { out: path.resolve(values.out) } : {}) };
}

// ---------------------------------------------------------------------------------------------
// Output

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((cell, i) => cell.padEnd(widths[i])).join("  ").trimEnd()).join("\n");
}

async function main() {
  const opts = parseOptions(process.argv.slice(2));
  let stackConfig;
  try {
    stackConfig = readStackFile(opts.configFile);
  } catch (err) {
    fail(`${opts.configFile}: ${(err as Error).message}`);
  }
  for (const key of stackConfig.unsetSecrets) {
    process.stderr.write(`note: ${key} is not set in ${path.basename(opts.configFile)}; this offline plan uses a marked placeholder. Before pulumi preview or up: pulumi config set --secret ${key}\n`);
  }
  // Images need only the hash in their store path: nothing is built or uploaded here.
  process.env[OFFLINE_ENV] = "1";
  const { resources } = installMocks({ stack: opts.stack, config: stackConfig.config, secretKeys: stackConfig.secretKeys });

  // Only now may modules that create resources be loaded.
  const pulumi = await import("@pulumi/pulumi");
  const warnings: string[] = [];
  const log = pulumi.log as { warn: (msg: string) => Promise<void> };
  log.warn = async (msg: string) => {
    warnings.push(msg);
  };

  let program: Record<string, unknown>;
  try {
    program = await import("../index");
  } catch (err) {
    if (pulumi.RunError.isInstance(err)) fail((err as Error).message);
    throw err;
  }
  const outputs: Record<string, { value: unknown; secret: boolean }> = {};
  for (const [key, value] of Object.entries(program)) {
    if (key === "default" || key === "__esModule") continue;
    outputs[key] = await settle(value);
  }
  await pulumi.runtime.disconnect();

  if (opts.out) writeFiles(opts.out, outputs);

  if (opts.json) {
    const doc = {
      resources: resources.map((r) => ({ urn: r.urn, type: r.type, name: r.name, inputs: redact(r.inputs) })),
      outputs: Object.fromEntries(Object.entries(outputs).map(([k, o]) => [k, o.secret ? "[secret]" : redact(o.value)])),
    };
    process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
    for (const w of warnings) process.stderr.write(`warning: ${w}\n`);
    return;
  }
  // The table reads the model itself; only the human output pays for building it again.
  const { loadFleet } = await import("../components/load");
  const { model } = loadFleet();
  process.stdout.write(summary(opts, model, resources, warnings, (outputs.deployWaves?.value ?? []) as string[][]));
}

function writeFiles(dir: string, outputs: Record<string, { value: unknown; secret: boolean }>) {
  const perHost = (key: string) => (reveal(outputs[key]?.value) ?? {}) as Record<string, string>;
  const pools = perHost("pools");
  const userData = perHost("userData");
  for (const host of Object.keys(pools)) {
    const hostDir = path.join(dir, "hosts", host);
    fs.mkdirSync(hostDir, { recursive: true });
    fs.writeFileSync(path.join(hostDir, "pools.json"), pools[host]);
    if (userData[host] !== undefined) fs.writeFileSync(path.join(hostDir, "user-data.yaml"), userData[host]);
  }
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, "inventory.json"), String(outputs.inventory?.value ?? ""));
}

function summary(
  opts: Options,
  model: FleetModel,
  resources: RecordedResource[],
  warnings: string[],
  waves: string[][],
): string {
  const rows = [["HOST", "PROVIDER", "TYPE", "ARCH", "KVM", "ROLES", "POOLS", "RUNNERS", "vCPU used/avail", "MiB used/avail"]];
  for (const host of model.hosts) {
    const pools = host.pools.map((p) => model.pools[p]);
    const c = capacityOf(host, pools, model.capacity);
    const type = host.provider === "aws" ? host.instanceType
      : host.provider === "hetzner" ? host.serverType
      : host.provider === "existing" ? `${host.vcpus} vCPU/${host.memoryMib} MiB`
      : host.size;
    rows.push([
      host.name, host.provider, type, host.arch, host.kvm ? "yes" : "no", host.roles.join(","),
      host.pools.join(",") || "-", String(c.maxRunners),
      pools.length ? `${c.runnerVcpus}/${c.availableVcpus}` : `-/${c.availableVcpus}`,
      pools.length ? `${c.runnerMemoryMib}/${c.availableMemoryMib}` : `-/${c.availableMemoryMib}`,
    ]);
  }
  const byType = new Map<string, number>();
  for (const r of resources) byType.set(r.type, (byType.get(r.type) ?? 0) + 1);
  const typeRows = [["RESOURCE TYPE", "COUNT"], ...[...byType].sort(([a], [b]) => a.localeCompare(b)).map(([t, n]) => [t, String(n)])];
  const lines = [
    `runner-fleet plan: stack ${opts.stack} (${path.relative(process.cwd(), opts.configFile) || opts.configFile}), offline under Pulumi mocks`,
    "",
    table(rows),
    "",
    `deploy: ${model.deploy.tool}, ${waves.length} wave${waves.length === 1 ? "" : "s"} of up to ${model.deploy.batchSize} (a failed wave stops the rollout)`,
    ...waves.map((wave, i) => `  ${i + 1}. ${wave.join(", ")}`),
    "",
    `${resources.length} resources:`,
    table(typeRows),
    "",
    warnings.length ? `warnings (${warnings.length}):\n${warnings.map((w) => `  - ${w}`).join("\n")}` : "warnings: none",
    "",
  ];
  return lines.join("\n");
}

main().catch((err) => {
  process.stderr.write(`plan failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(2);
});
