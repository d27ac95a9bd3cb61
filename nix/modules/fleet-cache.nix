# Every host substitutes from the stack's cache hosts first (priority 30, before
# cache.nixos.org's 40), then from cache.extraSubstituters, then the default
# cache. inventory.json `cache` lists them with their public keys
# (components/fleet-cache.ts); a cache host does not list itself.
#
# A cache that is down costs a host connect-timeout seconds once: Nix then
# disables that substituter for 60 s and asks the next one, and `fallback`
# builds a path locally when every substitute for it fails (docs/upstream.md).
{
  config,
  lib,
  ...
}:
let
  inherit (config.runnerFleet) inventory host;
  cache = inventory.cache or { substituters = [ ]; connectTimeout = 5; };
  substituters = builtins.filter (s: (s.host or null) != host.name) cache.substituters;
  # Nix reads ?priority= as the store's priority (before nix-cache-info is fetched).
  urlOf = s: if s ? priority then "${s.url}?priority=${toString s.priority}" else s.url;
in
{
  config = lib.mkIf (substituters != [ ]) {
    # extra-*: appended to NixOS' own substituters (cache.nixos.org), never replacing them.
    nix.settings = {
      extra-substituters = map urlOf substituters;
      extra-trusted-public-keys = map (s: s.publicKey) substituters;
      connect-timeout = cache.connectTimeout;
      fallback = true;
    };
  };
}
