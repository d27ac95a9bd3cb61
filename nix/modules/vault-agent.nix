# vault-agent logs in with the host's AppRole and renders the inventory's
# `secrets` list into /run/secrets (tmpfs): secrets never enter the Nix store
# and never travel in user-data. The agent's config is the pure function in
# lib/vault-agent-config.nix, which the tests and the e2e's `bao agent` run too.
{
  config,
  lib,
  ...
}:
let
  inherit (config.runnerFleet) inventory host;
  vault = inventory.vault or { };
  paths = import ../lib/host-paths.nix;
in
{
  # pkgs.vault is BSL-licensed (unfree to nixpkgs): the flake allows it by
  # name when it instantiates nixpkgs (nixosSystem and colmena alike).
  services.vault-agent.instances.runner-fleet = {
    enable = true;
    settings = import ../lib/vault-agent-config.nix {
      # Images (templates, provider null) are built before a Vault is known,
      # whatever inventory the flake read: VAULT_ADDR then comes from
      # host.json via bootstrap (vault.env below).
      address = if host.provider == null then null else vault.address or null;
      roleIdFile = paths.roleIdFile;
      # bootstrap unwraps the single-use wrapping token once and keeps the
      # (multi-use) secret_id here, because the agent logs in again after
      # every restart and could not unwrap the same token twice.
      secretIdFile = paths.secretIdFile;
      authMount = vault.authMount or "approle";
      secrets = host.secrets or [ ];
    };
  };

  # /run/secrets is created here, not with RuntimeDirectory: the upstream
  # module already sets RuntimeDirectory = "vault-agent" on this unit.
  systemd.tmpfiles.rules = [ "d ${paths.secretsDir} 0751 root root -" ];

  systemd.services."vault-agent-runner-fleet" = {
    # Before bootstrap has unwrapped the secret_id there is nothing to log in with.
    unitConfig.ConditionPathExists = paths.secretIdFile;
    # exit_on_retry_failure makes a failed render exit; keep restarting while
    # Vault is unreachable instead of stopping after upstream's 3 tries a minute.
    startLimitIntervalSec = lib.mkForce 0;
    serviceConfig = {
      # "-": optional; absent on hosts whose inventory gives the address.
      EnvironmentFile = "-${paths.vaultEnv}";
      RestartSec = 10;
    };
  };
}
