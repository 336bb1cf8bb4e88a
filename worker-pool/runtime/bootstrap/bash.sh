# ZViz bootstrap for bash, run inside a pre-warmed sandbox before its invocation arrives.
#   bash bootstrap.sh handler <script>  say ready, run the script: the event arrives on
#                                       stdin, the result is what it prints on stdout
#   bash bootstrap.sh inline <path>     say ready, read the work from fd 3 and run it:
#                                       a NUL-separated list: code, then NAME=VALUE
#                                       entries, then an empty field, then the arguments
# fd 3 brings the work, fd 4 takes the one-byte "R" that says the runtime is up.
mode=$1 entry=$2
printf R >&4
if [ "$mode" = handler ]; then
  exec 3<&- 4>&-
  exec /usr/bin/bash "$entry"
fi
IFS= read -r -d '' code <&3
while IFS= read -r -d '' kv <&3 && [ -n "$kv" ]; do
  export "${kv?}"
done
args=()
while IFS= read -r -d '' a <&3; do
  args+=("$a")
done
exec 3<&- 4>&-
exec /usr/bin/bash -c "$code" "$entry" "${args[@]}"
