// The deploy user's sudo rules, for real: the sudoers line is rendered from nix/modules/common.nix
// (test/e2e/host/sudoers.nix, as NixOS writes extraRules), checked by visudo, and installed in a
// private mount namespace (an overlay on /etc with a `deploy` user, and an empty Nix store on a
// tmpfs over /nix). Debian's sudo then decides on the very commands the deploy tools send:
// colmena's remote build `sudo -H -- nix-store --no-gc-warning --realise <drv>` (src/nix/host/
// ssh.rs realize_remote, docs/upstream.md) must build a real derivation as root, and anything
// wider must be refused. Needs root, sudo (Debian 1.9.13), util-linux (unshare, setpriv) and Nix.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const ROOT = resolve(__dirname, "..");
const UID = 64123;
let scratch = "";

/** The probe: a derivation made as root in the namespace's store, then `deploy` runs each command. */
const probe = (commands: string[][]) => `set -eu
mount -t overlay overlay -o lowerdir=/etc,upperdir=${scratch}/up,workdir=${scratch}/work /etc
echo 'deploy:x:${UID}:${UID}::/nonexistent:/bin/sh' >> /etc/passwd
echo 'deploy:x:${UID}:' >> /etc/group
echo 'deploy:*:19000:0:99999:7:::' >> /etc/shadow
rm -f /etc/sudoers.d/*
install -m 0440 ${scratch}/sudoers /etc/sudoers.d/runner-fleet-deploy
mkdir -p /etc/nix
printf 'build-users-group =\\nsubstituters =\\nsandbox = false\\n' > /etc/nix/nix.conf
mount -t tmpfs tmpfs /nix
drv=$(HOME=${scratch} nix-instantiate --expr 'derivation { name = "nixos-system-alpha-25.11"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo realised > $out" ]; }' 2>/dev/null)
echo "drv $drv"
as_deploy() { setpriv --reuid=${UID} --regid=${UID} --clear-groups env -i PATH=/usr/bin:/bin HOME=/nonexistent "$@" </dev/null; }
${commands.map((c, i) => `if out=$(as_deploy ${c.map((a) => `"${a}"`).join(" ")} 2>&1); then echo "case ${i} ok $(echo "$out" | tail -n 1)"; else echo "case ${i} refused $(echo "$out" | tr '\\n' ' ')"; fi`).join("\n")}
`;

function run(commands: string[][]): { drv: string; cases: string[] } {
  const r = spawnSync("unshare", ["--mount", "--propagation", "private", "sh", "-c", probe(commands)], { encoding: "utf8", timeout: 60_000 });
  if (r.status !== 0) throw new Error(`probe failed (${r.status}): ${r.stderr}`);
  const lines = r.stdout.trim().split("\n");
  return { drv: lines.find((l) => l.startsWith("drv "))!.slice(4), cases: lines.filter((l) => l.startsWith("case ")) };
}

beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), "rf-sudo-"));
  for (const d of ["up", "work", "home"]) mkdirSync(join(scratch, d));
  const rendered = execFileSync("nix-instantiate", ["--eval", "--strict", "--json", "--argstr", "repo", ROOT, join(ROOT, "test/e2e/host/sudoers.nix")], {
    env: { ...process.env, NIX_REMOTE: "dummy://", HOME: join(scratch, "home"), NIX_CONFIG: "" }, encoding: "utf8",
  });
  writeFileSync(join(scratch, "sudoers"), JSON.parse(rendered));
  execFileSync("visudo", ["-cqf", join(scratch, "sudoers")]);
});

afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe("colmena's remote build through the deploy user's sudo (#24 item 2)", () => {
  it("sudo -H -- nix-store --no-gc-warning --realise <drv> builds the system as root, the way colmena sends it", () => {
    // The drv path is only known inside the namespace: a first pass learns it (same expression, same path).
    const { drv } = run([]);
    expect(drv).toMatch(/^\/nix\/store\/[0-9a-z]{32}-nixos-system-alpha-25\.11\.drv$/);
    const { cases } = run([["sudo", "-H", "--", "nix-store", "--no-gc-warning", "--realise", drv]]);
    expect(cases).toEqual([expect.stringMatching(/^case 0 ok \/nix\/store\/[0-9a-z]{32}-nixos-system-alpha-25\.11$/)]);
  });

  it("refuses anything wider: two derivations, extra options, a non-.drv path, nix-store's other verbs", () => {
    const { drv } = run([]);
    const other = drv.replace("alpha", "beta");
    const { cases } = run([
      ["sudo", "-H", "--", "nix-store", "--no-gc-warning", "--realise", drv, other],
      ["sudo", "-H", "--", "nix-store", "--no-gc-warning", "--realise", drv, "--add-root", "/etc/shadow", other],
      ["sudo", "-H", "--", "nix-store", "--no-gc-warning", "--realise", drv.replace(/\.drv$/, "")],
      ["sudo", "-H", "--", "nix-store", "--no-gc-warning", "--realise", `/tmp/${drv.slice("/nix/store/".length)}`],
      ["sudo", "-H", "--", "nix-store", "--realise", drv],
      ["sudo", "-H", "--", "nix-store", "--delete", drv],
      ["sudo", "-H", "--", "nix-store", "--no-gc-warning", "--realise", `${drv} --option`],
    ]);
    expect(cases).toHaveLength(7);
    for (const line of cases) expect(line).toMatch(/^case \d refused .*a (password|terminal) is required/);
  });
});
