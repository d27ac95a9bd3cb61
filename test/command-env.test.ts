// What a local command's script actually sees: withOnlyEnv's first line unsets every exported
// variable its allowance does not name. Run for real under /bin/sh (dash) with an environment as
// CI has it (#24 item 13): Vault, Pulumi, cloud and OIDC tokens next to what the tools need.
import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { COMMAND_ENV, withOnlyEnv, type EnvAllowance } from "../components/command-env";

const CI_ENV: Record<string, string> = {
  PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: "/home/ci", LANG: "C.UTF-8", LC_ALL: "C",
  VAULT_TOKEN: "hvs.PLANTED", VAULT_ADDR: "https://vault.example:8200", PULUMI_CONFIG_PASSPHRASE: "PLANTED-pass",
  PULUMI_ACCESS_TOKEN: "pul-PLANTED", AWS_ACCESS_KEY_ID: "AKIAPLANTED", AWS_SECRET_ACCESS_KEY: "PLANTED", AWS_SESSION_TOKEN: "PLANTED",
  ARM_CLIENT_SECRET: "PLANTED", AZURE_CLIENT_SECRET: "PLANTED-azure", HCLOUD_TOKEN: "PLANTED-hcloud", DIGITALOCEAN_TOKEN: "PLANTED",
  SPACES_ACCESS_KEY_ID: "PLANTED-spaces-id", SPACES_SECRET_ACCESS_KEY: "PLANTED-spaces", GITHUB_TOKEN: "ghs_PLANTED",
  ACTIONS_ID_TOKEN_REQUEST_TOKEN: "PLANTED-oidc", ACTIONS_ID_TOKEN_REQUEST_URL: "https://oidc.example",
  SSH_AUTH_SOCK: "/tmp/agent.sock", NIX_CONFIG: "access-tokens = github.com=x", RF_HOST_KEY: "ssh-ed25519 AAAA", RF_E2E_STANDIN_LOG: "/tmp/l",
  PULUMI_COMMAND_STDOUT: "previous", "weird-name": "x",
};

function seen(allow: EnvAllowance): Record<string, string> {
  // env -0: values may hold newlines. The script is what pulumi-command runs: sh -c <create>.
  const r = spawnSync("/bin/sh", ["-c", withOnlyEnv(allow, "set -eu\nenv -0")], { env: CI_ENV, encoding: "utf8" });
  expect(r.status, r.stderr).toBe(0);
  return Object.fromEntries(r.stdout.split("\0").filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]));
}

const SECRETS = ["VAULT_TOKEN", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_ACCESS_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
  "AWS_SESSION_TOKEN", "ARM_CLIENT_SECRET", "AZURE_CLIENT_SECRET", "HCLOUD_TOKEN", "DIGITALOCEAN_TOKEN", "SPACES_ACCESS_KEY_ID",
  "SPACES_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_TOKEN"];
const allowedSecrets: Record<keyof typeof COMMAND_ENV, string[]> = {
  plain: [], deploy: [], vaultRead: ["VAULT_TOKEN"], azure: ["AZURE_CLIENT_SECRET"], hetzner: ["HCLOUD_TOKEN"],
  spaces: ["SPACES_ACCESS_KEY_ID", "SPACES_SECRET_ACCESS_KEY"],
};

describe("local commands get only the environment they need (#24 item 13)", () => {
  for (const [name, allow] of Object.entries(COMMAND_ENV) as Array<[keyof typeof COMMAND_ENV, EnvAllowance]>) {
    it(`${name}: keeps ${allowedSecrets[name].join(", ") || "no secret"}, drops every other token`, () => {
      const env = seen(allow);
      for (const key of SECRETS) expect(key in env, key).toBe(allowedSecrets[name].includes(key));
      // What every tool needs stays, with its value.
      expect(env).toMatchObject({ PATH: CI_ENV.PATH, HOME: "/home/ci", LC_ALL: "C", RF_HOST_KEY: "ssh-ed25519 AAAA", RF_E2E_STANDIN_LOG: "/tmp/l", PULUMI_COMMAND_STDOUT: "previous" });
    });
  }

  it("deploy keeps the SSH agent and Nix's settings; nothing but deploy does", () => {
    expect(seen(COMMAND_ENV.deploy)).toMatchObject({ SSH_AUTH_SOCK: "/tmp/agent.sock", NIX_CONFIG: "access-tokens = github.com=x" });
    expect("SSH_AUTH_SOCK" in seen(COMMAND_ENV.azure)).toBe(false);
  });

  it("names no value on any command line: the scrub line holds variable names only", () => {
    const r = spawnSync("/bin/sh", ["-c", withOnlyEnv(COMMAND_ENV.deploy, "true")], { env: CI_ENV, encoding: "utf8" });
    expect(r.status).toBe(0);
    for (const [, allow] of Object.entries(COMMAND_ENV)) expect(withOnlyEnv(allow, "")).not.toMatch(/PLANTED/);
  });
});
