# The host commands of the contract (docs/contracts.md):
#   runner-fleet-bootstrap    first boot: unwrap the secret_id, start vault-agent,
#                             render the fireactions config
#   runner-fleet-apply-pools  install a new pools.json from stdin
#   runner-fleet-seed         install the files cloud-init writes elsewhere
#                             (existing machines) from stdin, then bootstrap
# plus a path unit so any change to pools.json is picked up without a reboot.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  etcDir = "/etc/runner-fleet";
  stateDir = "/var/lib/runner-fleet";
  fireactions = config.services.fireactions.enable;
  renderer = pkgs.callPackage ../pkgs/render-fireactions-config.nix { };
  seedFiles = pkgs.callPackage ../pkgs/runner-fleet-seed.nix { };

  bootstrap = pkgs.writeShellApplication {
    name = "runner-fleet-bootstrap";
    runtimeInputs = with pkgs; [ coreutils jq vault systemd ];
    text = ''
      umask 077
      install -d -m 0700 ${stateDir}/vault

      # vault-agent takes its address from here (host.json is written by cloud-init).
      addr=$(jq -er '.vault.address' ${etcDir}/host.json)
      printf 'VAULT_ADDR=%s\n' "$addr" > ${stateDir}/vault.env.tmp
      mv -f ${stateDir}/vault.env.tmp ${stateDir}/vault.env

      # The wrapping token is single use: unwrap once, keep the secret_id.
      if [ ! -s ${stateDir}/vault/secret-id ]; then
        wrapped=${etcDir}/vault/wrapped-secret-id
        if [ ! -s "$wrapped" ]; then
          echo "runner-fleet-bootstrap: $wrapped is missing and no secret_id is stored" >&2
          exit 1
        fi
        # The token goes in through the environment, never on a command line.
        if ! secret_id=$(VAULT_ADDR="$addr" VAULT_TOKEN=$(cat "$wrapped") vault unwrap -field=secret_id); then
          echo "runner-fleet-bootstrap: unwrapping failed (expired or already used?)" >&2
          exit 1
        fi
        printf '%s' "$secret_id" > ${stateDir}/vault/secret-id.tmp
        mv -f ${stateDir}/vault/secret-id.tmp ${stateDir}/vault/secret-id
        # Spent; leaving it would only mislead the next reader.
        rm -f "$wrapped"
      fi

      systemctl restart vault-agent-runner-fleet.service
      ${lib.optionalString fireactions ''
        # fireactions renders its config on start (ExecStartPre) and retries
        # until vault-agent has written the GitHub App secrets.
        systemctl restart fireactions.service
      ''}
    '';
  };

  applyPools = pkgs.writeShellApplication {
    name = "runner-fleet-apply-pools";
    runtimeInputs = [ pkgs.coreutils pkgs.systemd renderer ];
    text = ''
      tmp=$(mktemp ${etcDir}/.pools.json.XXXXXX)
      trap 'rm -f "$tmp"' EXIT
      cat > "$tmp"
      render-fireactions-config --check --pools "$tmp"
      chmod 0644 "$tmp"
      # rename(2) is atomic: readers see the old or the new file, never half.
      mv -f "$tmp" ${etcDir}/pools.json
      trap - EXIT
      ${lib.optionalString fireactions ''
        # Restart now (the path unit would too) so a failure reaches the caller.
        systemctl restart fireactions.service
      ''}
    '';
  };

  seed = pkgs.writeShellApplication {
    name = "runner-fleet-seed";
    runtimeInputs = [ seedFiles bootstrap ];
    text = ''
      # Checks the whole document first (only ${etcDir}/, no ..), then writes
      # each file atomically; it keeps vault/wrapped-secret-id once
      # ${stateDir}/vault/secret-id exists: that token is single use.
      runner-fleet-seed-files --etc-dir ${etcDir} --state-dir ${stateDir}
      # Unwraps (first time only) and restarts vault-agent and the runners, so
      # a failure reaches the caller.
      runner-fleet-bootstrap
    '';
  };
in
{
  environment.systemPackages = [ bootstrap applyPools seed renderer ];

  systemd.tmpfiles.rules = [
    "d ${etcDir} 0755 root root -"
    "d ${etcDir}/vault 0700 root root -"
    "d ${stateDir} 0700 root root -"
  ];

  # cloud-init's runcmd runs bootstrap on the first boot of an image; this unit
  # covers later boots and hosts whose files arrived another way. It is
  # idempotent, so running twice does no harm.
  systemd.services.runner-fleet-bootstrap = {
    description = "runner-fleet host bootstrap";
    wantedBy = [ "multi-user.target" ];
    after = [ "network-online.target" "cloud-final.service" ];
    wants = [ "network-online.target" ];
    unitConfig.ConditionPathExists = "${etcDir}/host.json";
    serviceConfig = {
      Type = "oneshot";
      RemainAfterExit = true;
      ExecStart = lib.getExe bootstrap;
    };
  };

  systemd.paths.runner-fleet-pools = lib.mkIf fireactions {
    description = "Re-render fireactions when pools or its secrets change";
    wantedBy = [ "multi-user.target" ];
    pathConfig = {
      PathChanged = [
        "${etcDir}/pools.json"
        "/run/secrets/github-app-id"
        "/run/secrets/github-app-key.pem"
      ];
      Unit = "runner-fleet-pools.service";
    };
  };

  systemd.services.runner-fleet-pools = lib.mkIf fireactions {
    description = "Restart fireactions with a freshly rendered config";
    serviceConfig = {
      Type = "oneshot";
      ExecStart = "${pkgs.systemd}/bin/systemctl restart fireactions.service";
    };
  };
}
