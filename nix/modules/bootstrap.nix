# The host commands of the contract (docs/contracts.md):
#   runner-fleet-bootstrap    first boot: unwrap the secret_id, start vault-agent,
#                             render the fireactions config
#   runner-fleet-apply-pools  install a new pools.json from stdin
#   runner-fleet-seed         install the files cloud-init writes elsewhere
#                             (existing machines) from stdin, then bootstrap
#   runner-fleet-restart-changed  after a switch: restart the runner units the switch left
#                             alone (restartIfChanged = false) because their definition
#                             changed, fireactions after a drain (runner-fleet-drain)
# plus a path unit so any change to pools.json is picked up without a reboot.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  paths = import ../lib/host-paths.nix;
  inherit (paths) etcDir stateDir;
  fireactions = config.services.fireactions.enable;
  renderer = pkgs.callPackage ../pkgs/render-fireactions-config.nix { };
  seedFiles = pkgs.callPackage ../pkgs/runner-fleet-seed.nix { };
  drain = pkgs.callPackage ../pkgs/runner-fleet-drain.nix { };
  # The units whose restart would stop running jobs; a switch does not restart them
  # (restartIfChanged = false in their roles) and each records, when it starts, the unit
  # file it started from (lib/record-unit.nix), so restart-changed sees which ones are stale.
  runnerUnits = [ "fireactions" "gitea-runner-forgejo" "gitea-runner-gitea" "gitlab-runner" ];

  bootstrap = pkgs.writeShellApplication {
    name = "runner-fleet-bootstrap";
    runtimeInputs = with pkgs; [ coreutils jq vault systemd ];
    text = ''
      umask 077
      install -d -m 0700 ${stateDir}/vault

      # vault-agent takes its address from here when the inventory had none
      # (images); host.json is written by cloud-init or runner-fleet-seed.
      addr=$(jq -er '.vault.address' ${paths.hostJson})
      printf 'VAULT_ADDR=%s\n' "$addr" > ${paths.vaultEnv}.tmp
      mv -f ${paths.vaultEnv}.tmp ${paths.vaultEnv}
      export VAULT_ADDR="$addr"

      # The wrapping token is single use: unwrap once, keep the secret_id.
      if [ ! -s ${paths.secretIdFile} ]; then
        wrapped=${paths.wrappedSecretIdFile}
        if [ ! -s "$wrapped" ]; then
          echo "runner-fleet-bootstrap: $wrapped is missing and no secret_id is stored" >&2
          exit 1
        fi
        # The token goes in through the environment, never on a command line.
        if ! secret_id=$(VAULT_TOKEN=$(cat "$wrapped") vault unwrap -field=secret_id); then
          echo "runner-fleet-bootstrap: unwrapping failed (expired or already used?)" >&2
          exit 1
        fi
        printf '%s' "$secret_id" > ${paths.secretIdFile}.tmp
        mv -f ${paths.secretIdFile}.tmp ${paths.secretIdFile}
        unset secret_id
        # Spent; leaving it would only mislead the next reader.
        rm -f "$wrapped"
      fi

      # Publish this host's SSH host key to its own Vault path, with a token
      # only this host can get (its secret_id came wrapped to it alone); the
      # deploy side reads and pins it (docs/contracts.md). Before the secrets
      # wait, so a host whose secrets cannot render can still be deployed to.
      # Credentials go in on stdin as JSON, never on a command line.
      mount=$(jq -er '.vault.mount' ${paths.hostJson})
      auth=$(jq -er '.vault.authMount // "approle"' ${paths.hostJson})
      name=$(jq -er '.name' ${paths.hostJson})
      token=$(jq -n --rawfile r ${paths.roleIdFile} --rawfile s ${paths.secretIdFile} \
        '{role_id: ($r | rtrimstr("\n")), secret_id: ($s | rtrimstr("\n"))}' \
        | vault write -field=token "auth/$auth/login" -)
      key=$(cut -d' ' -f1,2 ${paths.sshHostKeyPub})
      published=$(VAULT_TOKEN="$token" vault kv get -mount="$mount" -field=public_key "hosts/$name/ssh-host-key" 2>/dev/null || true)
      if [ "$published" != "$key" ]; then
        printf '%s' "$key" | VAULT_TOKEN="$token" vault kv put -mount="$mount" "hosts/$name/ssh-host-key" public_key=- >/dev/null
      fi
      VAULT_TOKEN="$token" vault token revoke -self >/dev/null || true
      unset token

      # The agent logs in with the stored secret_id and renders /run/secrets;
      # runner-fleet-secrets waits for every file and then (re)starts the
      # services that read them (modules/secrets.nix), so a failure here is a
      # real one, not a race with the agent. Restart only when the agent's
      # inputs changed (first boot, a re-seed): on a plain reboot everything
      # already started in order, and a restart would stop running jobs.
      stamp=$(cat ${paths.vaultEnv} ${paths.roleIdFile} ${paths.secretIdFile} | sha256sum | cut -d' ' -f1)
      if [ "$(cat ${stateDir}/bootstrap.stamp 2>/dev/null || true)" != "$stamp" ]; then
        systemctl restart vault-agent-runner-fleet.service
        systemctl restart runner-fleet-secrets.service
        printf '%s\n' "$stamp" > ${stateDir}/bootstrap.stamp
      else
        systemctl start vault-agent-runner-fleet.service runner-fleet-secrets.service
      fi
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
        # Apply now (the path unit would too) so a failure reaches the caller. A running
        # fireactions reloads (ExecReload: runner-fleet-drain --reload): pools change in place,
        # nothing is restarted, no job is killed. A stopped one starts.
        systemctl reload-or-restart fireactions.service
      ''}
    '';
  };

  restartChanged = pkgs.writeShellApplication {
    name = "runner-fleet-restart-changed";
    runtimeInputs = [ pkgs.coreutils pkgs.systemd drain ];
    text = ''
      # Usage: runner-fleet-restart-changed [runner-fleet-drain options, e.g. --timeout-minutes 60]
      # A failed drain (jobs still running at the timeout) leaves the unit as it is and fails.
      rc=0
      for unit in ${lib.concatStringsSep " " runnerUnits}; do
        file=/etc/systemd/system/$unit.service
        [ -e "$file" ] || continue
        systemctl is-active --quiet "$unit.service" || continue
        now=$(readlink -f "$file")
        started=$(cat "${paths.unitsDir}/$unit" 2>/dev/null || true)
        [ "$now" = "$started" ] && continue
        if [ "$unit" = fireactions ]; then
          echo "runner-fleet-restart-changed: fireactions.service changed: draining, then restarting it"
          runner-fleet-drain "$@" -- systemctl restart fireactions.service || rc=$?
        else
          # forgejo-runner stops gracefully: it waits up to its shutdown_timeout for running jobs;
          # gitlab-runner likewise on SIGQUIT (its KillSignal), up to TimeoutStopSec.
          echo "runner-fleet-restart-changed: $unit.service changed: restarting it (running jobs finish first)"
          systemctl restart "$unit.service" || rc=$?
        fi
      done
      exit "$rc"
    '';
  };

  retire = pkgs.writeShellApplication {
    name = "runner-fleet-retire";
    runtimeInputs = [ pkgs.systemd drain ];
    text = ''
      # Usage: runner-fleet-retire [runner-fleet-drain options]. Before the host is removed or
      # replaced: drain fireactions and leave its pools paused; stop the forgejo/gitea runners,
      # which finish their running jobs first (shutdown_timeout). Fails when jobs still run.
      if systemctl is-active --quiet fireactions.service; then
        runner-fleet-drain --no-resume "$@"
      fi
      for unit in ${lib.concatStringsSep " " (builtins.filter (u: u != "fireactions") runnerUnits)}; do
        if systemctl is-active --quiet "$unit.service"; then
          echo "runner-fleet-retire: stopping $unit.service (running jobs finish first)"
          systemctl stop "$unit.service"
        fi
      done
    '';
  };

  reboot = pkgs.writeShellApplication {
    name = "runner-fleet-reboot";
    runtimeInputs = [ pkgs.systemd drain ];
    text = ''
      # Usage: runner-fleet-reboot [runner-fleet-drain options]. A reboot the deploy asked for
      # (the new system's kernel, initrd or modules differ): drain fireactions first (its pools
      # start fresh after the boot); forgejo/gitea runners finish their jobs as systemd stops
      # them (shutdown_timeout). A failed drain reboots nothing.
      if systemctl is-active --quiet fireactions.service; then
        runner-fleet-drain --no-resume "$@"
      fi
      echo "runner-fleet-reboot: rebooting"
      systemctl reboot
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
  environment.systemPackages = [ bootstrap applyPools seed renderer restartChanged retire reboot drain ];

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
    # sshd-keygen writes the host key bootstrap publishes.
    after = [ "network-online.target" "cloud-final.service" "sshd-keygen.service" ];
    wants = [ "network-online.target" "sshd-keygen.service" ];
    unitConfig.ConditionPathExists = paths.hostJson;
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
    description = "Reload fireactions with a freshly rendered config";
    serviceConfig = {
      Type = "oneshot";
      # Reload, never restart: a restart stops every microVM and the jobs in them. A new
      # GitHub App key reaches fireactions at its next restart (v0.4.0 makes its GitHub client
      # once, at start: docs/upstream.md).
      ExecStart = "${pkgs.systemd}/bin/systemctl reload-or-restart fireactions.service";
    };
  };
}
