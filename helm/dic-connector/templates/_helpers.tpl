{{/* Names, labels and the pieces every pod shares. */}}

{{- define "dic.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dic.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else if contains (include "dic.name" .) .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "dic.name" .) | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "dic.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "dic.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component (node, connector): include with (list $ "node"). */}}
{{- define "dic.selector" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ include "dic.name" $ }}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "dic.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end }}
{{- end }}

{{/* The node Service (one node) or the headless Service of the StatefulSet (all-in-one). */}}
{{- define "dic.nodeService" -}}
{{- if .Values.node.allInOne }}{{ include "dic.fullname" . }}-node-peers{{ else }}{{ include "dic.fullname" . }}-node{{ end }}
{{- end }}

{{/* The three peers as the node config lists them (all-in-one: this release's pods). */}}
{{- define "dic.peers" -}}
{{- $peers := list -}}
{{- if .Values.node.allInOne -}}
{{- $svc := include "dic.nodeService" . -}}
{{- range $i := until 3 -}}
{{- $host := printf "%s-node-%d.%s.%s.svc.cluster.local" (include "dic.fullname" $) $i $svc $.Release.Namespace -}}
{{- $peers = append $peers (dict "name" (printf "node-%d" $i) "apiUrl" (printf "https://%s:%d" $host (int $.Values.node.service.apiPort)) "mpcHost" $host "mpcPort" (int $.Values.node.service.mpcPort)) -}}
{{- end -}}
{{- else -}}
{{- $peers = .Values.node.peers -}}
{{- end -}}
{{- toJson $peers -}}
{{- end }}

{{/* connector `nodes`: from values, or this release's nodes (all-in-one). */}}
{{- define "dic.connectorNodes" -}}
{{- $nodes := list -}}
{{- if .Values.connector.nodes -}}
{{- $nodes = .Values.connector.nodes -}}
{{- else -}}
{{- range (include "dic.peers" . | fromJsonArray) -}}
{{- $nodes = append $nodes (dict "url" .apiUrl "name" .name) -}}
{{- end -}}
{{- end -}}
{{- toJson $nodes -}}
{{- end }}

{{/* The container securityContext of every container. */}}
{{- define "dic.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurityContext.runAsUser }}
runAsGroup: {{ .Values.podSecurityContext.runAsGroup }}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Pod-level settings every pod shares. */}}
{{- define "dic.podCommon" -}}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Secret names, the generated ones under dev.generateSecrets. */}}
{{- define "dic.secret" -}}
{{- $ := index . 0 -}}{{- $which := index . 1 -}}
{{- if $.Values.dev.generateSecrets -}}
{{ include "dic.fullname" $ }}-dev-{{ $which }}
{{- else if eq $which "node-tls" }}{{ $.Values.node.secrets.tls }}
{{- else if eq $which "node-keyring" }}{{ $.Values.node.secrets.keyring }}
{{- else if eq $which "node-database" }}{{ $.Values.node.secrets.database }}
{{- else if eq $which "connector-tls" }}{{ $.Values.connector.secrets.tls }}
{{- else if eq $which "connector-database" }}{{ $.Values.connector.secrets.database }}
{{- else if eq $which "connector-lineage" }}{{ $.Values.connector.secrets.lineageKey }}
{{- end -}}
{{- end }}
