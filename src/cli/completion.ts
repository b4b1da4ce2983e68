/**
 * Shell completion scripts for bash and zsh, generated from the command table: commands,
 * subcommands and each one's options; file names after an option that takes a FILE or DIR. zsh
 * runs the same function through its bash compatibility layer (`bashcompinit`).
 */
import type { OptionTable } from './args.ts'
import type { Command } from './commands.ts'

const FILE_VALUES = /^(FILE|DIR|PATH)$/

function words (options: OptionTable | undefined): string {
  return Object.keys(options ?? {}).map(o => `--${o}`).concat('--help').join(' ')
}

function valued (commands: readonly Command[]): { files: string[], other: string[] } {
  const files = new Set<string>()
  const other = new Set<string>()
  const add = (t: OptionTable | undefined): void => {
    for (const [name, spec] of Object.entries(t ?? {})) if (spec.type === 'string') (FILE_VALUES.test(spec.value ?? '') ? files : other).add(`--${name}`)
  }
  for (const c of commands) {
    add(c.options)
    for (const s of Object.values(c.subcommands ?? {})) add(s.options)
  }
  return { files: [...files], other: [...other].filter(o => !files.has(o)) }
}

export function completionScript (shell: 'bash' | 'zsh', commands: readonly Command[]): string {
  const { files, other } = valued(commands)
  const serve = commands.find(c => c.name === 'serve')
  const cases = commands.map(c => {
    const subs = Object.keys(c.subcommands ?? {})
    if (subs.length === 0) return `    ${c.name}) opts="${words(c.options)}" ;;`
    const inner = Object.entries(c.subcommands!).map(([s, spec]) => `        ${s}) opts="${words(spec.options)}" ;;`).join('\n')
    return `    ${c.name}) subs="${subs.join(' ')}"\n      case "$sub" in\n${inner}\n      esac ;;`
  }).join('\n')
  const body = `# narswarm completion for ${shell}: \`source <(narswarm completion ${shell})\` in ~/.${shell}rc
_narswarm() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" prev="\${COMP_WORDS[COMP_CWORD-1]}"
  local cmd="" sub="" subs="" opts="" i w skip=""
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    if [[ -n $skip ]]; then skip=""; continue; fi
    case "$w" in
      ${[...files, ...other].join('|') || '--'}) skip=1 ;;
      -*) ;;
      *) if [[ -z $cmd ]]; then cmd="$w"; elif [[ -z $sub ]]; then sub="$w"; fi ;;
    esac
  done
  case "$prev" in
    ${files.join('|') || '--'}) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    ${other.join('|') || '--'}) COMPREPLY=(); return ;;
  esac
  case "$cmd" in
    "") subs="${commands.map(c => c.name).join(' ')}"; opts="${words(serve?.options)}" ;;
${cases}
  esac
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  elif [[ -n $subs && ( -z $cmd || -z $sub ) ]]; then
    COMPREPLY=($(compgen -W "$subs" -- "$cur"))
  else
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}
`
  return shell === 'bash'
    ? `${body}complete -F _narswarm narswarm\n`
    : `#compdef narswarm\nautoload -U +X bashcompinit && bashcompinit\n${body}complete -F _narswarm narswarm\n`
}
