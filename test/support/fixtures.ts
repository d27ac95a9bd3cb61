/**
 * Shared test fixtures: a small valid config, the fleet model built from it, and a way to run
 * the real plan command on any config. Pure: importing this registers no resource.
 */
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { stringify } from "yaml";
import { buildFleetModel, ConfigError, PROJECT, SECRET_KEYS } from "../../components/config";
import type { FleetModel } from "../../components/model";

export const ROOT = path.resolve(__dirname, "../..");
/** A well-formed Ed25519 public key (its 32 key bytes are a hash: no private key exists for it). */
export const SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMS2h8BA5KkfTs1AVBW+KzNVWOGAqW5r1NAY25uvw+QP test@example";

/** A secret value planted in config so tests can prove it never leaks. */
export const PLANTED_SECRETS = {
  githubAppPrivateKey: "-----BEGIN RSA PRIVATE KEY-----\nPLANTED-APP-KEY-5f0c1d\n-----END RSA PRIVATE KEY-----\n",
  giteaRunnerToken: "PLANTED-GITEA-TOKEN-8a41be",
  gitlabRunnerToken: "glrt-PLANTED-GITLAB-TOKEN-3c9d71",
  // A real Nix secret key (its public half is derived from it): the seed's base64 starts with the marker.
  cacheSigningKey: "cache-1:PLANTEDSIGNINGKEY77d2e0AAAAAAAAAAAAAAAAABweiHKoi5Y3YeabjY6B3rIzdHAsKMIzl1mfVLTu6hMVxaA==",
};

/** A valid config (top-level keys without the project prefix) to start from. */
export function baseConfig(): Record<string, any> {
  return {
    ssh: { authorizedKeys: [SSH_KEY], adminCidrs: ["198.51.100.0/24"] },
    github: { organization: "acme", appId: "123456" },
    forgejo: { url: "https://forgejo.example.org" },
    gitea: { url: "https://gitea.example.org" },
    pools: {
      small: { size: "small" },
      medium: { size: "medium" },
      large: { size: "large" },
    },
    hosts: {
      metal: { provider: "aws", instanceType: "c7i.metal-24xl", roles: ["fireactions"], pools: ["large", "small"] },
    },
    images: {
      aws: { x86_64: { path: "/nix/store/8qp8fwyrn2m1ajzgcddwn7iz8imnckfn-nixos-amazon-image-25.11-x86_64-linux" } },
    },
    vault: { address: "https://vault.example.org:8200" },
    deploy: { tool: "deploy-rs", batchSize: 2 },
  };
}

/** Builds the fleet model the way the program does (offline: images need only a hash). */
export function modelFrom(config: Record<string, any>, secretsSet: string[] = Object.values(SECRET_KEYS)): FleetModel {
  return buildFleetModel(config, {
    stack: "test",
    secretsSet: new Set(secretsSet),
    awsRegion: "eu-central-1",
    azureLocation: "westeurope",
    baseDir: ROOT,
    requireImageFiles: false,
  });
}

/** The problems a config produces, each `runner-fleet:<key path>: ...` (empty when valid). */
export function configProblems(config: Record<string, any>, secretsSet?: string[]): string[] {
  try {
    modelFrom(config, secretsSet);
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
}

/** An existing x86_64 machine with its host key pinned (the shape most role tests need). */
export function existingHost(address: string, roles: string[]): Record<string, unknown> {
  return { provider: "existing", address, arch: "x86_64", vcpus: 8, memoryMib: 16384, roles, hostKey: SSH_KEY.split(" ").slice(0, 2).join(" ") };
}

/** The flat `runner-fleet:<key>` map installMocks takes, with the planted secrets set. */
export function mockConfig(config: Record<string, any>, extra: Record<string, string> = {}): { config: Record<string, string>; secretKeys: string[] } {
  const flat: Record<string, string> = { "aws:region": "eu-central-1", "azure-native:location": "westeurope", ...extra };
  for (const [key, value] of Object.entries(config)) flat[`${PROJECT}:${key}`] = typeof value === "string" ? value : JSON.stringify(value);
  const secretKeys: string[] = [];
  for (const [key, value] of Object.entries(PLANTED_SECRETS)) {
    flat[`${PROJECT}:${key}`] = value;
    secretKeys.push(`${PROJECT}:${key}`);
  }
  return { config: flat, secretKeys };
}

/**
 * Writes a stack file for `config`, with the planted secrets as plain values (the program reads
 * them with requireSecret, so they must come out as secrets all the same).
 */
export function writeStackFile(config: Record<string, any>, dir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-"))): string {
  const doc: Record<string, unknown> = { "aws:region": "eu-central-1", "azure-native:location": "westeurope" };
  for (const [key, value] of Object.entries(PLANTED_SECRETS)) doc[`${PROJECT}:${key}`] = value;
  for (const [key, value] of Object.entries(config)) doc[`${PROJECT}:${key}`] = value;
  const file = path.join(dir, "Pulumi.test.yaml");
  fs.writeFileSync(file, stringify({ config: doc }));
  return file;
}

export interface PlanResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `npm run plan` (the tsx entry point directly, to skip npm's start-up). */
export async function runPlan(args: string[]): Promise<PlanResult> {
  const tsx = path.join(ROOT, "node_modules", ".bin", "tsx");
  try {
    const { stdout, stderr } = await promisify(execFile)(tsx, ["scripts/plan.ts", ...args], { cwd: ROOT, maxBuffer: 256 * 1024 * 1024 });
    return { code: 0, stdout, stderr };
  } catch (err: any) {
    return { code: err.code ?? 1, stdout: err.stdout ?? "", stderr: err.stderr ?? "" };
  }
}

export interface PlanDoc {
  resources: Array<{ urn: string; type: string; name: string; inputs: Record<string, any> }>;
  outputs: Record<string, any>;
}

/** The --json plan of a stack name or a config object. */
export async function planJson(stackOrConfig: string | Record<string, any>): Promise<PlanDoc> {
  const args = typeof stackOrConfig === "string" ? ["--stack", stackOrConfig] : ["--config", writeStackFile(stackOrConfig)];
  const result = await runPlan([...args, "--json"]);
  if (result.code !== 0) throw new Error(`plan failed (${result.code}): ${result.stderr}`);
  return JSON.parse(result.stdout) as PlanDoc;
}
