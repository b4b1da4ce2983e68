# The NixOS module: services.narswarm runs `narswarm serve` as a hardened systemd service, with
# its configuration file rendered from `settings` (every key of narswarm.example.toml), its state in
# /var/lib/narswarm, and secret files handed over as systemd credentials. With addToSubstituters,
# the machine's Nix uses it as a substituter.
#
#   services.narswarm = {
#     enable = true;
#     addToSubstituters = true;
#     openFirewall = true;
#     peerKeyFile = "/run/keys/narswarm-peer-key";
#     settings.backend = [ "torrent:" ];
#   };
{ config, lib, pkgs, ... }:

let
  cfg = config.services.narswarm;
  toml = pkgs.formats.toml { };
  unit = "narswarm.service";
  # Where systemd puts the files of `credentials` for the service (LoadCredential).
  credentialsDir = "/run/credentials/${unit}";

  # HOST:PORT (or [IPv6]:PORT), as narswarm parses `listen` and `peer-listen`.
  splitAddress = address: rec {
    port = lib.last (lib.splitString ":" address);
    host = lib.removeSuffix ":${port}" address;
  };
  listen = splitAddress (cfg.settings.listen or "127.0.0.1:37515");
  # Nix reaches a wildcard listener on loopback.
  localHost = { "0.0.0.0" = "127.0.0.1"; "" = "127.0.0.1"; "[::]" = "[::1]"; }.${listen.host} or listen.host;
  substituterUrl = "http://${localHost}:${listen.port}";
  peerListen = cfg.settings.peer-listen or "0.0.0.0:37516";

  # The keys narswarm accepts narinfos with are the ones Nix must accept them with.
  upstreamKeys = lib.concatMap (u: if builtins.isAttrs u then u.trusted-public-keys or [ ] else [ ]) (cfg.settings.upstream or [ ]);
  keys = lib.unique (upstreamKeys ++ (cfg.settings.trusted-public-keys or [ ]));
in
{
  options.services.narswarm = {
    enable = lib.mkEnableOption "narswarm, a peer-to-peer binary cache for Nix";

    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.narswarm or (pkgs.callPackage ./package.nix { });
      defaultText = lib.literalExpression "pkgs.narswarm";
      description = "The narswarm package.";
    };

    settings = lib.mkOption {
      type = toml.type;
      default = { };
      example = lib.literalExpression ''
        {
          listen = "127.0.0.1:37515";
          backend = [ "torrent:?upload-limit=1MiB" ];
          upstream = [
            { url = "https://cache.nixos.org"; trusted-public-keys = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ]; }
          ];
        }
      '';
      description = ''
        narswarm's configuration, rendered to its TOML file. The keys are those of
        narswarm.example.toml (listen, upstream, mapper, backend, log-level, …); an unknown key
        stops the service with a message naming it. `state-dir` defaults to /var/lib/narswarm.
        Secrets do not belong here (the file is in the world-readable Nix store): see `credentials`.
      '';
    };

    credentials = lib.mkOption {
      type = lib.types.attrsOf lib.types.str;
      default = { };
      example = lib.literalExpression ''{ NAME = "/run/keys/narswarm-NAME"; }'';
      description = ''
        Secret files handed to the service as systemd credentials (LoadCredential): the file of
        NAME is readable by the service alone, at ${credentialsDir}/NAME, which is the path to
        give in `settings`. The files stay outside the Nix store. The peer group key, the one
        secret file narswarm serve reads today, has its own option: `peerKeyFile`.
      '';
    };

    peerKeyFile = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "/run/keys/narswarm-peer-key";
      description = ''
        A file holding the peer group key (see `peer-key` in narswarm.example.toml): handed to the
        service as the credential `peer-key`, which `settings.peer-key-file` then names. A string,
        not a Nix path, so that the key never enters the world-readable Nix store.
      '';
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = ''
        Open the port of `settings.peer-listen` (TCP, 37516 by default; none when it is "off") and,
        unless `settings.discovery` is "off", mDNS (5353/UDP) for the LAN swarm.
      '';
    };

    addToSubstituters = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = ''
        Make this machine's Nix use narswarm: its address goes into nix.settings.substituters,
        and the keys of its upstreams (and `trusted-public-keys`) into
        nix.settings.trusted-public-keys.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    services.narswarm.settings = {
      state-dir = lib.mkDefault "/var/lib/narswarm";
      peer-key-file = lib.mkIf (cfg.peerKeyFile != null) "${credentialsDir}/peer-key";
    };
    services.narswarm.credentials = lib.mkIf (cfg.peerKeyFile != null) { peer-key = cfg.peerKeyFile; };

    nix.settings = lib.mkIf cfg.addToSubstituters {
      substituters = lib.mkBefore [ substituterUrl ];
      trusted-public-keys = keys;
    };

    networking.firewall = lib.mkIf cfg.openFirewall {
      allowedTCPPorts = lib.optional (peerListen != "off") (lib.toInt (splitAddress peerListen).port);
      allowedUDPPorts = lib.optional ((cfg.settings.discovery or "mdns") != "off") 5353;
    };

    systemd.services.narswarm = {
      description = "narswarm, a peer-to-peer binary cache for Nix";
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
      # The machine's certificate authorities (security.pki), as nix-daemon trusts them.
      environment.NIX_SSL_CERT_FILE = "/etc/ssl/certs/ca-certificates.crt";
      serviceConfig = {
        ExecStart = "${lib.getExe cfg.package} serve --config ${toml.generate "narswarm.toml" cfg.settings}";
        Restart = "on-failure";
        RestartSec = 5;
        # SIGTERM lets transfers in flight finish (shutdown-grace, 10 s by default).
        TimeoutStopSec = 30;
        LoadCredential = lib.mapAttrsToList (name: file: "${name}:${file}") cfg.credentials;

        DynamicUser = true;
        StateDirectory = "narswarm";
        StateDirectoryMode = "0700";
        WorkingDirectory = "/var/lib/narswarm";
        UMask = "0077";

        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        ProcSubset = "pid";
        NoNewPrivileges = true;
        CapabilityBoundingSet = "";
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" "AF_NETLINK" ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        RemoveIPC = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" "~@privileged" ];
        # V8 compiles code at run time: MemoryDenyWriteExecute would stop Node.
        MemoryDenyWriteExecute = false;
      };
    };
  };
}
