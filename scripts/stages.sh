#!/usr/bin/env bash
# Runs each stage of `make test` to its end, even after one fails, and then
# lists every stage that failed (exit 1 if any did): one red stage must not
# hide the others. Usage: scripts/stages.sh "name" "command" ["name" "command" …]
set -u
failed=()
while [ $# -ge 2 ]; do
  name=$1 cmd=$2
  shift 2
  echo "=== stage: $name"
  start=$(date +%s)
  if bash -c "$cmd"; then
    echo "=== stage ok: $name ($(( $(date +%s) - start )) s)"
  else
    echo "=== stage FAILED: $name ($(( $(date +%s) - start )) s)"
    failed+=("$name")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo
  echo "make test: ${#failed[@]} stage(s) failed:"
  printf '  - %s\n' "${failed[@]}"
  exit 1
fi
echo "make test: every stage passed"
