# Pure helpers that turn inventory.json into deploy targets.
#
# Only builtins are used, so the tests can evaluate this file with plain
# `nix-instantiate --eval` and no nixpkgs. Everything that needs nixpkgs
# (nixosSystem, deploy-rs' activate, colmena's nixpkgs) is passed in.
let
  inherit (builtins)
    attrNames
    attrValues
    concatMap
    elem
    filter
    foldl'
    fromJSON
    getEnv
    length
    listToAttrs
    mapAttrs
    readFile
    sort
    throw
    ;

  providers = [ "aws" "azure" "hetzner" "digitalocean" "existing" ];
  arches = [ "x86_64" "aarch64" ];
  roles = [ "fireactions" "forgejo-runner" "gitea-runner" "gitlab-runner" "cache" ];

  # Shared with components/config.ts, so validation and evaluation agree.
  reserved = fromJSON (readFile ./reserved-names.json);
  # colmena's hive evaluator: reservedNames = [ "defaults" "network" "meta" ]
  # (src/nix/hive/eval.nix).
  colmenaReserved = reserved.colmena;
  templateNames = concatMap (role: map (arch: "${role}-${arch}") reserved.arches) reserved.templateRoles;

  unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];

  # Fail early, naming the host and the key, instead of deep inside NixOS.
  checkHost =
    key: host:
    let
      fail = msg: throw "inventory: hosts.${key}: ${msg}";
      unknownRoles = filter (r: !(elem r roles)) host.roles;
    in
    if elem key colmenaReserved then
      fail "\"${key}\" is reserved by colmena"
    else if elem key templateNames then
      fail "\"${key}\" is the name of an image template"
    else if host.name != key then
      fail "name is \"${host.name}\" but the host is keyed as \"${key}\""
    else if !(elem host.provider providers) then
      fail "unknown provider \"${host.provider}\""
    else if !(elem host.arch arches) then
      fail "unknown arch \"${host.arch}\""
    else if host.system != "${host.arch}-linux" then
      fail "system \"${host.system}\" does not match arch \"${host.arch}\""
    else if unknownRoles != [ ] then
      fail "unknown role \"${builtins.head unknownRoles}\""
    else
      host;
in
rec {
  inherit roles arches providers colmenaReserved templateNames;
  inherit (reserved) templateRoles;

  # Parse and check an inventory document (a path or a JSON string).
  parseInventory =
    text:
    let
      inv = fromJSON text;
    in
    if (inv.version or null) != 1 then
      throw "inventory: unsupported version ${toString (inv.version or "null")} (expected 1)"
    else
      inv // { hosts = mapAttrs checkHost inv.hosts; };

  readInventory = path: parseInventory (readFile path);

  # $RUNNER_FLEET_INVENTORY when set (requires --impure), else the fallback.
  # getEnv returns "" in pure evaluation, so pure builds use the fallback.
  inventoryPath =
    fallback:
    let
      fromEnv = getEnv "RUNNER_FLEET_INVENTORY";
    in
    if fromEnv == "" then fallback else fromEnv;

  hostNames = inventory: attrNames inventory.hosts;

  # The inventory restricted to hosts of one system ("x86_64-linux"): deploy-rs'
  # deployChecks for checks.<system> must not need another arch's builder.
  forSystem =
    system: inventory:
    inventory // { hosts = filterHosts (h: h.system == system) inventory; };

  hasRole = role: host: elem role host.roles;

  filterHosts =
    pred: inventory:
    listToAttrs (
      map (host: { name = host.name; value = host; }) (filter pred (attrValues inventory.hosts))
    );

  # { <tag> = [ host names ]; }: tags, roles and providers alike, as colmena sees them.
  hostsByTag =
    inventory:
    let
      hosts = attrValues inventory.hosts;
      allTags = sort (a: b: a < b) (unique (concatMap hostTags hosts));
    in
    listToAttrs (
      map (tag: {
        name = tag;
        value = map (h: h.name) (filter (h: elem tag (hostTags h)) hosts);
      }) allTags
    );

  hostsByRole =
    inventory:
    listToAttrs (
      map (role: {
        name = role;
        value = attrNames (filterHosts (hasRole role) inventory);
      }) roles
    );

  # Roles, the provider and the user's tags: lets `colmena apply --on @cache`
  # or `--on @hetzner` select hosts without a separate grouping file.
  hostTags = host: sort (a: b: a < b) (unique (host.roles ++ [ host.provider ] ++ host.tags));

  # Timeouts and rollback defaults for deploy-rs, made explicit so a reader of
  # the flake sees what a deploy will do (components/config.ts has the same).
  # activationTimeout is how long deploy-rs waits for the switch before it
  # gives up and the switch rolls back (src/bin/activate.rs `wait`, default
  # 240 s): the switch waits up to 330 s for runner-fleet-secrets
  # (modules/secrets.nix) and then starts its consumers, so 420 s.
  deployDefaults = {
    magicRollback = true;
    autoRollback = true;
    confirmTimeout = 30;
    activationTimeout = 420;
  };

  # deploy-rs nodes. mkActivate: host -> the activated system profile
  # (deploy-rs.lib.<system>.activate.nixos <nixosConfiguration>).
  deployNodes =
    {
      inventory,
      mkActivate,
      settings ? { },
    }:
    mapAttrs (
      _: host:
      deployDefaults
      // settings
      // {
        hostname = host.address;
        sshUser = host.sshUser;
        # A new host's key is unknown and deploys run without a terminal: trust it on first
        # contact, and refuse a changed key afterwards.
        sshOpts = [
          "-p"
          (toString host.sshPort)
          "-o"
          "StrictHostKeyChecking=accept-new"
        ];
        # deploy-rs connects as sshUser and uses sudo to become root.
        user = "root";
        profiles.system = {
          user = "root";
          path = mkActivate host;
        };
      }
    ) inventory.hosts;

  # colmena's per-node `deployment` attribute.
  colmenaDeployment = host: {
    targetHost = host.address;
    targetPort = host.sshPort;
    # Not root: the deploy user reaches root through its limited sudo rules.
    targetUser = host.sshUser;
    # deploy.remoteBuild (inventory): our deploy passes --build-on-target or
    # --no-build-on-target itself, deciding `auto` from the deploy machine's
    # arch at run time. A hand-run colmena has no such machine to compare with
    # in pure evaluation, so `auto` builds where colmena runs.
    buildOnTarget = (host.remoteBuild or "auto") == "always";
    tags = hostTags host;
  };

  # colmena nodes. mkNode: host -> a NixOS module for that host.
  colmenaNodes =
    { inventory, mkNode }:
    mapAttrs (_: host: {
      deployment = colmenaDeployment host;
      imports = [ (mkNode host) ];
    }) inventory.hosts;

  # The attrset handed to colmena.lib.makeHive. nixpkgsFor: system -> nixpkgs.
  colmenaHive =
    {
      inventory,
      nixpkgsFor,
      mkNode,
      specialArgs ? { },
    }:
    {
      meta = {
        nixpkgs = nixpkgsFor "x86_64-linux";
        nodeNixpkgs = mapAttrs (_: host: nixpkgsFor host.system) inventory.hosts;
        inherit specialArgs;
      };
    }
    // colmenaNodes { inherit inventory mkNode; };

  # nixosConfigurations for the inventory. mkSystem: host -> nixosSystem result.
  nixosConfigurations = { inventory, mkSystem }: mapAttrs (_: mkSystem) inventory.hosts;

  # A host record for building images: same shape as an inventory host, with
  # provider null (the image variant brings the cloud-specific modules).
  templateHost =
    { role, arch }:
    {
      name = "${role}-${arch}";
      provider = null;
      address = null;
      privateAddress = null;
      inherit arch;
      system = "${arch}-linux";
      roles = [ role ];
      tags = [ "template" ];
      sshUser = "deploy";
      sshPort = 22;
      boot = false;
      image = "nix";
      secrets = [ ];
    };

  # One template per (image role, arch): fireactions-x86_64, cache-aarch64, ...
  templates = listToAttrs (
    concatMap (
      role:
      map (
        arch:
        let
          host = templateHost { inherit role arch; };
        in
        {
          name = host.name;
          value = host;
        }
      ) reserved.arches
    ) reserved.templateRoles
  );

  # Quick sanity numbers for tests and `nix eval`.
  summary = inventory: {
    hosts = length (attrNames inventory.hosts);
    byRole = hostsByRole inventory;
  };
}
