package main

// The completion scripts. Each calls the binary the user typed (warren or
// wrn) with `__complete -- WORDS... CURRENT` and offers what it prints.
var completionScripts = map[string]string{
	"bash": `# bash completion for warren and wrn: source <(warren completion bash)
_warren_complete() {
    local cur="${COMP_WORDS[COMP_CWORD]}"
    local IFS=$'\n'
    COMPREPLY=($(command "${COMP_WORDS[0]}" __complete -- "${COMP_WORDS[@]:1:COMP_CWORD-1}" "$cur" 2>/dev/null))
    # NAME= (service scale) and KEY= (--filter) go on without a space.
    if [[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == *= ]]; then
        compopt -o nospace 2>/dev/null
    fi
}
complete -o default -F _warren_complete warren wrn
`,
	"zsh": `#compdef warren wrn
# zsh completion for warren and wrn: source <(warren completion zsh) after compinit
_warren() {
    local out
    out="$(${words[1]} __complete -- "${(@)words[2,CURRENT-1]}" "${words[CURRENT]}" 2>/dev/null)"
    [[ -n $out ]] || return 1
    local -a cands
    cands=("${(@f)out}")
    compadd -Q -S '' -- "${(@M)cands:#*=}"
    compadd -Q -- "${(@)cands:#*=}"
}
compdef _warren warren wrn
`,
	"fish": `# fish completion for warren and wrn: warren completion fish | source
function __warren_complete
    set -l words (commandline -opc)
    set -l cur (commandline -ct)
    $words[1] __complete -- $words[2..-1] $cur 2>/dev/null
end
complete -c warren -f -a '(__warren_complete)'
complete -c wrn -f -a '(__warren_complete)'
`,
}
