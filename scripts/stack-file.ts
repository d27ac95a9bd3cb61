/**
 * Reads a Pulumi stack file (Pulumi.<stack>.yaml) into the flat config map the runtime uses.
 * Secure values are ciphertext only the Pulumi CLI can decrypt; offline they become clearly
 * marked placeholders, still registered as secrets.
 */
import * as fs from "node:fs";
import { parse } from "yaml";

export interface StackConfig {
  config: Record<string, string>;
  secretKeys: string[];
}

export function securePlaceholder(key: string): string {
  return `[secure placeholder for ${key}: offline plans cannot decrypt stack secrets]`;
}

function isSecure(value: unknown): value is { secure: string } {
  return !!value && typeof value === "object" && !Array.isArray(value) && Object.keys(value).length === 1 && "secure" in value;
}

/**
 * Replaces secure leaves; reports whether any were found. YAML's .inf and .nan have no JSON
 * form (JSON.stringify would make them null): they are passed on as their YAML spelling, so
 * validation can name them.
 */
function replaceSecure(key: string, value: unknown, found: { any: boolean }): unknown {
  if (isSecure(value)) {
    found.any = true;
    return securePlaceholder(key);
  }
  if (typeof value === "number" && !Number.isFinite(value)) return Number.isNaN(value) ? ".nan" : value > 0 ? ".inf" : "-.inf";
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
  return { config, secretKeys };
}

export function readStackFile(file: string): StackConfig {
  return parseStackFile(fs.readFileSync(file, "utf8"), file);
}
