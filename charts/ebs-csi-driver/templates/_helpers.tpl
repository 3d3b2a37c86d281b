{{/* Chart label value: name-version. */}}
{{- define "ebs-csi-driver.chart" -}}
{{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object. app.kubernetes.io/name stays "aws-ebs-csi-driver", as
in the reference chart, so the selectors match and either chart can upgrade
the other's release.
*/}}
{{- define "ebs-csi-driver.labels" -}}
app.kubernetes.io/name: aws-ebs-csi-driver
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ include "ebs-csi-driver.chart" . }}
{{- with .Values.customLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "ebs-csi-driver.selectorLabels" -}}
app.kubernetes.io/name: aws-ebs-csi-driver
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The driver image. */}}
{{- define "ebs-csi-driver.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default (printf "v%s" .Chart.AppVersion) }}
{{- end }}

{{/* A sidecar image from sidecars.<name>.image. */}}
{{- define "ebs-csi-driver.sidecarImage" -}}
{{ .image.repository }}:{{ .image.tag }}
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
