#!/usr/bin/env bash
# tools/check_deps.sh - enforces the module edges of docs/ARCHITECTURE.md:
#   api -> collector -> rules -> alerts -> query -> storage -> sim -> common
# A module may include only the public header (<dir>/<dir>.h) of modules to its right, plus
# its own files. cmd/ (the composition root) may include any public header. Each third-party
# library may be included only by the files listed for it below.
set -u
cd "$(dirname "$0")/.."
order=(common sim storage query alerts rules collector api)
rank() { local i; for i in "${!order[@]}"; do [ "${order[$i]}" = "$1" ] && echo "$i" && return; done; echo -1; }

fail=0
report() { echo "check_deps: $*"; fail=1; }

for f in $(git ls-files '*.c' '*.h' 2>/dev/null || find . -name '*.[ch]'); do
    f=${f#./}
    mod=${f%%/*}
    case "$mod" in common|sim|storage|query|alerts|rules|collector|api|cmd) ;; *) continue ;; esac
    while IFS= read -r inc; do
        target=${inc%%/*}
        [ "$target" = "$inc" ] && continue
        [ "$target" = "$mod" ] && continue
        [ "$target" = tests ] && { report "$f includes test code $inc"; continue; }
        if [ "$inc" != "$target/$target.h" ]; then
            report "$f includes $inc: only $target/$target.h is public"
            continue
        fi
        [ "$mod" = cmd ] && continue
        if [ "$(rank "$target")" -ge "$(rank "$mod")" ]; then
            report "$f ($mod) includes $inc: $mod may only use modules to its right"
        fi
    done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f")
done

# Third-party headers and the only files allowed to include them.
check_lib() { # pattern, allowed-file-regex
    local pat=$1 allowed=$2 hits
    hits=$(git grep -l -E "#[[:space:]]*include[[:space:]]*<$pat" -- '*.c' '*.h' | grep -v '^tests/' | grep -v -E "$allowed")
    [ -n "$hits" ] && report "<$pat...> included outside its wrapper: $hits"
}
check_lib 'lmdb\.h' '^storage/lmdb(_[a-z]+)?\.[ch]$'
check_lib 'event2/' '^collector/loop\.c$'
check_lib 'lua|lauxlib|lualib' '^rules/lua_[a-z_]+\.(c|h)$|^rules/rules_int\.h$'
check_lib 'librdkafka/' '^alerts/kafka(_[a-z]+)?\.c$'
check_lib 'microhttpd\.h' '^api/http\.c$'
check_lib 'snappy-c\.h' '^collector/remote_write\.c$|^bench/loadgen\.c$'
check_lib 'zstd\.h' '^storage/codec\.c$'
check_lib 'curl/' '^alerts/webhooks\.c$'
check_lib 'zlib\.h' '^api/http\.c$|^api/gzip\.c$|^collector/gzip\.c$'
check_lib 'pcre2\.h' '^query/regex\.c$'

[ "$fail" -eq 0 ] && echo "check_deps: ok"
exit "$fail"
