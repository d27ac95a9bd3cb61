# Services that read /run/secrets start only once vault-agent has rendered
# every file this host needs. vault-agent is Type=simple (it is "started" long
# before it has logged in), so ordering after it proves nothing; this oneshot
# waits for the files instead, and the consumers order after it. Runner units only
# want it (a restart of a unit reaches the units that Require it, and would kill
# their jobs); harmonia requires it.
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
  # Consumers that run CI jobs (modules/bootstrap.nix runnerUnits; gitlab-runner for the
  # role main adds).
  runnerUnits = [ "fireactions" "gitea-runner-forgejo" "gitea-runner-gitea" "gitlab-runner" ];
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
    // lib.genAttrs cfg.consumers (name: {
      # wantedBy: starting runner-fleet-secrets also starts them when they were skipped
      # before (first boot). after: on a boot they start once the files are there.
      wantedBy = [ "runner-fleet-secrets.service" ];
      after = [ "runner-fleet-secrets.service" ];
      unitConfig.ConditionPathExists = paths.secretIdFile;
    }
    // (if lib.elem name runnerUnits then {
      # Wants, not Requires: systemd propagates a stop or restart of a unit to the units
      # that Require it (docs/upstream.md), and a runner's restart kills its jobs (a
      # re-seed restarts runner-fleet-secrets). A runner takes new secrets at its next
      # drained restart (fireactions keeps its GitHub client until then anyway).
      wants = [ "runner-fleet-secrets.service" ];
    } else {
      # Requires: restarting runner-fleet-secrets restarts it after the wait, with the new
      # secrets (harmonia: the cache signing key); it runs no jobs.
      requires = [ "runner-fleet-secrets.service" ];
    }));
  };
}
