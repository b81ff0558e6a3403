# Sourced by benches/http.sh and benches/instructions.sh, not run: forms a three-primary Redis
# Cluster, as tests/it/support/cluster.rs does, out of the nodes in REDIS_PORTS (started with
# --cluster-enabled yes), waits until every node says cluster_state:ok and exports
# REDIS_CLUSTER_URLS, their URLs comma-separated. Uses the caller's `die` and WORK.

form_cluster() {
    local port ok
    redis-cli --cluster create "${REDIS_PORTS[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes \
        >"$WORK/cluster-create.log" 2>&1 ||
        die "redis-cli --cluster create failed: $(tail -n 5 "$WORK/cluster-create.log")"
    for _ in $(seq 1 200); do
        ok=1
        for port in "${REDIS_PORTS[@]}"; do
            redis-cli -p "$port" CLUSTER INFO | grep -q 'cluster_state:ok' || ok=0
        done
        ((ok)) && break
        sleep 0.1
    done
    ((ok)) || die "the cluster did not reach cluster_state:ok"
    REDIS_CLUSTER_URLS=$(printf 'redis://127.0.0.1:%s,' "${REDIS_PORTS[@]}")
    export REDIS_CLUSTER_URLS=${REDIS_CLUSTER_URLS%,}
}
