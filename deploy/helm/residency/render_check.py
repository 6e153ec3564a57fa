"""Checks what can be checked of the chart without Helm (it cannot be installed on the
development machines): values against the schema, every `.Values` path used by a
template exists, and the DaemonSet template, with the default values substituted,
is exactly the validated deploy/kubernetes DaemonSet. Prints the policy of the
default values as JSON (the test turns it into TOML and runs `residency-agent check`).
Usage: python3 render_check.py CHART_DIR MANIFEST_DIR"""
import json, re, sys
import jsonschema, yaml

chart, manifests = sys.argv[1], sys.argv[2]
values = yaml.safe_load(open(f"{chart}/values.yaml"))
jsonschema.validate(values, json.load(open(f"{chart}/values.schema.json")))

def lookup(path):
    node = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise SystemExit(f"template uses .Values.{path}, which values.yaml lacks")
        node = node[part]
    return node

templates = {}
for name in ["daemonset.yaml", "configmap.yaml", "serviceaccount.yaml"]:
    text = open(f"{chart}/templates/{name}").read()
    for path in re.findall(r"\.Values\.([A-Za-z0-9_.]+)", text):
        lookup(path.rstrip("."))
    templates[name] = text

ds = templates["daemonset.yaml"]
ds = ds.replace("{{ .Release.Name }}", "residency").replace("{{ .Release.Namespace }}", "residency-system")
ds = ds.replace('{{ .Values.image.pullPolicy | default "IfNotPresent" }}', values["image"]["pullPolicy"])
ds = re.sub(r"\{\{ toYaml \.Values\.resources \| indent 12 \}\}",
            lambda m: "\n".join(" " * 12 + l for l in yaml.safe_dump(values["resources"]).splitlines()), ds)
ds = re.sub(r"\{\{ \.Values\.([A-Za-z0-9_.]+) \}\}", lambda m: str(lookup(m.group(1))), ds)
assert "{{" not in ds, ds
rendered = yaml.safe_load(ds)
plain = [d for d in yaml.safe_load_all(open(f"{manifests}/daemonset.yaml")) if d["kind"] == "DaemonSet"][0]
if rendered != plain:
    raise SystemExit("the DaemonSet template drifted from deploy/kubernetes/daemonset.yaml")
print(json.dumps(values["config"]))
