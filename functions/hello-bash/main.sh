# The bash handler contract: the event JSON arrives on stdin; what the script prints on
# stdout is the invocation's `output` and must be JSON. Builtins only: no process to start.
IFS= read -r -d '' event || true
name=world
if [[ $event =~ \"name\"[[:space:]]*:[[:space:]]*\"([A-Za-z0-9\ _.-]*)\" ]]; then
  name=${BASH_REMATCH[1]}
fi
printf '{"message":"Hello, %s!","runtime":"bash"}\n' "$name"
