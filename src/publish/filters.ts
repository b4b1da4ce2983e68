/**
 * Which store paths a publish run takes: `--include`/`--exclude` glob patterns on the name part of
 * a store path (`hello-2.12.1`, `*-doc`, `python3-*`; `*` any run of characters, `?` one), and
 * `--max-size` on the NAR size. A path is taken when it matches some include (or none are given),
 * matches no exclude, and is not larger than the maximum.
 */
import { size } from '../util/values.ts'
import { parseStorePath } from '../nix/store-path.ts'

export interface PathFilter {
  include: string[]
  exclude: string[]
  maxSize?: number
}

function globToRegExp (glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')
  return new RegExp(`^${body}$`)
}

/** A predicate answering why a path is left out, or undefined when it is taken. */
export function compileFilter (filter: PathFilter): (storePath: string, narSize: number) => string | undefined {
  const include = filter.include.map(globToRegExp)
  const exclude = filter.exclude.map(g => ({ g, re: globToRegExp(g) }))
  return (storePath, narSize) => {
    const name = parseStorePath(storePath).name
    if (include.length > 0 && !include.some(re => re.test(name))) return 'matches no --include'
    const hit = exclude.find(e => e.re.test(name))
    if (hit !== undefined) return `matches --exclude ${hit.g}`
    if (filter.maxSize !== undefined && narSize > filter.maxSize) return `NAR of ${narSize} bytes is over --max-size ${filter.maxSize}`
    return undefined
  }
}

/** `1048576`, `512K`, `100M`, `2G`, `1.5GiB` → bytes (binary units). */
export function parseSize (text: string, what: string): number {
  return size(text, 0, what)
}
