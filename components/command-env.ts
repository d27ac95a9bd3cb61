/**
 * The environment each command:local:Command may see. pulumi-command starts every local command
 * with the whole environment of the Pulumi CLI (local/commandOutputs.go `cmd.Env = os.Environ()`),
 * which in CI holds VAULT_TOKEN, PULUMI_CONFIG_PASSPHRASE, the cloud tokens and the OIDC request
 * token. So each script starts by unsetting every exported variable that is not on its list: the
 * names come from awk's ENVIRON (values are never printed or put on a command line).
 */
export interface EnvAllowance {
  /** Exact names kept. */
  names: readonly string[];
  /** Name prefixes kept (RF_: what `environment` passes; the e2e's RF_E2E_* too). */
  prefixes: readonly string[];
}

/** What any shell tool needs: a PATH, a home, locale, temp dir, CA bundle, proxies. */
const BASE_NAMES = [
  "PATH", "HOME", "USER", "LOGNAME", "SHELL", "PWD", "TMPDIR", "TERM", "TZ", "LANG", "LANGUAGE",
  "SSL_CERT_FILE", "SSL_CERT_DIR", "NIX_SSL_CERT_FILE", "LOCALE_ARCHIVE",
  "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
  // The command's own previous output (addPreviousOutputInEnv), which some scripts read back.
  "PULUMI_COMMAND_STDOUT", "PULUMI_COMMAND_STDERR",
] as const;
const BASE_PREFIXES = ["LC_", "RF_"] as const;

export const COMMAND_ENV = {
  /** Random bytes, a no-op: nothing beyond the base. */
  plain: { names: BASE_NAMES, prefixes: BASE_PREFIXES },
  /** Deploy tools, nixos-anywhere, ssh, nix: the SSH agent and Nix's own settings (NIX_CONFIG may hold fetch tokens). */
  deploy: { names: [...BASE_NAMES, "SSH_AUTH_SOCK"], prefixes: [...BASE_PREFIXES, "NIX_", "XDG_"] },
  /** Reads one host key from Vault: the token and where to find Vault, nothing of the clouds. */
  vaultRead: { names: [...BASE_NAMES, "VAULT_TOKEN", "VAULT_NAMESPACE", "VAULT_CACERT"], prefixes: BASE_PREFIXES },
  /** az and the page uploader: the Azure CLI's login (~/.azure or AZURE_CONFIG_DIR). The SAS is never in it. */
  azure: { names: BASE_NAMES, prefixes: [...BASE_PREFIXES, "AZURE_"] },
  /** hcloud-upload-image: the Hetzner token. */
  hetzner: { names: [...BASE_NAMES, "HCLOUD_TOKEN", "HCLOUD_ENDPOINT"], prefixes: BASE_PREFIXES },
  /** The Spaces presign: the Spaces keys. */
  spaces: { names: [...BASE_NAMES, "SPACES_ACCESS_KEY_ID", "SPACES_SECRET_ACCESS_KEY"], prefixes: BASE_PREFIXES },
} as const satisfies Record<string, EnvAllowance>;

/** The first line of every local command script: unset what the allowance does not name. */
export function envScrubLine(allow: EnvAllowance): string {
  const patterns = [...allow.names, ...allow.prefixes.map((p) => `${p}*`)].join("|");
  return `for rf_var in $(awk 'BEGIN { for (k in ENVIRON) if (k ~ /^[A-Za-z_][A-Za-z0-9_]*$/) print k }'); do case "$rf_var" in ${patterns}) ;; *) unset "$rf_var" 2>/dev/null || true;; esac; done; unset rf_var`;
}

/** `script` run with only the environment `allow` names. */
export function withOnlyEnv(allow: EnvAllowance, script: string): string {
  return `${envScrubLine(allow)}\n${script}`;
}
