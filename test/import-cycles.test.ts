// No import cycles among the program's modules (type-only imports count too): a newcomer can
// read components/ from the leaves up, and no module sees another half-initialised.
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = path.resolve(__dirname, "..");

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) return sources(full);
    return e.name.endsWith(".ts") ? [full] : [];
  });
}

/** Relative imports and re-exports of one file, resolved to files. */
function localImports(file: string, text: string): string[] {
  const found: string[] = [];
  for (const m of text.matchAll(/^\s*(?:import|export)\b[^;]*?\bfrom\s+"(\.{1,2}\/[^"]+)"/gms)) {
    const base = path.resolve(path.dirname(file), m[1]);
    const target = [`${base}.ts`, path.join(base, "index.ts")].find((f) => fs.existsSync(f));
    if (target) found.push(target);
  }
  return found;
}

/** Every cycle as a list of files, found by depth-first search. */
function cycles(graph: Map<string, string[]>): string[][] {
  const out: string[][] = [];
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const visit = (node: string) => {
    state.set(node, "open");
    stack.push(node);
    for (const next of graph.get(node) ?? []) {
      if (state.get(next) === "open") out.push([...stack.slice(stack.indexOf(next)), next]);
      else if (!state.has(next)) visit(next);
    }
    stack.pop();
    state.set(node, "done");
  };
  for (const node of graph.keys()) if (!state.has(node)) visit(node);
  return out;
}

describe("import graph", () => {
  it("finds a cycle when there is one", () => {
    const g = new Map([["a", ["b"]], ["b", ["c"]], ["c", ["a"]], ["d", ["a"]]]);
    expect(cycles(g)).toEqual([["a", "b", "c", "a"]]);
    expect(cycles(new Map([["a", ["b"]], ["b", []]]))).toEqual([]);
  });

  it("reads type-only imports and re-exports", () => {
    const file = path.join(ROOT, "components", "x.ts");
    const text = 'import type { A } from "./config";\nexport { B } from "./model";\nimport {\n  C,\n} from "./pools";\n';
    expect(localImports(file, text).map((f) => path.relative(ROOT, f))).toEqual(["components/config.ts", "components/model.ts", "components/pools.ts"]);
  });

  it("components/ and index.ts have none", () => {
    const files = [path.join(ROOT, "index.ts"), ...sources(path.join(ROOT, "components"))];
    const graph = new Map(files.map((f) => [f, localImports(f, fs.readFileSync(f, "utf8"))]));
    const rel = cycles(graph).map((c) => c.map((f) => path.relative(ROOT, f)).join(" -> "));
    expect(rel).toEqual([]);
  });
});
