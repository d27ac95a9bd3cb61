# vault-agent (or `bao agent`) configuration for one host, as a plain attrset
# that serialises to the agent's JSON config. Only builtins, so the tests
# evaluate it with `nix-instantiate --eval --json` and the e2e runs the
# result with a real `bao agent`.
#
#   address               Vault/OpenBao URL, or null to take it from the
#                         agent's environment (VAULT_ADDR / BAO_ADDR)
#   roleIdFile            file holding the AppRole role_id
#   secretIdFile          file holding the secret_id, or a response-wrapping
#                         token for it when secretIdWrappingPath is set
#   secretIdWrappingPath  null, or the path the wrapping token was created at
#                         (auth/<mount>/role/<role>/secret-id); the agent then
#                         unwraps it itself and checks that creation path
#   authMount             AppRole mount (without auth/)
#   secrets               the host's files from inventory.json:
#                         [ { file, path, field, format = "raw" | "env:NAME" } ]
#   exitAfterAuth         render once and exit (tests, one-shot runs)
#   loginMarkerFile       rendered (no secret in it) when `secrets` is empty:
#                         OpenBao refuses auto_auth with no sink and no template
#                         ("auto_auth requires at least one sink or at least one
#                         template", command/agent/config/config.go), so a host
#                         with no secrets yet (every image until its first
#                         deploy) would exit and restart forever
{
  address ? null,
  roleIdFile,
  secretIdFile,
  secretIdWrappingPath ? null,
  authMount ? "approle",
  secrets,
  exitAfterAuth ? false,
  pidFile ? null,
  loginMarkerFile ? "/run/vault-agent/runner-fleet-logged-in",
}:
let
  inherit (builtins) substring stringLength match throw;

  envName =
    format:
    let
      m = match "env:([A-Za-z_][A-Za-z0-9_]*)" format;
    in
    if m == null then null else builtins.head m;

  # KV v2 keeps the fields under .Data.data; `index` copes with any field name.
  # Paths and fields go into a Go template string literal: refuse quotes and
  # backslashes rather than escape them.
  safe =
    what: s:
    if match ".*[\"\\\\{}].*" s != null then
      throw "vault-agent-config: ${what} \"${s}\" has a quote, backslash or brace"
    else
      s;
  value =
    s:
    ''{{ with secret "${safe "path" s.path}" }}{{ index .Data.data "${safe "field" s.field}" }}{{ end }}'';

  contents =
    s:
    if s.format == "raw" then
      value s
    else if envName s.format != null then
      "${envName s.format}=${value s}\n"
    else
      throw "vault-agent-config: ${s.file}: unknown format \"${s.format}\" (raw or env:NAME)";

  template =
    s:
    if substring 0 1 s.file != "/" then
      throw "vault-agent-config: ${s.file}: destination must be absolute"
    else
      {
        destination = s.file;
        contents = contents s;
        perms = "0400";
        # A missing field fails the render instead of writing an empty secret.
        error_on_missing_key = true;
      };

  approleConfig =
    {
      role_id_file_path = roleIdFile;
      secret_id_file_path = secretIdFile;
    }
    // (
      if secretIdWrappingPath == null then
        {
          # The agent logs in again after every restart and token expiry, so
          # the (multi-use) secret_id file must stay.
          remove_secret_id_file_after_reading = false;
        }
      else
        {
          # A wrapping token is single use: once unwrapped it is worthless, so
          # the agent removes it (its default) and keeps the secret_id in memory.
          secret_id_response_wrapping_path = secretIdWrappingPath;
          remove_secret_id_file_after_reading = true;
        }
    );
in
assert stringLength roleIdFile > 0;
{
  auto_auth.method = [
    {
      type = "approle";
      mount_path = "auth/${authMount}";
      config = approleConfig;
    }
  ];
  template =
    if secrets == [ ] then
      [
        {
          # A template the agent renders once it has logged in; no secret in it.
          destination = loginMarkerFile;
          contents = "logged in\n";
          perms = "0444";
        }
      ]
    else
      map template secrets;
  # Without it the agent retries a failed render forever and looks healthy.
  template_config.exit_on_retry_failure = true;
  exit_after_auth = exitAfterAuth;
}
// (if address == null then { } else { vault.address = address; })
// (if pidFile == null then { } else { pid_file = pidFile; })
