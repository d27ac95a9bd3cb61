// A venv with the exact, hash-pinned wheels of a requirements file, shared by test runs (keyed
// by the file's hash) in the temp dir. Built aside and renamed into place, so a killed run leaves
// no half venv; after the rename the venv's bin/ scripts name the old path, so callers run
// modules with its python3 (`python3 -m flake8`) or files inside site-packages.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";

/** The venv's python3, installing the requirements first if no run has yet. */
export function pinnedVenvPython(requirements: string): string {
  const hash = createHash("sha256").update(readFileSync(requirements)).digest("hex").slice(0, 16);
  const venv = join(tmpdir(), `runner-fleet-${basename(requirements, ".txt")}-${hash}`);
  const python = join(venv, "bin", "python3");
  if (existsSync(join(venv, ".complete"))) return python;
  const build = mkdtempSync(`${venv}.build-`);
  execFileSync("python3", ["-m", "venv", build], { stdio: ["ignore", "ignore", "inherit"] });
  execFileSync(join(build, "bin", "python3"), ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
    "--only-binary", ":all:", "--require-hashes", "-r", requirements], { stdio: ["ignore", "ignore", "inherit"] });
  execFileSync("touch", [join(build, ".complete")]);
  rmSync(venv, { recursive: true, force: true });
  try {
    renameSync(build, venv);
  } catch (err) {
    // Another run renamed its venv into place first: use that one.
    rmSync(build, { recursive: true, force: true });
    if (!existsSync(join(venv, ".complete"))) throw err;
  }
  return python;
}
