/**
 * narswarm's Nix formats as a library (`narswarm/nix`): hashes, nix32, store paths, content
 * addresses, narinfo, signatures, nix-cache-info, NAR reading/writing/dumping, compression.
 * Nothing here depends on the rest of narswarm.
 */
export * from './nix32.ts'
export * from './hash.ts'
export * from './store-path.ts'
export * from './content-address.ts'
export { NarInfo, sigSyntaxProblem, COMPRESSIONS as NARINFO_COMPRESSIONS } from './narinfo.ts'
export type { NarInfoLine, NarInfoFields, NarInfoTransport } from './narinfo.ts'
export * from './signature.ts'
export * from './cache-info.ts'
export * from './compression.ts'
export * from './nar/reader.ts'
export * from './nar/writer.ts'
export * from './nar/dump.ts'
export * from './nar/listing.ts'
