# Started by bench/_peers.ts: bash bench/_peers.sh WORK ORIGIN_PORT, with PEERS_TOOLS_DIR (the peers
# folder, holding start.sh) and PEERS_ROOT (their built trees) in the environment. Starts
# localtunnel and tunnelmole on the origin, prints what it started, then waits on its stdin: when
# that closes (the bench ended, however it ended) or a signal comes, it stops the peers' process
# groups. Lines: "peer NAME URL HOST SERVER_PID CLIENT_PID", "failed NAME", "pids PID...", "ready".
set -u
WORK=$1
ORIGIN=$2
PIDS=()
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
stop_peers() {
  local p
  kill "${WATCHER:-}" 2>/dev/null
  for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -KILL -- "-$p" 2>/dev/null; done
}
trap stop_peers EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 141' PIPE
trap 'exit 143' TERM
# Should the bench die while the peers are still starting (stdin is read only after), this stops them.
BENCH_PID=$PPID
( while kill -0 "$BENCH_PID" 2>/dev/null; do sleep 1; done; kill -TERM $$ 2>/dev/null ) &
WATCHER=$!
# shellcheck source=/dev/null
source "$PEERS_TOOLS_DIR/start.sh"
if start_localtunnel "$ORIGIN"; then
  echo "peer localtunnel $LT_URL $LT_HOST ${PIDS[-2]} ${PIDS[-1]}"
else
  echo "failed localtunnel"
fi
echo "pids ${PIDS[*]}"
if start_tunnelmole "$ORIGIN"; then
  echo "peer tunnelmole $TM_URL $TM_HOST ${PIDS[-2]} ${PIDS[-1]}"
else
  echo "failed tunnelmole"
fi
echo "pids ${PIDS[*]}"
echo ready
read -r _ || true
