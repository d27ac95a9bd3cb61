/**
 * The floor `npm run bench` compares the plan against: everything the plan does that the
 * program cannot avoid, and nothing the program chooses.
 *
 *   tsx scripts/bench-floor.ts --config FILE --spec FILE
 *
 * The spec (written by the bench from the plan it just ran) lists the modules the plan loaded
 * and how many resources of each type it registered. The floor starts like scripts/plan.ts
 * (stack file, config, the same mocks), loads the same modules, then registers the same
 * resources: one plain component per component the plan made, and each provider resource
 * with its real SDK class and only its required inputs (a placeholder string each), parented
 * to those components. The SDK's cost per resource depends mostly on its class (every
 * declared input and output becomes an Output), so this is the least any program registering
 * these resources can cost. It writes the same --json document to stdout. What the plan
 * costs beyond this is the program's: input payloads, Output chains and `apply`, dependsOn
 * (on a component it expands to all of that component's children), rendering, validation.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import type * as P from "@pulumi/pulumi";
import { classOf, type ModuleLoad } from "./bench-lib";
import { installMocks, redact } from "./mock-runtime";
import { readStackFile } from "./stack-file";

export interface FloorSpec {
  loads: ModuleLoad[];
  /** Resource type -> how many the plan registered. */
  counts: Record<string, number>;
}

type Ctor = new (name: string, args: Record<string, unknown>, opts: object) => unknown;

async function main() {
  const { values } = parseArgs({ options: { config: { type: "string" }, spec: { type: "string" } } });
  if (!values.config || !values.spec) throw new Error("usage: tsx scripts/bench-floor.ts --config FILE --spec FILE");
  const spec = JSON.parse(fs.readFileSync(values.spec, "utf8")) as FloorSpec;

  const stackConfig = readStackFile(path.resolve(values.config));
  const { resources } = installMocks({ stack: "test", config: stackConfig.config, secretKeys: stackConfig.secretKeys });
  const pulumi = await import("@pulumi/pulumi");

  // Type tokens spell some modules differently from the export (vault `appRole` is `approle`).
  const member = (mod: Record<string, unknown>, key: string) => mod[Object.keys(mod).find((k) => k.toLowerCase() === key.toLowerCase()) ?? key];
  const modules = new Map<string, Record<string, unknown>>();
  function load(l: ModuleLoad): Record<string, unknown> {
    let mod = modules.get(l.specifier);
    // require, as the program's own (compiled-to-CommonJS) imports do: a dynamic import() would
    // take Node's ESM path through tsx's loader hooks and cost more than the program pays.
    if (!mod) modules.set(l.specifier, (mod = require(l.specifier) as Record<string, unknown>));
    // Reading the property is what makes a provider's lazy index load that submodule.
    return (l.property ? member(mod, l.property) : mod) as Record<string, unknown>;
  }
  for (const l of spec.loads) load(l);

  class Group extends pulumi.ComponentResource {
    constructor(name: string, opts?: P.ComponentResourceOptions) {
      super("bench:index:Group", name, {}, opts);
    }
    done() {
      this.registerOutputs({});
    }
  }
  const componentCount = Object.entries(spec.counts).filter(([t]) => classOf(t) === undefined).reduce((a, [, n]) => a + n, 0);
  const root = new Group("floor");
  const groups = [root];
  for (let i = 1; i < componentCount; i++) groups.push(new Group(`group-${i}`, { parent: root }));
  const parents = groups.length > 1 ? groups.slice(1) : groups;

  let made = 0;
  for (const [type, count] of Object.entries(spec.counts).sort(([a], [b]) => a.localeCompare(b))) {
    const where = classOf(type);
    if (!where) continue;
    const ctor = member(load(where.load), where.className) as Ctor | undefined;
    const args: Record<string, unknown> = {};
    for (let i = 0; i < count; i++) {
      const name = `${type.split(":").at(-1)!.toLowerCase()}-${i}`;
      const opts = { parent: parents[made++ % parents.length] };
      if (!ctor) {
        // CustomResource is abstract only to TypeScript; a bare one is what an unknown class costs.
        new (pulumi.CustomResource as unknown as new (t: string, n: string, props: object, o: object) => unknown)(type, name, {}, opts);
        continue;
      }
      // Generated constructors check required inputs before registering anything: fill each
      // one they ask for with a placeholder, once per type.
      for (let attempt = 0; ; attempt++) {
        try {
          new ctor(name, args, opts);
          break;
        } catch (err) {
          const missing = /Missing required property '([^']+)'/.exec((err as Error).message)?.[1];
          if (!missing || attempt > 50) throw err;
          args[missing] = "bench";
        }
      }
    }
  }
  for (const g of groups) g.done();
  await pulumi.runtime.disconnect();

  const doc = {
    resources: resources.map((r) => ({ urn: r.urn, type: r.type, name: r.name, inputs: redact(r.inputs) })),
    outputs: {},
  };
  process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
}

main().catch((err) => {
  process.stderr.write(`bench-floor failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(2);
});
