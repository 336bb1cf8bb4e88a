# ZViz bootstrap for bash, run inside a pre-warmed sandbox before its invocation arrives.
#   bash bootstrap.sh handler <script>    say ready, run the script: the event arrives on
#                                         stdin, the result is what it prints on stdout
#   bash bootstrap.sh inline <path> args  say ready, read the code from fd 3 and run it
# fd 3 brings the work, fd 4 takes the one-byte "R" that says the runtime is up.
mode=$1 entry=$2
shift 2
printf R >&4
if [ "$mode" = handler ]; then
  exec 3<&- 4>&-
  exec /usr/bin/bash "$entry" "$@"
fi
code=$(cat <&3; printf x)
exec 3<&- 4>&-
exec /usr/bin/bash -c "${code%x}" "$entry" "$@"
