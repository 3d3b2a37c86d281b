{{/* Chart label value: name-version. */}}
{{- define "ebs-csi-driver.chart" -}}
{{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Value of the app.kubernetes.io/name label: "aws-ebs-csi-driver" (the reference
chart's name) unless nameOverride says otherwise, as in the reference chart.
*/}}
{{- define "ebs-csi-driver.name" -}}
{{- .Values.nameOverride | default "aws-ebs-csi-driver" | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{/*
Labels on every object. app.kubernetes.io/name is "aws-ebs-csi-driver", as in
the reference chart, so the selectors match and either chart can upgrade the
other's release.
*/}}
{{- define "ebs-csi-driver.labels" -}}
app.kubernetes.io/name: {{ include "ebs-csi-driver.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ include "ebs-csi-driver.chart" . }}
{{- with .Values.customLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "ebs-csi-driver.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ebs-csi-driver.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The driver image; image.containerRegistry, when set, is prepended as is. */}}
{{- define "ebs-csi-driver.image" -}}
{{ .Values.image.containerRegistry | default "" }}{{ .Values.image.repository }}:{{ .Values.image.tag | default (printf "v%s" .Chart.AppVersion) }}
{{- end }}

{{/*
A sidecar's image and pull policy (argument: dict "root" $ "sidecar"
sidecars.<name>): image.containerRegistry is prepended, the pull policy
defaults to image.pullPolicy.
*/}}
{{- define "ebs-csi-driver.sidecarImage" -}}
image: {{ .root.Values.image.containerRegistry | default "" }}{{ .sidecar.image.repository }}:{{ .sidecar.image.tag }}
imagePullPolicy: {{ .sidecar.image.pullPolicy | default .root.Values.image.pullPolicy }}
{{- end }}

{{/* --v of a sidecar: 7 with debugLogs (argument: dict "root" $ "sidecar" sidecars.<name>). */}}
{{- define "ebs-csi-driver.sidecarVerbosity" -}}
- --v={{ ternary 7 .sidecar.logLevel (.root.Values.debugLogs | default false) }}
{{- end }}

{{/* HTTP_PROXY, HTTPS_PROXY and NO_PROXY from proxy.http_proxy / proxy.no_proxy. */}}
{{- define "ebs-csi-driver.proxyEnv" -}}
{{- with .Values.proxy }}
{{- if .http_proxy }}
- name: HTTP_PROXY
  value: {{ .http_proxy | quote }}
- name: HTTPS_PROXY
  value: {{ .http_proxy | quote }}
- name: NO_PROXY
  value: {{ .no_proxy | default "" | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* imagePullSecrets entries: names (the reference chart's form) or {name: ...} objects. */}}
{{- define "ebs-csi-driver.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
{{- if kindIs "string" . }}
  - name: {{ . }}
{{- else }}
  - {{ toYaml . | nindent 4 | trim }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Namespace of the node objects: node.namespaceOverride or the release's. */}}
{{- define "ebs-csi-driver.nodeNamespace" -}}
{{ .Values.node.namespaceOverride | default .Release.Namespace }}
{{- end }}

{{/*
Tolerations the node pods get when tolerateAllTaints is false, besides
node.tolerations (as in the reference chart): the driver's own startup taint,
and the taints cluster-autoscaler and Karpenter put on nodes they drain, so
the node plugin stays until the volumes are detached.
*/}}
{{- define "ebs-csi-driver.nodeTolerations" -}}
- key: ebs.csi.aws.com/agent-not-ready
  operator: Exists
- key: ToBeDeletedByClusterAutoscaler
  operator: Exists
- key: karpenter.sh/disrupted
  operator: Exists
- key: karpenter.sh/disruption
  operator: Exists
{{- end }}

{{/* Leader-election flags of a controller sidecar (argument: sidecars.<name>). */}}
{{- define "ebs-csi-driver.leaderElection" -}}
{{- with .leaderElection }}
- --leader-election={{ .enabled }}
{{- if .enabled }}
{{- with .leaseDuration }}
- --leader-election-lease-duration={{ . }}
{{- end }}
{{- with .renewDeadline }}
- --leader-election-renew-deadline={{ . }}
{{- end }}
{{- with .retryPeriod }}
- --leader-election-retry-period={{ . }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* --extra-tags value: k=v pairs sorted by key. */}}
{{- define "ebs-csi-driver.extraTags" -}}
{{- $tags := list -}}
{{- range $k, $v := . -}}
{{- $tags = append $tags (printf "%s=%v" $k $v) -}}
{{- end -}}
{{- join "," $tags -}}
{{- end }}

{{/* Path of the driver's plugin directory on the host. */}}
{{- define "ebs-csi-driver.pluginDir" -}}
{{ trimSuffix "/" .Values.node.kubeletPath }}/plugins/ebs.csi.aws.com
{{- end }}

{{/*
A class parameter as a quoted string. YAML numbers reach templates as float64,
which print as 2e+06; whole numbers are printed as integers instead.
*/}}
{{- define "ebs-csi-driver.param" -}}
{{- if and (kindIs "float64" .) (eq . (float64 (int64 .))) -}}
{{ int64 . | toString | quote }}
{{- else -}}
{{ toString . | quote }}
{{- end -}}
{{- end }}

{{/*
Deep merge for additionalDaemonSets (argument: dict "dst" map "src" map):
copies src into dst, recursing where both sides are maps. Unlike sprig's
merge, a false, 0 or null in src does replace the value (null unsets it).
*/}}
{{- define "ebs-csi-driver.deepMerge" -}}
{{- $dst := .dst -}}
{{- range $k, $v := .src -}}
{{- if and (kindIs "map" $v) (kindIs "map" (index $dst $k)) -}}
{{- include "ebs-csi-driver.deepMerge" (dict "dst" (index $dst $k) "src" $v) -}}
{{- else -}}
{{- $_ := set $dst $k $v -}}
{{- end -}}
{{- end -}}
{{- end }}
