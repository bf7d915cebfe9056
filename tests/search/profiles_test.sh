#!/bin/bash
# Profiles from real machines (issue 17): profiles_test.sh BF_SEARCH BF_PROFILE SRC WORK
# After search_tiny (ctest fixture: WORK/tiny holds a finished tiny search and its deploy/):
#   1. bf-profile --side device and --side server on WORK/tiny/deploy: the files carry the model
#      ids (SHA-256 of each manifest.json, recomputed here), the halves' SHA-256, input size,
#      threads, host, ordered timings, the frame bytes of the 8-bit raw frame and the energy
#      (modelled: power x median; a powercap directory: "rapl")
#   2. bf-search --select-only merges them with the search state: min latency / min energy per
#      network (Table III and a user-given one, K_cloud 0.5) equal an argmin computed here in
#      Python from the profile files and search.jsonl; also with profiles edited so that each
#      split point in turn must win; a side without a file is measured in-process
#   3. refused with one message naming the file and the field: a split point the search does
#      not have, a negative time, a NaN time, another model id, a D_r the search did not
#      choose, the server's file given as the device's
set -u
search=$1 profile=$2 src=$3 work=$4
py=/usr/bin/python3
T=$work/tiny P=$work/profiles
fail() { echo "FAIL: $*" >&2; exit 1; }
ls "$T"/deploy/split-*/server.safetensors >/dev/null 2>&1 || fail "$T/deploy has no halves (search_tiny makes them)"
rm -rf "$P"; mkdir -p "$P"
common=(--config "$src/configs/search-ci-tiny.ini" --search.train_config "$src/configs/ci-tiny.ini"
        --data.root "$work/data")

# 1. the profiles
"$profile" --deploy "$T/deploy" --side device --warmup 0 --runs 3 --out "$P/device-profile.json" ||
  fail "bf-profile --side device"
"$profile" --deploy "$T/deploy" --side server --threads 1 --warmup 0 --runs 3 --out "$P/server-profile.json" ||
  fail "bf-profile --side server"
mkdir -p "$P/powercap/intel-rapl:0"
echo 123456789 > "$P/powercap/intel-rapl:0/energy_uj"
echo 262143328850 > "$P/powercap/intel-rapl:0/max_energy_range_uj"
"$profile" --deploy "$T/deploy/split-1" --side device --warmup 0 --runs 1 --rapl-dir "$P/powercap" \
  --out "$P/rapl-profile.json" || fail "bf-profile with a powercap directory"
out=$("$profile" --deploy "$T/deploy" --side phone 2>&1); [ $? -eq 2 ] || fail "--side phone accepted"
grep -qF -- "--side" <<<"$out" || fail "--side message: $out"
$py - "$P" "$T/deploy" <<'PY' || fail "profile files"
import hashlib, json, os, sys
P, dep = sys.argv[1:3]
sha = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
for side in ("device", "server"):
    pr = json.load(open(os.path.join(P, side + "-profile.json")))
    assert pr["format"] == "butterfly-hw-profile-1" and pr["side"] == side, pr
    assert pr["threads"] == 1 and pr["backend"] == "cpu" and pr["host"], pr
    assert pr["runs"] == 3 and pr["warmup"] == 0, pr
    assert [e["split"] for e in pr["splits"]] == [1, 4], pr["splits"]
    for e in pr["splits"] + [pr["whole_model"]]:
        d = os.path.join(dep, "split-%d" % e["split"])
        assert e["model_id"] == sha(os.path.join(d, "manifest.json")), e
        assert e["input_size"] == [32, 32] and e["d_r"] == 1, e
        t = e["time_ms"]
        assert 0 < t["min"] <= t["p10"] <= t["median"] <= t["p90"] <= t["max"], t
        if side == "device":
            assert pr["energy_source"] == "modelled" and pr["power_mw"] == 3000, pr
            assert abs(e["energy_mj"] - 3000 * t["median"] / 1000) < 1e-9 * max(1, e["energy_mj"]), e
    for e in pr["splits"]:
        d = os.path.join(dep, "split-%d" % e["split"])
        assert e["half_sha256"] == sha(os.path.join(d, side + ".safetensors")), e
        h = w = 8 if e["split"] == 1 else 4
        assert e["feature_shape"] == [h, w, 1], e
        if side == "device":
            b = e["frame_bytes"]
            assert b["raw"] == h * w + 76 and b["float32"] == 4 * h * w + 68 and 68 < b["zstd"], b
            q = e["quant_ms"]
            assert 0 <= q["min"] <= q["median"] <= q["max"], q
    assert pr["whole_model"]["split"] == 4, pr["whole_model"]
r = json.load(open(os.path.join(P, "rapl-profile.json")))
assert r["energy_source"] == "rapl" and r["splits"][0]["energy_mj"] == 0, r  # a counter that stood still
print("profiles ok")
PY

# 2. selection from the profiles
S=$P/sel; mkdir -p "$S"
cp "$T/search.jsonl" "$S/"
ln -s "$T/deploy" "$S/deploy"
ln -s "$T/rate" "$S/rate"
nets=3g,4g,wifi,lab:42:283.17:132.86
select_check() { # device-profile server-profile [expect-split-for-all]
  "$search" "${common[@]}" --search.dir "$S" --select.networks "$nets" --select.k_cloud 0.5 --select-only \
    --device-profile "$1" --server-profile "$2" > "$P/select.out" 2> "$P/select.err" ||
    { cat "$P/select.err"; fail "select-only with $1 $2"; }
  grep -q "cloud-only" "$P/select.out" || fail "no selection table"
  $py - "$S" "$1" "$2" "${3:-}" <<'PY' || fail "selection differs from the argmin of $1 $2"
import json, os, sys
S, devf, srvf, expect = sys.argv[1:5]
dev, srv = json.load(open(devf)), json.load(open(srvf))
sel = json.load(open(os.path.join(S, "selection.json")))
st = [json.loads(l) for l in open(os.path.join(S, "search.jsonl"))]
base = [e["top1"] for e in st if e["split"] == 0][0]
target = base - 50 / 100.0                       # search-ci-tiny: tolerance 50, linear, D_r 1..2
chosen = {}
for k in (1, 4):
    ok = sorted(e["d_r"] for e in st if e["split"] == k and e["top1"] >= target - 1e-12)
    chosen[k] = (ok[0], [e["top1"] for e in st if e["split"] == k and e["d_r"] == ok[0]][0])
nets = {"3g": (1.1, 868.98, 817.88), "4g": (5.85, 438.39, 1288.04), "wifi": (18.88, 283.17, 132.86),
        "lab": (42, 283.17, 132.86)}
km, kc, P = 0.0, 0.5, 3000.0
D = {e["split"]: e for e in dev["splits"]}
C = {e["split"]: e for e in srv["splits"]}
def cost(k, net):
    tu, a, b = nets[net]
    tm = D[k]["time_ms"]["median"] / (1 - km)
    tc = C[k]["time_ms"]["median"] / (1 - kc)
    up = D[k]["frame_bytes"]["raw"] * 8 / (tu * 1e6) * 1e3
    return tm + up + tc, (tm * P + up * (a * tu + b)) / 1000
close = lambda x, y: abs(x - y) <= 1e-9 * max(1.0, abs(y))
assert sel["profile_source"].startswith("device: " + devf), sel["profile_source"]
assert [n["name"] for n in sel["networks"]] == list(nets), sel["networks"]
for n in sel["networks"]:
    for t, idx in (("min_latency", 0), ("min_energy", 1)):
        best = None
        for k in sorted(chosen):  # ties: the shallower split
            v = cost(k, n["name"])[idx]
            if best is None or v < best[1]:
                best = (k, v)
        ch = n[t]
        assert ch["split"] == best[0] and ch["d_r"] == chosen[best[0]][0], (n["name"], t, ch, best)
        assert close(ch["accuracy"], chosen[best[0]][1]), ch
        assert close(ch["cost"]["latency_ms" if idx == 0 else "energy_mj"], best[1]), (ch, best)
        if expect:
            assert ch["split"] == int(expect), (n["name"], t, ch)
    tu, a, b = nets[n["name"]]
    cloud = 32 * 32 * 3 * 8 / (tu * 1e6) * 1e3 + srv["whole_model"]["time_ms"]["median"] / (1 - kc)
    assert close(n["cloud_only"]["latency_ms"], cloud), n["cloud_only"]
    assert close(n["mobile_only"]["latency_ms"], dev["whole_model"]["time_ms"]["median"]), n["mobile_only"]
print("selection = hand-computed argmin:", {n["name"]: (n["min_latency"]["split"], n["min_energy"]["split"])
                                            for n in sel["networks"]})
PY
}
select_check "$P/device-profile.json" "$P/server-profile.json"
# the bytes per codec the search measured (issue 16), from its caches: nothing is measured again
$py -c "import json,sys; a=json.load(open(sys.argv[1]))['codec_bytes']; b=json.load(open(sys.argv[2]))['codec_bytes']
assert a and a == b, (a, b)" "$S/profile.json" "$T/profile.json" || fail "select-only: codec_bytes differ from the search's"
[ -s "$S/report.md" ] && [ -s "$S/report.html" ] && grep -q "Profiles: device: $P/device-profile.json" "$S/report.md" ||
  fail "report.md does not name the profiles"
# edited profiles: each split point in turn must win everywhere
edit() { # in out python-statement (p = the profile)
  $py -c "import json,sys; p=json.load(open(sys.argv[1])); $3; json.dump(p, open(sys.argv[2], 'w'))" "$1" "$2"
}
slow='t=p["splits"][IDX]["time_ms"]; [t.__setitem__(k, 5000.0) for k in t]'
edit "$P/device-profile.json" "$P/dev-slow1.json" "${slow/IDX/0}"
edit "$P/device-profile.json" "$P/dev-slow4.json" "${slow/IDX/1}"
select_check "$P/dev-slow1.json" "$P/server-profile.json" 4
select_check "$P/dev-slow4.json" "$P/server-profile.json" 1
# no server file: the server side is measured in this process
"$search" "${common[@]}" --search.dir "$S" --profile.warmup 0 --profile.runs 1 --select-only \
  --device-profile "$P/device-profile.json" > "$P/select.out" 2> "$P/select.err" || { cat "$P/select.err"; fail "select-only without a server profile"; }
grep -q '"profile_source":.*server: measured in this process' "$S/selection.json" || fail "profile_source"

# 3. refused profiles: exit 1, one message naming the file and the field
refuse() { # device-profile needle
  local out rc
  out=$("$search" "${common[@]}" --search.dir "$S" --select-only --device-profile "$1" \
    --server-profile "$P/server-profile.json" 2>&1 >/dev/null); rc=$?
  [ $rc -eq 1 ] || fail "$1 accepted (exit $rc): $out"
  grep -qF -- "$1: $2" <<<"$out" || fail "$1: message does not name '$2': $out"
  [ "$(grep -c 'error' <<<"$out")" -eq 1 ] || fail "$1: not one message: $out"
  echo "refused: $(grep error <<<"$out")"
}
edit "$P/device-profile.json" "$P/bad-split.json" 'p["splits"][0]["split"] = 2'
refuse "$P/bad-split.json" "splits[0].split: RB2 is not a split point of this search"
edit "$P/device-profile.json" "$P/bad-neg.json" 'p["splits"][1]["time_ms"]["median"] = -0.5'
refuse "$P/bad-neg.json" "splits[1].time_ms.median: -0.5 is not a finite number >= 0"
edit "$P/device-profile.json" "$P/bad-nan.json" 'p["splits"][0]["time_ms"]["p90"] = float("nan")'
grep -q NaN "$P/bad-nan.json" || fail "python wrote no NaN"
refuse "$P/bad-nan.json" "splits[0].time_ms.p90: NaN or null"
edit "$P/device-profile.json" "$P/bad-id.json" 'p["splits"][1]["model_id"] = "ab" * 32'
refuse "$P/bad-id.json" "splits[1].model_id: abababababababab... is not the model id of"
edit "$P/device-profile.json" "$P/bad-dr.json" \
  'e = p["splits"][0]; e["d_r"] = 2; e["feature_shape"][2] = 2; e["frame_bytes"]["raw"] = 8 * 8 * 2 + 76'
refuse "$P/bad-dr.json" "splits[0].d_r: 2, but this search chose D_r 1 for RB1"
edit "$P/device-profile.json" "$P/bad-whole.json" 'p["whole_model"]["model_id"] = "cd" * 32'
refuse "$P/bad-whole.json" "whole_model.model_id"
refuse "$P/server-profile.json" "side: 'server', expected 'device'"

# the halves are large; search_report needs only tiny's reports
rm -rf "$P"
find "$T/deploy" -name '*.safetensors' -delete
echo "search_profiles: ok"
