#!/usr/bin/env bash
# wait-healthy.sh PROJECT [SECONDS]: wait until every container of the compose
# project is healthy (or, for one-shot services, exited 0). Prints the state of
# the laggards and exits 1 on timeout or when a container has failed.
set -euo pipefail
project=${1:?usage: wait-healthy.sh PROJECT [SECONDS]}
limit=${2:-180}
deadline=$((SECONDS + limit))

while true; do
	pending=()
	failed=()
	while read -r name status health code; do
		case $status/$health in
		running/healthy | running/none) ;;
		exited/*) [ "$code" = 0 ] || failed+=("$name exited $code") ;;
		*) pending+=("$name $status/$health") ;;
		esac
	done < <(docker ps -a --filter "label=com.docker.compose.project=$project" \
		--format '{{.Names}}' | xargs -r docker inspect \
		--format '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.ExitCode}}')
	if [ ${#failed[@]} -gt 0 ]; then
		printf 'wait-healthy: failed: %s\n' "${failed[@]}" >&2
		exit 1
	fi
	if [ ${#pending[@]} -eq 0 ]; then
		exit 0
	fi
	if [ "$SECONDS" -ge "$deadline" ]; then
		printf 'wait-healthy: not healthy after %ss: %s\n' "$limit" "${pending[@]}" >&2
		exit 1
	fi
	sleep 2
done
