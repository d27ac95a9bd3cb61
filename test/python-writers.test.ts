// The checks nixpkgs' script writers run when a host's system is built, run here on every
// writer call in nix/ (found by evaluating each file that names a writer, see
// test/support/writer-calls.nix), on the script exactly as the writer assembles it:
//   writers.writePython3 / writePython3Bin: `#! <python>` line, then the script, then
//     `flake8 --show-source [--ignore <flakeIgnore>] <file>` (pkgs/build-support/writers/scripts.nix,
//     makeScriptWriter and makePythonWriter), with the flake8 nixpkgs ships (requirements-flake8.txt);
//   writeShellApplication: `#!<bash>`, `set -o` lines, `export PATH=...`, the text, then
//     `bash -n` and shellcheck with its exclude/extra flags (trivial-builders, writeShellApplication);
//   writeShellScript / writeShellScriptBin: `#!<bash>` and the text, then `bash -n` only.
// shellcheck is Debian's (docs/upstream.md, #22, says why not nixpkgs' exact build).
import { describe, it, expect, beforeAll } from "vitest";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { pinnedVenvPython } from "./support/pinned-venv";

const root = resolve(__dirname, "..");
const nixDir = join(root, "nix");
const REQUIREMENTS = join(root, "test", "support", "requirements-flake8.txt");
// What the writers put on line 1 (python3.interpreter, runtimeShell); only the form matters to the checks.
const PYTHON = "/nix/store/00000000000000000000000000000000-python3-3.13.9/bin/python3.13";
const BASH = "/nix/store/00000000000000000000000000000000-bash-5.3p3/bin/bash";
const WRITERS = /\b(writePython3Bin|writePython3|writeShellApplication|writeShellScriptBin|writeShellScript)\b/g;

type Call =
  | { kind: "python3"; name: string; bin: boolean; flakeIgnore: string[]; doCheck: boolean; content: string }
  | { kind: "shellScript"; name: string; bin: boolean; text: string }
  | {
      kind: "shellApplication"; name: string; text: string; runtimeInputs: string[]; excludeShellChecks: string[];
      extraShellCheckFlags: string[]; bashOptions: string[]; runtimeEnv: unknown; inheritPath: boolean; checkPhase: string | null;
    };

function nixFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) return nixFiles(path);
    return entry.endsWith(".nix") ? [path] : [];
  });
}

/** Writer names applied in a file's code (comments dropped): `writePython3Bin "x"`, `writeShellApplication {`. */
function writerApplications(file: string): string[] {
  const code = readFileSync(file, "utf8").split("\n").map((l) => l.replace(/(^|\s)#.*$/, "")).join("\n");
  return [...code.matchAll(new RegExp(`${WRITERS.source}\\s*(["{(]|[a-z])`, "g"))].map((m) => m[1]);
}

const callsOf = new Map<string, Call[]>();

/** Every writer call `file` makes, from the trace lines writer-calls.nix prints (evaluated once per file). */
function writerCalls(file: string, scratch: string): Call[] {
  if (!callsOf.has(file)) callsOf.set(file, evalWriterCalls(file, scratch));
  return callsOf.get(file)!;
}

function evalWriterCalls(file: string, scratch: string): Call[] {
  const r = spawnSync("nix-instantiate", ["--eval", "--strict", "--expr",
    `import ${join(root, "test", "support", "writer-calls.nix")} { file = ${file}; inventory = ${join(nixDir, "inventory.example.json")}; }`], {
    env: { ...process.env, NIX_REMOTE: "dummy://", HOME: scratch, NIX_CONFIG: "" }, encoding: "utf8", maxBuffer: 64 << 20,
  });
  if (r.status !== 0) throw new Error(`${relative(root, file)}: evaluation failed: ${r.stderr}`);
  const seen = new Map<string, Call>();
  for (const line of r.stderr.split("\n")) {
    const m = line.match(/^trace: RUNNER_FLEET_WRITER (.*)$/);
    if (m) seen.set(m[1], JSON.parse(m[1]));
  }
  return [...seen.values()];
}

/** The file makeScriptWriter writes to $out before it runs the check. */
function assemblePython(call: { content: string }): string {
  return `#! ${PYTHON}\n${call.content}`;
}

/** writeShellApplication's `text` (trivial-builders/default.nix). */
function assembleShellApplication(call: Extract<Call, { kind: "shellApplication" }>): string {
  if (call.runtimeEnv !== null) throw new Error(`${call.name}: runtimeEnv is not assembled by this test yet`);
  const path = [...(call.runtimeInputs.length ? [call.runtimeInputs.map((p) => `${p}/bin`).join(":")] : []), ...(call.inheritPath ? ["$PATH"] : [])];
  return `#!${BASH}\n${call.bashOptions.map((o) => `set -o ${o}`).join("\n")}\n\nexport PATH="${path.join(":")}"\n\n${call.text}\n`;
}

/** flake8 argv as makePythonWriter builds it: --ignore replaces flake8's default ignore list. */
function flake8Args(call: { flakeIgnore: string[] }, file: string): string[] {
  return ["--show-source", ...(call.flakeIgnore.length ? ["--ignore", call.flakeIgnore.join(",")] : []), file];
}

let scratch = "";
let python = "";
const files = nixFiles(nixDir).filter((f) => writerApplications(f).length > 0);

beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), "writers-"));
  python = pinnedVenvPython(REQUIREMENTS);
}, 180_000);

/** Run a check in an empty directory (no setup.cfg/tox.ini to pick up, as in the build sandbox). */
function check(cmd: string, args: string[]): { status: number | null; out: string } {
  if (cmd === "flake8") [cmd, args] = [python, ["-m", "flake8", ...args]];
  const r = spawnSync(cmd, args, { cwd: scratch, encoding: "utf8" });
  if (r.error) throw r.error;
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

describe("the checks nixpkgs' writers run at build time", () => {
  it("run the flake8 version nixpkgs ships", () => {
    expect(check("flake8", ["--version"]).out).toMatch(/^7\.3\.0 \(mccabe: 0\.7\.0, pycodestyle: 2\.14\.0, pyflakes: 3\.4\.0\)/);
  });

  it("find every writer call in nix/, the Python host programs among them", () => {
    const calls = files.flatMap((f) => writerCalls(f, scratch));
    const python = calls.filter((c) => c.kind === "python3").map((c) => c.name);
    expect(python).toEqual(expect.arrayContaining(["render-fireactions-config", "runner-fleet-seed-files"]));
    expect(calls.filter((c) => c.kind === "shellApplication").map((c) => c.name)).toContain("runner-fleet-bootstrap");
  });

  it("flag a script's own shebang below the writer's interpreter line, as the build does", () => {
    const path = join(scratch, "shebang");
    writeFileSync(path, assemblePython({ content: "#!/usr/bin/env python3\nprint(1)\n" }));
    const r = check("flake8", flake8Args({ flakeIgnore: ["E501"] }, path));
    expect(r.status).toBe(1);
    expect(r.out).toMatch(/:2:1: E265 block comment should start with '# '/);
    // --ignore replaces the defaults: W503 and W504 both apply.
    writeFileSync(path, assemblePython({ content: "x = (1\n     + 2)\ny = (1 +\n     2)\n" }));
    const out = check("flake8", flake8Args({ flakeIgnore: ["E501"] }, path)).out;
    expect(out).toMatch(/W503/);
    expect(out).toMatch(/W504/);
  });

  describe.each(files.map((f) => [relative(root, f), f]))("%s", (_, file) => {
    it("has each writer call it names reached by the evaluation", () => {
      const calls = writerCalls(file, scratch);
      expect(calls.length).toBeGreaterThanOrEqual(writerApplications(file).length);
    });

    it("passes each writer's build-time check", () => {
      const failures: string[] = [];
      for (const call of writerCalls(file, scratch)) {
        const path = join(scratch, call.name);
        if (call.kind === "python3") {
          if (!call.doCheck) continue;
          writeFileSync(path, assemblePython(call));
          const r = check("flake8", flake8Args(call, path));
          if (r.status !== 0) failures.push(`${call.name} (flake8 ${flake8Args(call, call.name).join(" ")}):\n${r.out}`);
          continue;
        }
        const text = call.kind === "shellApplication" ? assembleShellApplication(call) : `#!${BASH}\n${call.text}`;
        writeFileSync(path, text);
        const dry = check("bash", ["-n", path]);
        if (dry.status !== 0) failures.push(`${call.name} (bash -n):\n${dry.out}`);
        if (call.kind === "shellApplication" && call.checkPhase === null) {
          const flags = [...(call.excludeShellChecks.length ? ["--exclude", call.excludeShellChecks.join(",")] : []), ...call.extraShellCheckFlags];
          const sc = check("shellcheck", [...flags, path]);
          if (sc.status !== 0) failures.push(`${call.name} (shellcheck ${flags.join(" ")}):\n${sc.out}`);
        }
      }
      expect(failures.join("\n")).toBe("");
    });
  });
});

