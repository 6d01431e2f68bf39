#!/usr/bin/env bash
# Grades `weft analyze` on Istio's own analyzer test table.
#
# Usage: bench/analyze-parity.sh ISTIO_CHECKOUT [-v]
#   ISTIO_CHECKOUT: a checkout of github.com/istio/istio (its
#   pkg/config/analysis/analyzers/analyzers_test.go and testdata/ are read, nothing is copied).
#   WEFT=path/to/weft to use a given binary (default: a debug build of this tree).
#   -v lists every expected finding and every unexpected one.
#
# For each comparable case of Istio's `testGrid` (the cases whose resources weft reads; the
# list is CASES below), it runs `weft analyze -o json` over the case's input files (with
# `--mesh-config` where the case has a `meshConfigFile`) and matches weft's findings against
# the case's expected (message, resource) pairs: a weft finding matches when its resource is
# the expected one and docs/ANALYZE.md maps its WA code to the expected IST code. It prints
# per case and in total: expected findings matched, and weft's errors that match nothing
# (candidates for an unjustified refusal) and weft findings of the analyzer's own IST codes
# that Istio does not expect (false positives).
set -euo pipefail
cd "$(dirname "$0")/.."
istio=${1:?usage: bench/analyze-parity.sh ISTIO_CHECKOUT [-v]}
verbose=${2:-}
if [[ -z "${WEFT:-}" ]]; then
    cargo build --locked -q -p weft --bin weft
    WEFT="${CARGO_TARGET_DIR:-target}/debug/weft"
fi
export WEFT
exec python3 - "$istio" docs/ANALYZE.md "$verbose" <<'PY'
import collections, json, os, re, subprocess, sys

istio, analyze_md, verbose = sys.argv[1], sys.argv[2], sys.argv[3] == "-v"
adir = os.path.join(istio, "pkg/config/analysis/analyzers")

# Istio's message names and codes.
codes = {}
name = None
for line in open(os.path.join(istio, "pkg/config/analysis/msg/messages.yaml")):
    m = re.match(r"\s*- name: \"?(\w+)\"?", line)
    if m:
        name = m.group(1)
    m = re.match(r"\s*code: (IST\d+)", line)
    if m and name:
        codes[name] = m.group(1)

# weft's WA -> IST mapping, from the tables of docs/ANALYZE.md (last column).
wa_to_ist = collections.defaultdict(set)
for line in open(analyze_md):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) >= 4 and re.fullmatch(r"WA\d{4}", cells[0]):
        for ist in re.findall(r"IST\d{4}", cells[-1]):
            wa_to_ist[cells[0]].add(ist)

# Istio's test table: name, input files, mesh config, expected (message, origin).
src = open(os.path.join(adir, "analyzers_test.go")).read()
grid = src[src.index("var testGrid"):src.index("var ignoreAnalyzers")]
cases = []
for block in re.split(r"\n\t\{\n", grid)[1:]:
    nm = re.search(r'name:\s*"([^"]*)"', block)
    if not nm:
        continue
    files = re.findall(r'"(testdata/[^"]+\.yaml)"', block.split("expected")[0])
    mesh = re.search(r'meshConfigFile:\s*"([^"]+)"', block)
    analyzer = re.search(r"analyzer:\s*&?([\w.]+)", block)
    body = re.sub(r"//[^\n]*", "", block)
    expected = re.findall(r'\{msg\.(\w+),\s*"([^"]+)"\}', body)
    cases.append({
        "name": nm.group(1),
        "inputs": [f for f in files if not mesh or f != mesh.group(1)],
        "mesh": mesh.group(1) if mesh else None,
        "analyzer": analyzer.group(1) if analyzer else "",
        "expected": expected,
    })

# The comparable cases: Istio analyzers whose resources and semantics weft has. Left out:
# annotations, injection, webhooks, telemetry, EnvoyFilter, Kubernetes Gateway API, gateway
# secrets and certificates, multicluster, external control plane, conditions, pod UIDs, CA
# certificates. Cases are named by (test name, first input file) since names repeat.
CASES = [
    ("deprecation", "deprecation.yaml"),
    ("gatewayNoWorkload", "gateway-no-workload.yaml"),
    ("gatewayBadPort", "gateway-no-port.yaml"),
    ("gatewayCorrectPort", "gateway-correct-port.yaml"),
    ("gatewayCustomIngressGateway", "gateway-custom-ingressgateway.yaml"),
    ("gatewayCustomIngressGatewayBadPort", "gateway-custom-ingressgateway-badport.yaml"),
    ("gatewayCustomIngressGatewayBadPortWithoutTarget", "gateway-custom-ingressgateway-badport-notarget.yaml"),
    ("gatewayCustomIngressGatewayTranslation", "gateway-custom-ingressgateway-translation.yaml"),
    ("gatewayServiceMatchPod", "gateway-custom-ingressgateway-svcselector.yaml"),
    ("conflicting gateways detect", "conflicting-gateways.yaml"),
    ("gateways with different port are non-conflicting", "gateway-different-port.yaml"),
    ("conflicting gateways with multiple port declarations", "conflicting-gateways-multiple-ports.yaml"),
    ("conflicting gateways detect by sub selector", "conflicting-gateways-subSelector.yaml"),
    ("conflicting gateways detect: no port", "conflicting-gateways-invalid-port.yaml"),
    ("Analyze conflicting gateway with list type", "analyze-list-type.yaml"),
    ("portNameNotFollowConvention", "service-no-port-name.yaml"),
    ("namedPort", "service-port-name.yaml"),
    ("unnamedPortInSystemNamespace", "service-no-port-name-system-namespace.yaml"),
    ("sidecarDefaultSelector", "sidecar-default-selector.yaml"),
    ("sidecarSelector", "sidecar-selector.yaml"),
    ("virtualServiceConflictingMeshGatewayHosts", "virtualservice_conflictingmeshgatewayhosts.yaml"),
    ("virtualServiceConflictingMeshGatewayHostsWithExportTo", "virtualservice_conflictingmeshgatewayhosts_with_exportto.yaml"),
    ("virtualServiceDestinationHosts", "virtualservice_destinationhosts.yaml"),
    ("virtualServiceDestinationRules", "virtualservice_destinationrules.yaml"),
    ("virtualServiceGateways", "virtualservice_gateways.yaml"),
    ("virtualServiceJWTClaimRoute", "virtualservice_jwtclaimroute.yaml"),
    ("serviceMultipleDeployments", "deployment-multi-service.yaml"),
    ("deploymentMultiServicesInDifferentNamespace", "deployment-multi-service-different-ns.yaml"),
    ("serviceWithNoSelector", "deployment-service-no-selector.yaml"),
    ("authorizationpolicies", "authorizationpolicies.yaml"),
    ("dupmatches", "virtualservice_dupmatches.yaml"),
    ("host defined in virtualservice not found in the gateway", "virtualservice_host_not_found_gateway.yaml"),
    ("host defined in virtualservice not found in the gateway(beta version)", "virtualservice_host_not_found_gateway_beta.yaml"),
    ("host defined in virtualservice not found in the gateway with ns", "virtualservice_host_not_found_gateway_with_ns_prefix.yaml"),
    ("host defined in virtualservice not found in the gateway with ns(beta version)", "virtualservice_host_not_found_gateway_with_ns_prefix_beta.yaml"),
    ("missing Addresses and Protocol in Service Entry", "serviceentry-missing-addresses-protocol.yaml"),
    ("missing Addresses and Protocol in Service Entry with ISTIO_META_DNS_AUTO_ALLOCATE enabled", "serviceentry-missing-addresses-protocol.yaml"),
    ("Route Rule no effect on Ingress", "virtualservice_route_rule_no_effects_ingress.yaml"),
    ("ExternalNameServiceTypeInvalidPortName", "incorrect-port-name-external-name-service-type.yaml"),
    ("ExternalNameServiceTypeValidPortName", "correct-port-name-external-name-service-type.yaml"),
    ("ServiceEntry Addresses Required Lowercase Protocol", "serviceentry-address-required-lowercase.yaml"),
    ("ServiceEntry Addresses Required Uppercase Protocol", "serviceentry-address-required-uppercase.yaml"),
    ("ServiceEntry conflicting protocols on same host and port", "serviceentry-conflicting-protocol.yaml"),
    ("ServiceEntry no conflict same protocol", "serviceentry-no-conflict-protocol.yaml"),
    ("ServiceEntry no conflict non-overlapping exportTo scopes", "serviceentry-conflicting-exportto.yaml"),
    ("DestinationRuleWithFakeHost", "destinationrule-with-fake-host.yaml"),
    ("DestinationRuleSubsetsNotSelectPods", "destinationrule-subsets-not-select-pods.yaml"),
    ("DestinationRuleSubsetsWithTopologyLabels", "destinationrule-subsets-with-topology-labels.yaml"),
    ("DestinationRuleEmptyTopologyLabels", "destinationrule-empty-topology-labels.yaml"),
    ("ServiceEntry Addresses Allocated", "serviceentry-address-allocated.yaml"),
]
# Expected findings about ambient mode (weft has no ambient mode): left out.
AMBIENT = {"Sidecar ns-ambient/namespace-scoped", "Sidecar ns-ambient/pod-scoped"}

# The IST codes each Istio analyzer of the comparable cases reports (from its source).
ANALYZER_CODES = {
    "gateway.IngressGatewayPortAnalyzer": {"IST0162", "IST0101"},
    "gateway.ConflictingGatewayAnalyzer": {"IST0145", "IST0101"},
    "service.PortNameAnalyzer": {"IST0150", "IST0118"},
    "sidecar.SelectorAnalyzer": {"IST0110", "IST0111", "IST0167", "IST0101"},
    "virtualservice.ConflictingMeshGatewayHostsAnalyzer": {"IST0109"},
    "virtualservice.DestinationHostAnalyzer": {"IST0140", "IST0101", "IST0112"},
    "virtualservice.DestinationRuleAnalyzer": {"IST0101"},
    "virtualservice.GatewayAnalyzer": {"IST0165", "IST0101", "IST0132"},
    "virtualservice.JWTClaimRouteAnalyzer": {"IST0149"},
    "deployment.ServiceAssociationAnalyzer": {"IST0116", "IST0137"},
    "authz.AuthorizationPoliciesAnalyzer": {"IST0127", "IST0101"},
    "serviceentry.ProtocolAddressesAnalyzer": {"IST0134"},
    "serviceentry.ConflictingServiceEntryProtocolAnalyzer": {"IST0177"},
    "destinationrule.PodNotSelectedAnalyzer": {"IST0173", "IST0174"},
    "deprecation.FieldAnalyzer": {"IST0002"},
    "schemaValidation.CollectionValidationAnalyzer": {"IST0106", "IST0133", "IST0130", "IST0131"},
}

# The Istio analyzer that makes the check of a weft code whose IST code several analyzers
# share (IST0101, ReferencedResourceNotFound).
WA_ANALYZER = {
    "WA0101": "virtualservice.GatewayAnalyzer",
    "WA0102": "virtualservice.DestinationHostAnalyzer",
    "WA0110": "virtualservice.DestinationHostAnalyzer",
    "WA0103": "virtualservice.DestinationRuleAnalyzer",
    "WA0106": "gateway.IngressGatewayPortAnalyzer",
    "WA0127": "sidecar.SelectorAnalyzer",
    "WA0129": "authz.AuthorizationPoliciesAnalyzer",
}

def analyzer_codes(case):
    """The IST codes of the analyzer the case runs."""
    return ANALYZER_CODES.get(case["analyzer"], {codes[m] for m, _ in case["expected"]})

def origin_matches(origin, res):
    kind, _, ref = origin.partition(" ")
    if kind != res["kind"]:
        return False
    if "/" in ref:
        return ref == f'{res["namespace"]}/{res["name"]}'
    return ref == res["name"]

tot_exp = tot_match = tot_err = tot_fp = tot_other = tot_schema = 0
for name, first in CASES:
    case = next((c for c in cases if c["name"] == name and c["inputs"] and c["inputs"][0].endswith(first)), None)
    if case is None:
        print(f"?? case not found in Istio's table: {name}")
        continue
    args = [os.environ["WEFT"], "analyze", "-o", "json"]
    if case["mesh"]:
        args += ["--mesh-config", os.path.join(adir, case["mesh"])]
    args += [os.path.join(adir, f) for f in case["inputs"]]
    run = subprocess.run(args, capture_output=True, text=True)
    try:
        found = json.loads(run.stdout or "[]")
    except json.JSONDecodeError:
        print(f"!! {name}: weft printed no JSON: {run.stderr.strip()[:300]}")
        found = []
    expected = [(codes[m], o) for m, o in case["expected"] if o not in AMBIENT]
    used = [False] * len(found)
    matched, missing = 0, []
    for ist, origin in expected:
        hits = [i for i, f in enumerate(found) if not used[i] and f.get("resource")
                and origin_matches(origin, f["resource"]) and ist in wa_to_ist.get(f["code"], ())]
        # Of codes several analyzers share (IST0101), prefer the check of this case's analyzer.
        hits.sort(key=lambda i: WA_ANALYZER.get(found[i]["code"], case["analyzer"]) != case["analyzer"])
        hit = hits[0] if hits else None
        if hit is None:
            missing.append((ist, origin))
        else:
            used[hit] = True
            matched += 1
    own = analyzer_codes(case) or set()
    # An error another Istio analyzer reports too (the case runs one analyzer only) is not
    # unexpected; one of this analyzer's codes, a schema error or a weft-only code is.
    def elsewhere(f):
        ist = wa_to_ist.get(f["code"], set())
        if f["code"] in WA_ANALYZER:
            return WA_ANALYZER[f["code"]] != case["analyzer"]
        return bool(ist) and not (ist & own) and "IST0106" not in ist
    left = [f for i, f in enumerate(found) if not used[i] and f["severity"] == "error"]
    # Schema errors (WA0003) refuse a resource; each must be one Istio's validation or the
    # Kubernetes API server makes too: listed apart, to be checked by eye.
    schema = [f for f in left if f["code"] == "WA0003"]
    errors = [f for f in left if f["code"] != "WA0003" and not elsewhere(f)]
    other = [f for f in left if f["code"] != "WA0003" and elsewhere(f)]
    tot_other += len(other)
    tot_schema += len(schema)
    fps = [f for i, f in enumerate(found) if not used[i] and f["severity"] != "error"
           and wa_to_ist.get(f["code"], set()) & own]
    tot_exp += len(expected); tot_match += matched; tot_err += len(errors); tot_fp += len(fps)
    flag = "ok " if matched == len(expected) and not errors and not fps and not schema else "-- "
    print(f"{flag}{matched}/{len(expected)} expected, {len(errors)} unexpected errors, {len(fps)} false positives, {len(schema)} schema errors: {name}")
    if verbose or flag != "ok ":
        for ist, origin in missing:
            print(f"     missing {ist} {origin}")
        for f in errors + fps + schema + (other if verbose else []):
            r = f.get("resource") or {}
            print(f'     unexpected {f["severity"]}[{f["code"]}] {r.get("kind")} {r.get("namespace")}/{r.get("name")} {f.get("field") or ""}: {f["message"][:160]}')
print(f"\n{len(CASES)} cases: {tot_match}/{tot_exp} expected findings reported with the mapped code "
      f"({100 * tot_match / max(tot_exp, 1):.0f}%), {tot_err} unexpected errors, {tot_fp} false positives"
      f", {tot_schema} schema errors (listed per case: each must be one Istio's validation or the Kubernetes API server makes too)"
      f" and {tot_other} errors of checks other Istio analyzers make")
PY
