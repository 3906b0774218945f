# Shared by bench/run, bench/instructions and bench/heap (sourced, not run).

# The tenant's static key in every bench config.
KEY=sk-bench-key-000000000000

# Waits until URL answers: 0 once it does, 1 (and a line on stderr) after SECS seconds.
wait_http() { # url secs
    for _ in $(seq $(($2 * 10))); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done
    echo "bench: $1 did not answer within $2 s" >&2; return 1
}

# Installs valgrind (Debian's package) when it is missing.
need_valgrind() {
    command -v valgrind >/dev/null || apt-get install -y -q valgrind >/dev/null
}

# Writes an ASC config to FILE: the gateway on GW_PORT (admin on ADMIN_PORT), the
# STORAGE line, the durability, one OpenAI-format provider and model per
# `provider model base-url` triple (each model served by gpt-4o-mini there), and one
# tenant `bench` with $KEY and any TENANT_EXTRA lines (indented under the tenant).
asc_config() { # file gw-port admin-port storage-yaml durability tenant-extra [provider model url]...
    local file=$1 gw=$2 admin=$3 storage=$4 durability=$5 extra=$6
    shift 6
    local triples=("$@") i
    {
        echo "server: {listen: \"127.0.0.1:$gw\", admin_listen: \"127.0.0.1:$admin\"}"
        echo "$storage"
        echo "audit: {durability: \"$durability\"}"
        echo "providers:"
        for ((i = 0; i < ${#triples[@]}; i += 3)); do
            echo "  - {name: ${triples[i]}, kind: openai, base_url: \"${triples[i + 2]}\", api_key: bench, region: us}"
        done
        echo "models:"
        for ((i = 0; i < ${#triples[@]}; i += 3)); do
            echo "  - name: ${triples[i + 1]}"
            echo "    targets: [{provider: ${triples[i]}, model: gpt-4o-mini}]"
        done
        echo "tenants:"
        echo "  - name: bench"
        echo "    allowed_models: [\"*\"]"
        echo "    keys: [{name: k, key: \"$KEY\"}]"
        if [ -n "$extra" ]; then echo "$extra"; fi
    } > "$file"
}
