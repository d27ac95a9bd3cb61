# vault-agent logs in with the host's AppRole and renders the inventory's
# `secrets` list into /run/secrets (tmpfs): secrets never enter the Nix store
# and never travel in user-data.
{
  config,
  lib,
  ...
}:
let
  inherit (config.runnerFleet) inventory host;
  vault = inventory.vault or { };
  stateDir = "/var/lib/runner-fleet/vault";

  # KV v2 keeps fields under .Data.data; `index` copes with any field name.
  value = s: ''{{ with secret "${s.path}" }}{{ index .Data.data "${s.field}" }}{{ end }}'';
  contents =
    s:
    if s.format == "raw" then
      value s
    else if lib.hasPrefix "env:" s.format then
      "${lib.removePrefix "env:" s.format}=${value s}\n"
    else
      throw "inventory: hosts.${host.name}.secrets: unknown format \"${s.format}\"";

  template = s: {
    destination = s.file;
    contents = contents s;
    perms = "0400";
    # Fail the agent rather than render an empty secret.
    error_on_missing_key = true;
  };
in
{
  # pkgs.vault is BSL-licensed (unfree to nixpkgs): the flake allows it by
  # name when it instantiates nixpkgs (nixosSystem and colmena alike).
  services.vault-agent.instances.runner-fleet = {
    enable = true;
    settings = {
      # No address here: images are built before a Vault is known, so
      # VAULT_ADDR comes from host.json via bootstrap (see bootstrap.nix).
      auto_auth.method = [
        {
          type = "approle";
          mount_path = "auth/${vault.authMount or "approle"}";
          config = {
            role_id_file_path = "/etc/runner-fleet/vault/role-id";
            secret_id_file_path = "${stateDir}/secret-id";
            # Keep it: the agent re-reads it after every restart.
            remove_secret_id_file_after_reading = false;
          };
        }
      ];
      template = map template (host.secrets or [ ]);
    };
  };

  systemd.services."vault-agent-runner-fleet" = {
    # Before bootstrap has unwrapped the secret_id there is nothing to log in with.
    unitConfig.ConditionPathExists = "${stateDir}/secret-id";
    serviceConfig = {
      EnvironmentFile = "/var/lib/runner-fleet/vault.env";
      RuntimeDirectory = "secrets";
      RuntimeDirectoryMode = "0751";
      RuntimeDirectoryPreserve = true;
    };
  };
}
