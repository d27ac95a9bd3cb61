/**
 * Reads a Pulumi stack file (Pulumi.<stack>.yaml) into the flat config map the runtime uses.
 * Secure values are ciphertext only the Pulumi CLI can decrypt; offline they become clearly
 * marked placeholders, still registered as secrets. The committed stack files hold no secrets at
 * all: a secret config key (SECRET_KEYS) that the file does not set gets a marked placeholder
 * too, and is listed so the plan can say so.
 */
import * as fs from "node:fs";
import { parse } from "yaml";
import { PROJECT, SECRET_KEYS } from "../components/config";

export interface StackConfig {
  config: Record<string, string>;
  secretKeys: string[];
  /** Secret keys the file does not set, filled with unsetPlaceholder(). */
  unsetSecrets: string[];
}

export function unsetPlaceholder(key: string): string {
  return `[placeholder for ${key}: not set in the stack file; offline plans only]`;
}

export function securePlaceholder(key: string): string {
  return `[secure placeholder for ${key}: offline plans cannot decrypt stack secrets]`;
}

function isSecure(value: unknown): value is { secure: string } {
  return !!value && typeof value === "object" && !Array.isArray(value) && Object.keys(value).length === 1 && "secure" in value;
}

/** Replaces secure leaves; reports whether any were found. */
function replaceSecure(key: string, value: unknown, found: { any: boolean }): unknown {
  if (isSecure(value)) {
    found.any = true;
    return securePlaceholder(key);
  }
  if (Array.isArray(value)) return value.map((v, i) => replaceSecure(`${key}[${i}]`, v, found));
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, replaceSecure(`${key}.${k}`, v, found)]));
  }
  return value;
}

export function parseStackFile(text: string, fileName: string): StackConfig {
  const doc = parse(text, { prettyErrors: true, uniqueKeys: true }) as { config?: Record<string, unknown> } | null;
  if (doc !== null && (typeof doc !== "object" || Array.isArray(doc))) {
    throw new Error(`${fileName}: expected a mapping with a config: key`);
  }
  const config: Record<string, string> = {};
  const secretKeys: string[] = [];
  for (const [key, value] of Object.entries(doc?.config ?? {})) {
    const found = { any: false };
    const plain = replaceSecure(key, value, found);
    config[key] = typeof plain === "string" ? plain : JSON.stringify(plain);
    if (found.any) secretKeys.push(key);
  }
  return { config, secretKeys, unsetSecrets: [] };
}

export function readStackFile(file: string): StackConfig {
  const stack = parseStackFile(fs.readFileSync(file, "utf8"), file);
  for (const key of Object.values(SECRET_KEYS).map((k) => `${PROJECT}:${k}`)) {
    if (key in stack.config) continue;
    stack.config[key] = unsetPlaceholder(key);
    stack.secretKeys.push(key);
    stack.unsetSecrets.push(key);
  }
  return stack;
}
