# STAND-IN, not nixpkgs. CI cannot fetch nixpkgs, so test/nix.test.ts calls our
# NixOS modules as plain functions with this small imitation of the parts of
# nixpkgs' `lib` they use, and inspects the definitions they return. The
# helpers (optional, elem, concatStrings, ...) compute what nixpkgs' do; the
# module-system markers (mkIf, mkOverride, mkMerge) are kept as inspectable
# data with nixpkgs' priority numbers (lib/modules.nix: mkOptionDefault 1500,
# mkDefault 1000, plain definitions 100, mkForce 50), so a test can tell which
# definition wins against an upstream module's. It does not merge modules;
# real merging was checked locally with nixpkgs.lib (see the report in
# docs/upstream.md's nix/ section).
rec {
  mkIf = condition: content: { _type = "if"; inherit condition content; };
  mkMerge = contents: { _type = "merge"; inherit contents; };
  mkOverride = priority: content: { _type = "override"; inherit priority content; };
  mkOptionDefault = mkOverride 1500;
  mkDefault = mkOverride 1000;
  mkForce = mkOverride 50;
  mkOption = attrs: attrs // { _type = "option"; };
  mkEnableOption = name: mkOption { default = false; description = "Whether to enable ${name}."; };
  literalExpression = text: { _type = "literalExpression"; inherit text; };
  types = {
    str = "str";
    attrs = "attrs";
    bool = "bool";
    lines = "lines";
    package = "package";
    nullOr = t: "nullOr ${t}";
    listOf = t: "listOf ${t}";
    attrsOf = t: "attrsOf ${t}";
    ints.positive = "positive int";
  };

  inherit (builtins) elem genList concatStringsSep;
  optional = cond: x: if cond then [ x ] else [ ];
  optionals = cond: xs: if cond then xs else [ ];
  optionalString = cond: s: if cond then s else "";
  concatStrings = concatStringsSep "";
  replicate = n: x: genList (_: x) n;
  concatMapStringsSep = sep: f: xs: concatStringsSep sep (map f xs);
  genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
  inherit (builtins) mapAttrs;
  optionalAttrs = cond: attrs: if cond then attrs else { };
  # lib.strings.hasInfix: the infix occurs in the string (matched literally).
  hasInfix = infix: content: builtins.length (builtins.split (builtins.replaceStrings
    [ "\\" "." "[" "]" "*" "+" "?" "(" ")" "{" "}" "|" "^" "$" ]
    [ "\\\\" "\\." "\\[" "\\]" "\\*" "\\+" "\\?" "\\(" "\\)" "\\{" "\\}" "\\|" "\\^" "\\$" ] infix) content) > 1;
  hasPrefix = p: s: builtins.substring 0 (builtins.stringLength p) s == p;
  removePrefix =
    p: s:
    if hasPrefix p s then
      builtins.substring (builtins.stringLength p) (builtins.stringLength s - builtins.stringLength p) s
    else
      s;
  # As nixpkgs' lib/strings.nix: quote only what needs it.
  escapeShellArg =
    s:
    if builtins.match "[[:alnum:],._+:@%/-]+" s == null then
      "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] s + "'"
    else
      s;
  escapeShellArgs = xs: concatStringsSep " " (map escapeShellArg xs);
  # registry-mirror.nix (#23): nixpkgs lib/attrsets.nix and lib/strings.nix, same meaning.
  nameValuePair = name: value: { inherit name value; };
  mapAttrs' = f: set: builtins.listToAttrs (builtins.attrValues (builtins.mapAttrs f set));
  mapAttrsToList = f: set: map (n: f n set.${n}) (builtins.attrNames set);
  concatMapStrings = f: xs: concatStringsSep "" (map f xs);
  attrNames = builtins.attrNames;
  replaceStrings = builtins.replaceStrings;
  sort = builtins.sort;
  lessThan = builtins.lessThan;
  getExe = drv: "${drv}/bin/${drv.meta.mainProgram or drv.name or "main"}";
}
