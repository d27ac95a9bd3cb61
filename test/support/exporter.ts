/**
 * Starting the real runner-fleet exporter (nix/pkgs/runner-fleet-exporter.py) from a test or
 * the bench, against a host root made of plain files (profiles, /run/current-system, secrets).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";

export const EXPORTER = resolve(__dirname, "..", "..", "nix", "pkgs", "runner-fleet-exporter.py");

export interface ExporterProc {
  proc: ChildProcess;
  url: string;
  log(): string;
  get(path?: string): Promise<{ status: number; text: string }>;
  stop(): Promise<void>;
}

export interface ExporterConfig {
  secrets?: string[];
  units?: string[];
  relays?: Record<string, string>;
  vault?: { address: string; caFile?: string };
}

export async function startExporter(opts: { listen: string; root: string; config: ExporterConfig; systemctl?: string; configFile: string; python?: string[] }): Promise<ExporterProc> {
  writeFileSync(opts.configFile, JSON.stringify(opts.config));
  const args = [EXPORTER, "--listen", opts.listen, "--config", opts.configFile, "--root", opts.root,
    ...(opts.systemctl ? ["--systemctl", opts.systemctl] : [])];
  const [cmd, ...pre] = opts.python ?? ["python3"];
  const proc = spawn(cmd, [...pre, ...args], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  proc.stderr!.on("data", (d) => (stderr += d));
  const url = `http://${opts.listen}`;
  const get = async (path = "/metrics") => {
    const r = await fetch(url + path);
    return { status: r.status, text: await r.text() };
  };
  const end = Date.now() + 15_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`exporter exited ${proc.exitCode}: ${stderr}`);
    try {
      await get();
      break;
    } catch {
      if (Date.now() > end) throw new Error(`exporter never answered: ${stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    proc, url, get, log: () => stderr,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      await new Promise<void>((ok) => { proc.once("exit", () => ok()); proc.kill("SIGTERM"); });
    },
  };
}

/**
 * A host root as NixOS lays it out: system-<n>-link generations in /nix/var/nix/profiles, the
 * profile at `profile`, /run/current-system and /run/booted-system at the given generations,
 * each system with its own kernel, initrd and kernel-modules unless `sameBoot` shares them.
 */
export function makeSystemRoot(root: string, g: { generations: number; profile: number; current: number; booted: number; sameKernel?: boolean }): Record<number, string> {
  const store = join(root, "nix", "store");
  const profiles = join(root, "nix", "var", "nix", "profiles");
  mkdirSync(profiles, { recursive: true });
  mkdirSync(join(root, "run"), { recursive: true });
  const systems: Record<number, string> = {};
  for (let n = 1; n <= g.generations; n++) {
    const sys = join(store, `${String(n).padStart(32, "0")}-nixos-system-host-${n}`);
    const kernelOf = g.sameKernel ? 1 : n;
    const kernel = join(store, `${String(kernelOf).padStart(32, "k")}-linux`);
    mkdirSync(sys, { recursive: true });
    mkdirSync(kernel, { recursive: true });
    for (const part of ["kernel", "initrd", "kernel-modules"]) symlinkSync(join(kernel, part), join(sys, part));
    for (const part of ["kernel", "initrd"]) writeFileSync(join(kernel, part), part);
    mkdirSync(join(kernel, "kernel-modules"), { recursive: true });
    symlinkSync(sys, join(profiles, `system-${n}-link`));
    systems[n] = sys;
  }
  symlinkSync(`system-${g.profile}-link`, join(profiles, "system"));
  symlinkSync(systems[g.current], join(root, "run", "current-system"));
  symlinkSync(systems[g.booted], join(root, "run", "booted-system"));
  return systems;
}

/** A file under the host root, directories made. */
export function writeRootFile(root: string, path: string, text: string): void {
  const full = join(root, path);
  mkdirSync(dirname(full), { recursive: true });
  writeFileSync(full, text);
}
