# Services that read /run/secrets start only once vault-agent has rendered
# every file this host needs. vault-agent is Type=simple (it is "started" long
# before it has logged in), so ordering after it proves nothing; this oneshot
# waits for the files instead, and the consumers order and depend on it.
#
# First boot: the consumers are skipped (ConditionPathExists on the secret_id,
# which only bootstrap writes), so neither boot nor a deploy's switch fails;
# bootstrap then restarts runner-fleet-secrets, which pulls them in (Wants).
# Later boots: agent -> secrets (waits) -> consumers, in that order.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (config.runnerFleet) host;
  paths = import ../lib/host-paths.nix;
  files = map (s: s.file) (host.secrets or [ ]);
  cfg = config.runnerFleet.secrets;
in
{
  options.runnerFleet.secrets = {
    consumers = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      description = "systemd services (without .service) that read files vault-agent renders.";
    };
    timeoutSec = lib.mkOption {
      type = lib.types.ints.positive;
      default = 300;
      description = "How long runner-fleet-secrets waits for the files before it fails.";
    };
  };

  config = {
    runnerFleet.secrets.consumers =
      lib.optional (lib.elem "cache" host.roles) "harmonia"
      ++ lib.optional (lib.elem "fireactions" host.roles) "fireactions"
      ++ lib.optional (lib.elem "forgejo-runner" host.roles) "gitea-runner-forgejo"
      ++ lib.optional (lib.elem "gitea-runner" host.roles) "gitea-runner-gitea"
      ++ lib.optional (lib.elem "gitlab-runner" host.roles) "gitlab-runner";

    systemd.services = {
      runner-fleet-secrets = {
        description = "Wait until vault-agent has rendered this host's secrets";
        wantedBy = [ "multi-user.target" ];
        # wants, not requires: a restart of the agent (new secrets list) must
        # not restart every consumer; bootstrap restarts this unit on purpose.
        wants = [ "vault-agent-runner-fleet.service" ];
        after = [ "vault-agent-runner-fleet.service" ];
        unitConfig.ConditionPathExists = paths.secretIdFile;
        path = [ pkgs.coreutils ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          TimeoutStartSec = cfg.timeoutSec + 30;
        };
        script = ''
          deadline=$(( $(date +%s) + ${toString cfg.timeoutSec} ))
          for f in ${lib.escapeShellArgs files}; do
            until [ -s "$f" ]; do
              if [ "$(date +%s)" -ge "$deadline" ]; then
                echo "runner-fleet-secrets: $f not rendered after ${toString cfg.timeoutSec}s (see journalctl -u vault-agent-runner-fleet)" >&2
                exit 1
              fi
              sleep 2
            done
          done
        '';
      };
    }
    // lib.genAttrs cfg.consumers (_: {
      # Requires: restarting runner-fleet-secrets restarts them after the wait.
      # wantedBy: starting it also starts them when they were skipped before.
      wantedBy = [ "runner-fleet-secrets.service" ];
      requires = [ "runner-fleet-secrets.service" ];
      after = [ "runner-fleet-secrets.service" ];
      unitConfig.ConditionPathExists = paths.secretIdFile;
    });
  };
}
