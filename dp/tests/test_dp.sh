#!/usr/bin/env bash
# memo-dp's tests, as TAP: every solver against its bottom-up reference (memo-dp --compare) and
# against an independent awk implementation, on random instances with 1, 2 and 8 threads; the
# same number of states for every thread count; published values; deep recursion; bad inputs.
#
#   dp/tests/test_dp.sh path/to/memo-dp [full|small|tsan]
#
# "small" (ASan builds) uses fewer and smaller instances; "tsan" also keeps the deep recursion
# test under ThreadSanitizer's limit of 65536 frames in a stack trace. Needs bash, awk, timeout.
set -u
export LC_ALL=C

bin=${1:?usage: test_dp.sh path/to/memo-dp [full|small|tsan]}
scale=${2:-full}
work=$(mktemp -d "${TMPDIR:-/tmp}/memo-dp-test.XXXXXX")
trap 'rm -rf "$work"' EXIT

tests=0
failed=0
ok() { # ok CONDITION-STATUS DESCRIPTION [DIAGNOSTIC...]
    local status=$1 description=$2
    shift 2
    tests=$((tests + 1))
    if [[ $status == 0 ]]; then
        echo "ok $tests - $description"
    else
        failed=$((failed + 1))
        echo "not ok $tests - $description"
        local line
        for line in "$@"; do
            echo "# $line"
        done
    fi
}

# A JSON field's raw value (numbers, true/false) from memo-dp's one-line output.
field() { # field NAME JSON
    local pattern="\"$1\":([^,}]*)"
    [[ $2 =~ $pattern ]] && echo "${BASH_REMATCH[1]}"
}

# Runs memo-dp with a time limit; sets out, err, rc.
run() {
    out=$(timeout 120 "$bin" "$@" 2>"$work/stderr")
    rc=$?
    err=$(cat "$work/stderr")
}

if [[ $scale != full ]]; then
    instances=1
    max_len=40
    thread_counts=(1 2 8)
else
    instances=3
    max_len=120
    thread_counts=(1 2 8)
fi

# ---- independent references in awk ---------------------------------------------------------

awk_editdist() { # file a, file b -> distance
    awk -v lcs="${3:-0}" 'BEGIN { RS = "\001" }
        NR == 1 { a = $0; sub(/\n$/, "", a) } NR == 2 { b = $0; sub(/\n$/, "", b) }
        END {
            n = length(a); m = length(b)
            for (j = 0; j <= m; j++) prev[j] = lcs ? 0 : j
            for (i = 1; i <= n; i++) {
                row[0] = lcs ? 0 : i; ai = substr(a, i, 1)
                for (j = 1; j <= m; j++) {
                    same = ai == substr(b, j, 1)
                    if (lcs) {
                        v = prev[j - 1] + same; if (prev[j] > v) v = prev[j]; if (row[j - 1] > v) v = row[j - 1]
                    } else {
                        v = prev[j - 1] + !same; if (prev[j] + 1 < v) v = prev[j] + 1; if (row[j - 1] + 1 < v) v = row[j - 1] + 1
                    }
                    row[j] = v
                }
                for (j = 0; j <= m; j++) prev[j] = row[j]
            }
            print prev[m]
        }' "$1" "$2"
}

awk_knapsack() { # items file, capacity -> best value
    awk -v W="$2" '{ w[NR] = $1; v[NR] = $2 }
        END {
            for (c = 0; c <= W; c++) best[c] = 0
            for (i = 1; i <= NR; i++)
                for (c = W; c >= w[i]; c--)
                    if (best[c - w[i]] + v[i] > best[c]) best[c] = best[c - w[i]] + v[i]
            print best[W]
        }' "$1"
}

awk_matrixchain() { # dims file -> cost
    awk '{ for (f = 1; f <= NF; f++) d[n++] = $f }
        END {
            k = n - 1
            for (span = 1; span < k; span++)
                for (i = 0; i + span < k; i++) {
                    j = i + span; best = -1
                    for (s = i; s < j; s++) {
                        c = m[i, s] + m[s + 1, j] + d[i] * d[s + 1] * d[j + 1]
                        if (best < 0 || c < best) best = c
                    }
                    m[i, j] = best
                }
            print (k > 1 ? m[0, k - 1] : 0)
        }' "$1"
}

awk_collatz() { # below -> "start terms"
    awk -v N="$1" 'BEGIN {
            t[1] = 1; best = 1
            for (s = 2; s < N; s++) {
                x = s; steps = 0
                while (x >= s) { if (x % 2 == 0) x = x / 2; else x = 3 * x + 1; steps++ }
                t[s] = steps + t[x]
                if (t[s] > t[best]) best = s
            }
            print best, t[best]
        }'
}

# ---- random instances ------------------------------------------------------------------------

seed=20240601
rand() { # rand LOW HIGH: sets r to a deterministic pseudo-random integer (no subshell: it
    # advances the seed)
    seed=$(((seed * 1103515245 + 12345) % 2147483648))
    r=$(($1 + (seed / 16) % ($2 - $1 + 1)))
}

random_sequence() { # random_sequence FILE LENGTH ALPHABET [newline]
    local s=$seed
    awk -v n="$2" -v alphabet="$3" -v seed="$s" -v nl="${4:-0}" 'BEGIN {
            srand(seed); k = length(alphabet)
            for (i = 0; i < n; i++) printf "%s", substr(alphabet, int(rand() * k) + 1, 1)
            if (nl) printf "\n"
        }' >"$1"
    seed=$((seed + 7919))
}

# check_solver NAME EXPECTED EXPECTED_STATES ARGS...: memo-dp with 1, 2 and 8 threads, each with
# --compare; the answer equals EXPECTED (and the reference's), states agree across thread counts
# (and equal EXPECTED_STATES unless it is "-").
check_solver() {
    local name=$1 expected=$2 expected_states=$3
    shift 3
    local t states_seen="" good=0 diag=()
    for t in "${thread_counts[@]}"; do
        run "$@" --threads "$t" --json --compare --no-progress
        local answer states agrees
        answer=$(field answer "$out")
        states=$(field states "$out")
        agrees=$(field agrees "$out")
        if [[ $rc != 0 || $answer != "$expected" || $agrees != true ]]; then
            good=1
            diag+=("threads $t: exit $rc, answer '$answer' (expected $expected), agrees '$agrees'" "$out" "$err")
        fi
        if [[ -n $states_seen && $states != "$states_seen" ]]; then
            good=1
            diag+=("threads $t: $states states, but $states_seen with fewer threads")
        fi
        if [[ $expected_states != - && $states != "$expected_states" ]]; then
            good=1
            diag+=("threads $t: $states states, expected $expected_states")
        fi
        states_seen=$states
    done
    ok $good "$name" "${diag[@]}"
}

echo "# memo-dp: $bin ($scale)"

for ((x = 0; x < instances; x++)); do
    rand 1 "$max_len"
    n=$r
    rand 1 "$max_len"
    m=$r
    alphabet=$([[ $x == 1 ]] && echo ab || echo ACGT)
    random_sequence "$work/a" "$n" "$alphabet" $((x % 2))
    random_sequence "$work/b" "$m" "$alphabet"
    check_solver "editdist ${n}x${m} over $alphabet: memo = reference = awk, states = n*m" \
        "$(awk_editdist "$work/a" "$work/b")" $((n * m)) editdist --a "$work/a" --b "$work/b"
    check_solver "lcs ${n}x${m} over $alphabet: memo = reference = awk, states = n*m" \
        "$(awk_editdist "$work/a" "$work/b" 1)" $((n * m)) lcs --a "$work/a" --b "$work/b"
done

for ((x = 0; x < instances; x++)); do
    rand 1 $((max_len / 4 + 1))
    items=$r
    rand 0 400
    capacity=$r
    : >"$work/items"
    for ((i = 0; i < items; i++)); do
        rand 0 80
        weight=$r
        rand 0 1000
        echo "$weight $r" >>"$work/items"
    done
    check_solver "knapsack $items items, W = $capacity: memo = reference = awk" \
        "$(awk_knapsack "$work/items" "$capacity")" - knapsack --items "$work/items" --capacity "$capacity"
done
# Sparse: weights of a million and more, W = 10^7; the reference works in units of their gcd.
printf '1000000 7\n3000000 20\n2000000 11\n5000000 31\n1000000 5\n4000000 25\n' >"$work/items"
check_solver "knapsack with W = 10^7 and sparse states" 63 - knapsack --items "$work/items" --capacity 10000000

for ((x = 0; x < instances; x++)); do
    rand 1 $((max_len / 3 + 1))
    k=$r
    : >"$work/dims"
    for ((i = 0; i <= k; i++)); do # five to a line
        rand 1 60
        if ((i % 5 == 4)); then printf '%s\n' "$r"; else printf '%s ' "$r"; fi
    done >>"$work/dims"
    echo >>"$work/dims"
    check_solver "matrixchain $k matrices: memo = reference = awk, states = k(k-1)/2" \
        "$(awk_matrixchain "$work/dims")" $((k * (k - 1) / 2)) matrixchain --dims "$work/dims"
done

for ((x = 0; x < instances; x++)); do
    rand 2 $((max_len * 100))
    below=$r
    read -r start terms <<<"$(awk_collatz "$below")"
    check_solver "collatz below $below: memo = reference = awk, states = N-2" \
        "$start" $((below > 2 ? below - 2 : 0)) collatz --below "$below"
    run collatz --below "$below" --json --no-progress
    [[ $(field terms "$out") == "$terms" ]]
    ok $? "collatz below $below: $terms terms" "$out"
done

# ---- published values ------------------------------------------------------------------------

# OEIS A000041: p(0..10), p(100), p(200), p(416) (the largest in 64 bits), p(417), p(1000).
a000041=(1 1 2 3 5 7 11 15 22 30 42)
for n in 0 1 2 5 10; do
    check_solver "partitions p($n) = ${a000041[$n]} (A000041)" "${a000041[$n]}" - partitions --n "$n"
done
check_solver "partitions p(100) = 190569292 (A000041)" 190569292 - partitions --n 100
check_solver "partitions p(200) = 3972999029388 (A000041)" 3972999029388 - partitions --n 200
check_solver "partitions p(416) = 17873792969689876004, u64 (A000041)" 17873792969689876004 - partitions --n 416
check_solver "partitions p(417) = 18987964267331664557, GMP (A000041)" 18987964267331664557 - partitions --n 417
if [[ $scale == full ]]; then
    check_solver "partitions p(1000), the built-in instance (A000041)" 24061467864032622473692149727991 - partitions
    run collatz --json --no-progress --threads 2
    [[ $rc == 0 && $(field answer "$out") == 837799 && $(field terms "$out") == 525 &&
        $(field states "$out") == 999998 ]]
    ok $? "collatz below 10^6, the built-in instance: 837799 with 525 terms, 999998 states" "$out" "$err"
else
    run collatz --below 100000 --json --no-progress --threads 2
    [[ $rc == 0 && $(field answer "$out") == 77031 && $(field terms "$out") == 351 ]]
    ok $? "collatz below 10^5: 77031 with 351 terms" "$out" "$err"
fi

# ---- output ----------------------------------------------------------------------------------

printf 'kitten' >"$work/a"
printf 'sitting\n' >"$work/b"
run editdist --a "$work/a" --b "$work/b" --json --threads 2 --no-progress
missing=()
for key in problem answer threads seconds states hits waits bytes_per_state; do
    [[ $out == *"\"$key\":"* ]] || missing+=("$key")
done
[[ $rc == 0 && ${#missing[@]} == 0 && $(field answer "$out") == 3 && $(field threads "$out") == 2 &&
    $(field problem "$out") == '"editdist"' && $(field states "$out") == 42 ]]
ok $? "--json: one object with problem, answer, threads, seconds, states, hits, waits, bytes_per_state (kitten/sitting = 3)" \
    "$out" "missing: ${missing[*]}"

run editdist --a "$work/a" --b "$work/b" --threads 2 --compare --no-progress
[[ $rc == 0 && $out == *"answer    3"* && $out == *"states    42 "* && $out == *hits* && $out == *waits* &&
    $out == *"bottom-up reference"* && $out == *agrees* && $out == *"1 thread"* ]]
ok $? "plain output: a summary with the answer, states, hits, waits and the comparison" "$out" "$err"

run editdist --a "$work/a" --b "$work/b" --threads 2 --compare --json --no-progress
[[ $rc == 0 && $(field memo "$out") == '"dense"' && $out == *'"other_memo":"hash"'* &&
    $out == *'"other_states":42,'* && $out == *'"dense_vs_hash_speed":'* && $(field agrees "$out") == true ]]
ok $? "storage: editdist is dense by default; --compare runs hash too, with the same states and answer" "$out" "$err"
run editdist --a "$work/a" --b "$work/b" --memo hash --json --no-progress
[[ $rc == 0 && $(field memo "$out") == '"hash"' && $(field answer "$out") == 3 && $(field states "$out") == 42 ]]
ok $? "--memo hash: the hash table, the same answer and states" "$out" "$err"
printf '3 4\n4 5\n' >"$work/items"
run knapsack --items "$work/items" --capacity 7 --json --no-progress
[[ $rc == 0 && $(field memo "$out") == '"hash"' ]]
ok $? "knapsack (states with no key range) is hash by default" "$out" "$err"

# ---- deep recursion --------------------------------------------------------------------------

case $scale in
full) deep=200000 ;;
small) deep=20000 ;;
*) deep=4000 ;; # three frames a level: 12000 frames
esac
random_sequence "$work/a" "$deep" ACGT
printf 'G' >"$work/b"
run editdist --a "$work/a" --b "$work/b" --root-only --threads 2 --json --no-progress
[[ $rc == 0 && $(field states "$out") == "$deep" ]]
ok $? "editdist ${deep}x1 with --root-only: $((deep + 1)) levels of recursion on sized stacks" "$out" "$err"
: >"$work/items"
for ((i = 0; i < deep / 10; i++)); do echo "$((i % 7 + 1)) 1"; done >"$work/items"
run knapsack --items "$work/items" --capacity 3 --root-only --threads 2 --json --compare --no-progress
[[ $rc == 0 && $(field agrees "$out") == true ]]
ok $? "knapsack with $((deep / 10)) items with --root-only: as deep as the items" "$out" "$err"

# ---- bad input -------------------------------------------------------------------------------

# expect_bad DESCRIPTION PATTERN ARGS...: exit code 2, and a message matching PATTERN on stderr.
expect_bad() {
    local description=$1 pattern=$2
    shift 2
    run "$@"
    [[ $rc == 2 && $err == "memo-dp: "* && $err =~ $pattern ]]
    ok $? "bad input: $description (exit 2)" "exit $rc" "stderr: $err"
}
printf 'ACGT\n' >"$work/seq"
: >"$work/empty"
printf '\n' >"$work/newline"
expect_bad "a missing file" "cannot open.*No such file" editdist --a "$work/none" --b "$work/seq"
expect_bad "an unreadable file (a directory)" "cannot read" lcs --a "$work/seq" --b "$work"
expect_bad "an empty sequence" "empty" editdist --a "$work/empty" --b "$work/seq"
expect_bad "a sequence that is one newline" "empty" lcs --a "$work/seq" --b "$work/newline"
expect_bad "only one of --a and --b" "both --a" editdist --a "$work/seq"
expect_bad "--threads 0" "out of range" editdist --threads 0
expect_bad "--threads abc" "not a number" editdist --threads abc
expect_bad "--n 12x" "not a number" partitions --n 12x
expect_bad "--n -5" "not a number" partitions --n -5
expect_bad "--below 1" "out of range" collatz --below 1
expect_bad "--below 99999999999999999999999" "out of range" collatz --below 99999999999999999999999
expect_bad "--capacity 1e5" "not a number" knapsack --items "$work/seq" --capacity 1e5
printf '10 20\n30 abc\n' >"$work/items"
expect_bad "an items file with a malformed number" "line 2: 'abc' is not a number" knapsack --items "$work/items" --capacity 5
printf '10 20\n30 40 50\n' >"$work/items"
expect_bad "an items line with three numbers" "line 2: expected one 'weight value' pair" knapsack --items "$work/items" --capacity 5
: >"$work/items"
expect_bad "an empty items file" "no items" knapsack --items "$work/items" --capacity 5
printf '1 18446744073709551615\n1 1\n' >"$work/items"
expect_bad "item values that overflow 64 bits" "add up to more than" knapsack --items "$work/items" --capacity 5
printf '10 0 5\n' >"$work/dims"
expect_bad "a dimension of 0" "dimension of 0" matrixchain --dims "$work/dims"
printf '7\n' >"$work/dims"
expect_bad "a single dimension" "only one dimension" matrixchain --dims "$work/dims"
printf '10 x 5\n' >"$work/dims"
expect_bad "a malformed dimension" "'x' is not a number" matrixchain --dims "$work/dims"
printf '4000000 4000000 4000000\n' >"$work/dims"
expect_bad "dimensions whose costs overflow 64 bits" "could pass 2\\^64" matrixchain --dims "$work/dims"
expect_bad "an unknown problem" "unknown problem" fibonacci
expect_bad "an unknown option" "unknown option '--fast'" editdist --fast
expect_bad "an option of another problem" "no option --items" editdist --items "$work/items"
expect_bad "an option without its value" "needs a value" collatz --below
expect_bad "--memo with an unknown storage" "--memo takes dense or hash, not 'tree'" editdist --memo tree
expect_bad "--memo dense where the states form no key range" "no key range that dense keys can hold" \
    knapsack --memo dense

# Too big: refused before anything is allocated, with the estimate.
expect_bad "collatz below 2^40: the memo would not fit" "too big for this machine's memory: the memo needs about .* TiB \\(1099511627774 states" \
    collatz --below 1099511627776
expect_bad "partitions of 2*10^9: the memo would not fit" "too big .*needs about" partitions --n 2000000000
random_sequence "$work/a" 400000 ACGT
expect_bad "editdist 400000x400000: the memo would not fit" "too big .*needs about .*160000000000 states" \
    editdist --a "$work/a" --b "$work/a"
# Weights 1 .. 20000 and W = 10^7: about 2 * 10^11 states; counting stops once they pass memory.
awk 'BEGIN { for (i = 1; i <= 20000; i++) print i, 1 }' >"$work/items"
expect_bad "knapsack with 20000 items and W = 10^7: the memo would not fit" "too big .*at least" \
    knapsack --items "$work/items" --capacity 10000000

echo "1..$tests"
if ((failed > 0)); then
    echo "# $failed of $tests failed"
    exit 1
fi
