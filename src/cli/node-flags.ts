/**
 * The Node flags `narswarm serve` runs with, whichever way it is started (`npm start`, the
 * installed `narswarm`, systemd, the NixOS module). A NAR's bytes pass through as buffers of
 * 16–256 KiB whose memory lies outside V8's heap and is freed only when the small objects that own
 * them are collected. With V8's default young generation (semi-spaces of up to 16 MiB) that
 * happens seldom enough for a hundred megabytes of them to pile up while a big NAR streams; 2 MiB
 * semi-spaces collect them every few megabytes. glibc's malloc, for its part, keeps freed memory
 * in an arena per thread that allocated it; two arenas keep less of it (SERVE_ENV, which a value
 * already in the environment overrides). Both are read only when a process starts, so `serve`
 * replaces its process with one that has them (`process.execve`: same process id, nothing left
 * behind), unless the flags were given already, on the command line or in NODE_OPTIONS.
 * Relaying a 4 GiB NAR into the store peaked at 246 MiB RSS without them, 164 MiB with them, and
 * was faster (bench/chunk-store.ts has the figures).
 */
export const SERVE_NODE_FLAGS = ['--max-semi-space-size=2'] as const
export const SERVE_ENV = { MALLOC_ARENA_MAX: '2' } as const

/** Re-executes this process with SERVE_NODE_FLAGS when it lacks them; returns when it has them (or cannot). */
export function ensureServeNodeFlags (): void {
  const given = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)]
  const missing = SERVE_NODE_FLAGS.filter(flag => !given.some(g => g.split('=')[0] === flag.split('=')[0]))
  // The new process finds the flags in its execArgv, so it goes on instead of executing again.
  if (missing.length === 0 || typeof process.execve !== 'function') return
  process.execve(process.execPath, [process.execPath, ...missing, ...process.execArgv, ...process.argv.slice(1)], { ...SERVE_ENV, ...process.env })
}
