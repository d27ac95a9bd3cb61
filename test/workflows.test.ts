/**
 * The GitHub workflows: PRs run the tests and preview dev and prod with a PR comment; only a
 * push to main runs `pulumi up`, behind the production environment, never two at once; every
 * credential comes from a repository secret.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { ROOT } from "./support/fixtures";

const DIR = path.join(ROOT, ".github", "workflows");
/**
 * The Pulumi CLI the workflows install: the version the real-engine tests build
 * (engine/go/pulumi/go.mod, github.com/pulumi/pulumi/pkg/v3).
 */
const PULUMI_VERSION = "3.248.0";

interface Step {
  name?: string;
  uses?: string;
  run?: string;
  with?: Record<string, unknown>;
  env?: Record<string, unknown>;
  if?: string;
}
interface Job {
  "runs-on": string;
  "timeout-minutes"?: number;
  needs?: string | string[];
  if?: string;
  environment?: string | { name: string };
  permissions?: Record<string, string>;
  strategy?: { matrix?: Record<string, unknown[]> };
  env?: Record<string, unknown>;
  steps: Step[];
}
interface Workflow {
  name: string;
  // `on` is a plain key in YAML 1.2 (the yaml package's default), not the boolean true.
  on: Record<string, any>;
  permissions?: Record<string, string>;
  concurrency?: { group: string; "cancel-in-progress"?: boolean };
  env?: Record<string, unknown>;
  jobs: Record<string, Job>;
}

const files = fs.existsSync(DIR) ? fs.readdirSync(DIR).filter((f) => /\.ya?ml$/.test(f)).sort() : [];
const load = (file: string): Workflow => parse(fs.readFileSync(path.join(DIR, file), "utf8")) as Workflow;
const workflows = Object.fromEntries(files.map((f) => [f, load(f)]));

/** Every pulumi/actions step of a workflow, with the job it runs in. */
function pulumiSteps(wf: Workflow): Array<{ job: string; step: Step }> {
  return Object.entries(wf.jobs).flatMap(([job, j]) => j.steps.filter((s) => s.uses?.startsWith("pulumi/actions@")).map((step) => ({ job, step })));
}

/** The stacks a step acts on, expanding `${{ matrix.<key> }}` from its job's matrix. */
function stacksOf(job: Job, step: Step): string[] {
  const name = String(step.with?.["stack-name"] ?? "");
  const m = /^\$\{\{\s*matrix\.([\w-]+)\s*\}\}$/.exec(name);
  if (!m) return [name];
  return (job.strategy?.matrix?.[m[1]] ?? []).map(String);
}

/** Every env and `with:` value in the workflow, as [where, key, value]. */
function allSettings(wf: Workflow): Array<[string, string, string]> {
  const out: Array<[string, string, string]> = [];
  const add = (where: string, obj?: Record<string, unknown>) => {
    for (const [k, v] of Object.entries(obj ?? {})) out.push([where, k, String(v)]);
  };
  add("env", wf.env);
  for (const [name, job] of Object.entries(wf.jobs)) {
    add(`jobs.${name}.env`, job.env);
    job.steps.forEach((s, i) => {
      add(`jobs.${name}.steps[${i}].env`, s.env);
      add(`jobs.${name}.steps[${i}].with`, s.with);
    });
  }
  return out;
}

/** Keys that carry a credential or point at one. */
const CREDENTIAL_KEY = /token|passphrase|secret|password|private|ssh_key|ssh-key|role-to-assume|client-id|tenant-id|subscription-id|backend_url|cloud-url|vault_addr|access_key|creds/i;
const FROM_SECRET = /^\$\{\{\s*secrets\.[A-Z0-9_]+\s*\}\}$/;

describe("workflow files", () => {
  it("has pr.yml and deploy.yml, each parseable with jobs and steps", () => {
    expect(files).toEqual(expect.arrayContaining(["deploy.yml", "pr.yml"]));
    for (const [file, wf] of Object.entries(workflows)) {
      expect(Object.keys(wf.jobs ?? {}).length, file).toBeGreaterThan(0);
      for (const job of Object.values(wf.jobs)) expect(job.steps.length, file).toBeGreaterThan(0);
    }
  });

  it("pins every action to a version", () => {
    for (const [file, wf] of Object.entries(workflows)) {
      for (const job of Object.values(wf.jobs)) {
        for (const s of job.steps.filter((s) => s.uses)) expect(s.uses, file).toMatch(/^[\w.-]+\/[\w.-]+(\/[\w./-]+)?@v\d+(\.\d+)*$/);
      }
    }
  });

  it("takes every credential from ${{ secrets.* }} and never writes one in plain text", () => {
    for (const [file, wf] of Object.entries(workflows)) {
      const credentials = allSettings(wf).filter(([, k]) => CREDENTIAL_KEY.test(k));
      expect(credentials.length, file).toBeGreaterThan(0);
      for (const [where, key, value] of credentials) expect(value, `${file} ${where}.${key}`).toMatch(FROM_SECRET);
      // No secret-looking literal anywhere in the file either (keys, tokens, PEM blocks).
      const text = fs.readFileSync(path.join(DIR, file), "utf8");
      expect(text).not.toMatch(/AKIA[0-9A-Z]{16}|-----BEGIN|hvs\.[A-Za-z0-9]{20,}|ghp_[A-Za-z0-9]{20,}|dop_v1_[a-f0-9]{20,}/);
    }
  });

  it("pins the Pulumi CLI of every pulumi/actions step to one version, the one the tests run the engine with", () => {
    const versions = Object.values(workflows).flatMap((wf) => pulumiSteps(wf).map(({ step }) => String(step.with?.["pulumi-version"])));
    expect(versions.length).toBeGreaterThan(0);
    expect(new Set(versions)).toEqual(new Set([PULUMI_VERSION]));
    // Once the engine build is in the tree, the workflows follow its version.
    const goMod = path.join(ROOT, "engine", "go", "pulumi", "go.mod");
    if (fs.existsSync(goMod)) {
      const m = /github\.com\/pulumi\/pulumi\/pkg\/v3 v(\d+\.\d+\.\d+)/.exec(fs.readFileSync(goMod, "utf8"));
      expect(m?.[1], "engine/go/pulumi/go.mod's pulumi/pkg version").toBe(PULUMI_VERSION);
    }
  });

  it("gives every job that runs the program the Spaces keys (DigitalOcean buckets and the image presign)", () => {
    for (const [file, wf] of Object.entries(workflows)) {
      for (const [name, job] of Object.entries(wf.jobs)) {
        const runsProgram = job.steps.some((s) => s.uses?.startsWith("pulumi/actions@") || /pulumi (up|preview)/.test(s.run ?? ""));
        if (!runsProgram) continue;
        const step = job.steps.find((s) => s.uses?.startsWith("pulumi/actions@") && s.with?.command || /pulumi (up|preview)/.test(s.run ?? ""));
        for (const key of ["SPACES_ACCESS_KEY_ID", "SPACES_SECRET_ACCESS_KEY"]) expect(step?.env?.[key], `${file} ${name} ${key}`).toMatch(FROM_SECRET);
      }
    }
  });

  it("uses OIDC for AWS and Azure, not stored cloud keys", () => {
    for (const [file, wf] of Object.entries(workflows)) {
      const keys = allSettings(wf).map(([, k]) => k);
      expect(keys, file).not.toContain("AWS_ACCESS_KEY_ID");
      expect(keys, file).not.toContain("aws-access-key-id");
      expect(keys, file).not.toContain("creds");
      for (const [name, job] of Object.entries(wf.jobs)) {
        if (!job.steps.some((s) => s.uses?.startsWith("aws-actions/configure-aws-credentials@") || s.uses?.startsWith("azure/login@"))) continue;
        const perms = job.permissions ?? wf.permissions ?? {};
        expect(perms["id-token"], `${file} ${name}`).toBe("write");
      }
    }
  });
});

describe("pr.yml", () => {
  const wf = workflows["pr.yml"];

  it("runs on pull requests only", () => {
    expect(Object.keys(wf.on)).toEqual(["pull_request"]);
  });

  it("reads contents workflow-wide; only the preview job writes PR comments and gets OIDC tokens (#24 item 7)", () => {
    expect(wf.permissions).toEqual({ contents: "read" });
    expect(wf.jobs.preview.permissions).toEqual({ "contents": "read", "pull-requests": "write", "id-token": "write" });
    for (const [name, j] of Object.entries(wf.jobs)) if (name !== "preview") expect(j.permissions?.["id-token"], name).toBeUndefined();
  });

  it("previews in the preview environment, never production (#24 item 7)", () => {
    const env = wf.jobs.preview.environment;
    expect(typeof env === "string" ? env : env?.name).toBe("preview");
    for (const j of Object.values(wf.jobs)) expect(JSON.stringify(j.environment ?? "")).not.toMatch(/production/);
  });

  it("runs .ci/run on Node 22 with Go, bounded in time: it installs the checkers itself (sudo -n on the runner)", () => {
    const test = wf.jobs.test;
    const node = test.steps.find((s) => s.uses?.startsWith("actions/setup-node@"));
    expect(String(node?.with?.["node-version"])).toBe("22");
    expect(test.steps.some((s) => s.uses?.startsWith("actions/setup-go@"))).toBe(true);
    expect(test["timeout-minutes"]).toBeGreaterThan(0);
    const runs = test.steps.map((s) => s.run ?? "").join("\n");
    expect(runs).toMatch(/bash \.ci\/run/);
    const ci = fs.readFileSync(path.join(ROOT, ".ci", "run"), "utf8");
    expect(ci).toMatch(/ensure-tools\.mjs[\s\S]*npm ci[\s\S]*npm test[\s\S]*npm run e2e/);
    const ensure = fs.readFileSync(path.join(ROOT, "scripts", "ensure-tools.mjs"), "utf8");
    for (const pkg of ["cloud-init", "nix-bin", "openssh-server", "nftables"]) expect(ensure).toContain(`"${pkg}"`);
  });

  it("previews dev and prod with a PR comment, after the tests, and never runs up", () => {
    const steps = pulumiSteps(wf);
    expect(steps.map(({ step }) => step.with?.command)).toEqual(steps.map(() => "preview"));
    const stacks = steps.flatMap(({ job, step }) => stacksOf(wf.jobs[job], step)).sort();
    expect(stacks).toEqual(["dev", "prod"]);
    for (const { job, step } of steps) {
      expect(step.uses).toMatch(/^pulumi\/actions@v\d+$/);
      expect(step.with?.["comment-on-pr"]).toBe(true);
      expect(step.with?.["github-token"]).toMatch(FROM_SECRET);
      expect([wf.jobs[job].needs].flat()).toContain("test");
    }
  });

  it("logs in to a self-managed backend with a passphrase from secrets", () => {
    for (const { job, step } of pulumiSteps(wf)) {
      const env = { ...wf.env, ...wf.jobs[job].env, ...step.env };
      expect(step.with?.["cloud-url"] ?? env.PULUMI_BACKEND_URL).toMatch(/^\$\{\{\s*secrets\.PULUMI_BACKEND_URL\s*\}\}$/);
      expect(env.PULUMI_CONFIG_PASSPHRASE).toMatch(/^\$\{\{\s*secrets\.PULUMI_CONFIG_PASSPHRASE\s*\}\}$/);
      for (const key of ["HCLOUD_TOKEN", "DIGITALOCEAN_TOKEN", "VAULT_ADDR", "VAULT_TOKEN"]) expect(env[key], key).toMatch(FROM_SECRET);
    }
  });
});

/** Whether a step hands its process a credential: secrets in env/with, a cloud login, an SSH agent. */
function bringsCredentials(step: Step): boolean {
  const values = [...Object.values(step.env ?? {}), ...Object.values(step.with ?? {})].map(String);
  return values.some((v) => /\$\{\{\s*secrets\./.test(v))
    || /^(aws-actions\/configure-aws-credentials|azure\/login)@/.test(step.uses ?? "")
    || /GITHUB_ENV/.test(step.run ?? "");
}

describe("credentials reach only the step that runs Pulumi (#24 item 7)", () => {
  for (const [file, wf] of Object.entries(workflows)) {
    it(`${file}: no secrets workflow- or job-wide; npm ci runs before any credential exists in its job`, () => {
      const secretIn = (obj?: Record<string, unknown>) => Object.values(obj ?? {}).some((v) => /secrets\./.test(String(v)));
      expect(secretIn(wf.env)).toBe(false);
      let installs = 0;
      for (const [name, job] of Object.entries(wf.jobs)) {
        expect(secretIn(job.env), `${file} jobs.${name}.env`).toBe(false);
        const firstCredential = job.steps.findIndex(bringsCredentials);
        job.steps.forEach((s, i) => {
          if (!/\bnpm (ci|install)\b|bash \.ci\/run/.test(s.run ?? "")) return;
          installs++;
          expect(bringsCredentials(s), `${file} ${name} step ${i}`).toBe(false);
          if (firstCredential !== -1) expect(i, `${file} ${name}: npm ci after a credential`).toBeLessThan(firstCredential);
        });
        // A secret in a job's steps only where Pulumi runs (and the SSH key's own step, on deploy).
        job.steps.forEach((s, i) => {
          if (!secretIn(s.env) && !secretIn(s.with)) return;
          const runsPulumi = s.uses?.startsWith("pulumi/actions@") || /pulumi (up|preview)/.test(s.run ?? "");
          const login = /^(aws-actions|azure\/login)/.test(s.uses ?? "") || /ssh-add/.test(s.run ?? "");
          expect(runsPulumi || login, `${file} ${name} step ${i} (${s.name ?? s.uses})`).toBe(true);
        });
      }
      expect(installs).toBeGreaterThan(0);
    });
  }

  it("production credentials only in deploy.yml's production job; the PR workflow names no production environment", () => {
    const jobsWith = (env: string) => Object.entries(workflows).flatMap(([file, wf]) => Object.entries(wf.jobs)
      .filter(([, j]) => (typeof j.environment === "string" ? j.environment : j.environment?.name) === env).map(([name]) => `${file}:${name}`));
    expect(jobsWith("production")).toEqual(["deploy.yml:up"]);
    expect(jobsWith("preview")).toEqual(["pr.yml:preview"]);
    // Every job that logs in to a cloud or reads secrets runs in one of the two environments.
    for (const [file, wf] of Object.entries(workflows)) {
      for (const [name, j] of Object.entries(wf.jobs)) {
        if (!j.steps.some(bringsCredentials)) continue;
        expect(["preview", "production"], `${file} ${name}`).toContain(typeof j.environment === "string" ? j.environment : j.environment?.name);
      }
    }
  });

  it("the README walks through the repository setup: both environments, their branch rules, read-only preview credentials, the OIDC subjects", () => {
    const readme = fs.readFileSync(path.join(ROOT, "README.md"), "utf8");
    const ci = readme.slice(readme.indexOf("### CI (`.github/workflows`)"), readme.indexOf("## Layout"));
    for (const needle of ["`production`", "`preview`", "Deployment branches", "`main`", "read-only", "repo:<owner>/<repo>:environment:preview", "repo:<owner>/<repo>:environment:production", "Required reviewers"]) {
      expect(ci, needle).toContain(needle);
    }
  });
});

describe("deploy.yml", () => {
  const wf = workflows["deploy.yml"];

  it("runs only on pushes to main", () => {
    expect(Object.keys(wf.on)).toEqual(["push"]);
    expect(wf.on.push.branches).toEqual(["main"]);
    expect(wf.on.push.tags).toBeUndefined();
  });

  it("has exactly one pulumi up: of prod, run inside the flake's deploy shell, in a job on main behind the production environment", () => {
    const ups = Object.entries(wf.jobs).flatMap(([job, j]) => j.steps.filter((s) => /\bpulumi up\b/.test(s.run ?? "") || s.with?.command === "up").map((step) => ({ job, step })));
    expect(ups).toHaveLength(1);
    const [{ job, step }] = ups;
    // The deploy tools come from the flake (nix/flake.nix devShells.<system>.deploy).
    expect(step.run).toMatch(/^nix develop \.\/nix#deploy --command pulumi up --stack prod --yes\b/);
    // The pulumi/actions step in that job only installs the pinned CLI.
    const install = pulumiSteps(wf).filter((p) => p.job === job);
    expect(install).toHaveLength(1);
    expect(install[0].step.with?.command).toBeUndefined();
    expect(wf.jobs[job].steps.indexOf(install[0].step)).toBeLessThan(wf.jobs[job].steps.indexOf(step));
    const j = wf.jobs[job];
    expect(typeof j.environment === "string" ? j.environment : j.environment?.name).toBe("production");
    expect(j.if).toMatch(/github\.ref\s*==\s*'refs\/heads\/main'/);
    expect([j.needs].flat()).toContain("test");
  });

  it("never runs two updates at once, and never cancels one halfway", () => {
    expect(wf.concurrency?.group).toBeTruthy();
    expect(wf.concurrency?.group).not.toMatch(/github\.(sha|run_id|ref)/);
    expect(wf.concurrency?.["cancel-in-progress"]).toBe(false);
  });

  it("keeps workflow-wide permissions read-only; OIDC only where up runs", () => {
    expect(wf.permissions).toEqual({ contents: "read" });
    const [{ job }] = pulumiSteps(wf);
    expect(wf.jobs[job].steps.some((s) => /pulumi up/.test(s.run ?? ""))).toBe(true);
    expect(wf.jobs[job].permissions?.["id-token"]).toBe("write");
    for (const [name, j] of Object.entries(wf.jobs)) if (name !== job) expect(j.permissions?.["id-token"], name).toBeUndefined();
  });
});
