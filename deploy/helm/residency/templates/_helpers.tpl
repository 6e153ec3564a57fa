{{/*
Names, labels and the agent's config. deploy/kubernetes/ is this chart rendered with
its default values (`cargo xtask manifests`), so both stay one artefact.
*/}}

{{- define "residency.name" -}}
{{- printf "%s-agent" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "residency.metricsService" -}}
{{- printf "%s-agent-metrics" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "residency.namespace" -}}
{{- .Values.namespace.name | default .Release.Namespace -}}
{{- end -}}

{{- define "residency.selectorLabels" -}}
app.kubernetes.io/name: residency-agent
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "residency.labels" -}}
{{ include "residency.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{- define "residency.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end -}}

{{/*
Whole numbers in values reach templates as float64 (Helm reads values through
JSON), and toToml writes a float64 as `2.097152e+06` or `443.0`, which the agent
rightly refuses where it wants an integer. This turns every whole float in a map,
nested maps and lists included, back into an integer, in place.
*/}}
{{- define "residency.integers" -}}
{{- $map := . -}}
{{- range $key, $value := $map -}}
{{- if and (kindIs "float64" $value) (eq $value (floor $value)) -}}
{{- $_ := set $map $key (int64 $value) -}}
{{- else if kindIs "map" $value -}}
{{- include "residency.integers" $value -}}
{{- else if kindIs "slice" $value -}}
{{- $items := list -}}
{{- range $value -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) -}}
{{- $items = append $items (int64 .) -}}
{{- else -}}
{{- if kindIs "map" . }}{{ include "residency.integers" . }}{{ end -}}
{{- $items = append $items . -}}
{{- end -}}
{{- end -}}
{{- $_ := set $map $key $items -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The agent's TOML config. `config` is either the TOML file itself (a string, e.g.
`--set-file config=residency.toml`: the same file as on a laptop), used verbatim, or
the config written as YAML under the same key names, rendered with toToml after the
pod-specific [agent] settings are filled in where the values leave them out.
*/}}
{{- define "residency.config" -}}
{{- if kindIs "string" .Values.config -}}
{{- if not (regexMatch "(?m)^\\s*mount_bpffs\\s*=\\s*false" .Values.config) -}}
{{- fail "config (TOML) must set [agent] mount_bpffs = false: a bpffs the agent mounted in its pod would take the pins, and enforcement, with it when the pod goes" -}}
{{- end -}}
{{- if not (regexMatch "(?m)^\\s*watch_config\\s*=\\s*true" .Values.config) -}}
{{- fail "config (TOML) must set [agent] watch_config = true: a helm upgrade changes the ConfigMap, and only a watching agent applies it (live, without a restart)" -}}
{{- end -}}
{{- $metrics := printf "(?m)^\\s*metrics_address\\s*=\\s*\"(0\\.0\\.0\\.0|\\[::\\]):%d\"" (int .Values.metricsPort) -}}
{{- if not (regexMatch $metrics .Values.config) -}}
{{- fail (printf "config (TOML) must set [agent] metrics_address = \"0.0.0.0:%d\" (metricsPort): the probes and Prometheus reach the agent there" (int .Values.metricsPort)) -}}
{{- end -}}
{{ .Values.config }}
{{- else -}}
{{- $config := deepCopy .Values.config -}}
{{- $agent := get $config "agent" | default dict -}}
{{- $pod := dict "pin_path" "/sys/fs/bpf/residency" "mount_bpffs" false "control_socket" "/run/residency/agent.sock" "metrics_address" (printf "0.0.0.0:%d" (int .Values.metricsPort)) "watch_config" true -}}
{{- /* Only where the values leave a key out: `merge` would also replace a false. */ -}}
{{- range $key, $value := $pod -}}
{{- if not (hasKey $agent $key) -}}
{{- $_ := set $agent $key $value -}}
{{- end -}}
{{- end -}}
{{- $_ := set $config "agent" $agent -}}
{{- $k := get $config "kubernetes" | default dict -}}
{{- if and $k.enabled $k.default_policy -}}
{{- $names := list -}}
{{- range (get $config "policy" | default list) }}{{ $names = append $names .name }}{{ end -}}
{{- if not (has $k.default_policy $names) -}}
{{- fail (printf "config.kubernetes.default_policy %q names no policy in config.policy (policies: %s): add that policy, or set config.kubernetes.default_policy to one of yours (the chart's defaults name \"cluster-default\")" $k.default_policy (join ", " $names)) -}}
{{- end -}}
{{- end -}}
{{- include "residency.integers" $config -}}
{{- toToml $config -}}
{{- end -}}
{{- end -}}
