# Sourced first by every shell script of the repository: with --help or -h among the script's arguments, print
# the script's header comment (its usage) and exit 0 before anything runs.
for argument in "$@"; do
  if [[ $argument == --help || $argument == -h ]]; then
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
    exit 0
  fi
done
