/**
 * The request paths of a Nix binary cache, as Nix asks for them: `<hash part>.narinfo` and
 * `nar/<nix32 NarHash>.nar[.zst]`. The substituter (app.ts) and the peer listener's binary cache
 * (peer/lan-cache.ts) answer the same paths.
 */

/** `/<32 nix32 characters>.narinfo`; group 1 is the hash part. */
export const NARINFO_PATH = /^\/([0-9a-df-np-sv-z]{32})\.narinfo$/
/** `/nar/<52 nix32 characters>.nar` or `.nar.zst`; group 1 is the NarHash, group 2 `.zst` if there. */
export const NAR_PATH = /^\/nar\/([0-9a-df-np-sv-z]{52})\.nar(\.zst)?$/
