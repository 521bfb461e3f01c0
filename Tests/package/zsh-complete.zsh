# Usage: zsh zsh-complete.zsh <directory with _imgtool> <word>...
# Prints, one a line, the matches zsh's completion system offers for the words typed so far (the
# last one is completed). zsh completes only inside its line editor, so this drives an
# interactive zsh in a pseudo-terminal (zpty): compinit with the directory first in fpath, TAB
# bound to complete-word, compadd wrapped to print what it adds, and a NUL line before and after
# the completion so the matches can be told from the echo of the typing.
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PROMPT="
zpty -w z "fpath=(${(q)1} \$fpath); autoload -U compinit; compinit -u -D"
zpty -w z "bindkey '^I' complete-word"
zpty -w z "null-line () { echo -E - \$'\\0' }"
zpty -w z "compprefuncs=( null-line )"
zpty -w z "comppostfuncs=( null-line exit )"
zpty -w z "zstyle ':completion:*' list-grouped false"
zpty -w z "zstyle ':completion:*' insert-tab false"
# compadd's -O/-A/-D only collect matches for the caller: pass those through untouched.
zpty -w z "compadd () {
  if [[ \${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd \"\$@\"; return \$?; fi
  typeset -a hits; builtin compadd -A hits \"\$@\"
  (( \$#hits )) || return 1
  print -l -- \"\${hits[@]}\"
}"
shift
zpty -w z "$*"$'\t'
integer nul=0
while zpty -r z; do :; done | while IFS= read -r line; do
  if [[ $line == *$'\0\r' ]]; then (( nul++ )) && exit 0 || continue; fi
  (( nul )) && print -r -- ${line%$'\r'}
done
