{{/* The connector config file (keys of dic_connector/connector/config.py); the state
database URL comes from the environment (DIC_CONNECTOR_STATE_DATABASE_URL). */}}
{{- define "dic.connectorConfig" -}}
{{- $c := .Values.connector -}}
{{- $cfg := dict "site" $c.site "nodes" (include "dic.connectorNodes" . | fromJsonArray) "datasets" $c.datasets "listen" (dict "host" "0.0.0.0" "port" (int $c.service.port)) "tls" (dict "ca_cert" "/etc/dic/tls/ca.crt" "cert" "/etc/dic/tls/tls.crt" "key" "/etc/dic/tls/tls.key") "lineage_key_file" "/etc/dic/lineage/lineage.key" "upload_timeout_s" (int $c.uploadTimeoutS) "max_parallel_runs" (int $c.maxParallelRuns) -}}
{{- with $c.operatorTokenSha256 }}{{ $_ := set $cfg "operator_token_sha256" . }}{{ end -}}
{{- toYaml $cfg -}}
{{- end }}

{{- define "dic.connectorEnv" -}}
- name: DIC_CONNECTOR_STATE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "dic.secret" (list . "connector-database") }}
      key: url
{{- range .Values.connector.secretEnv }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .key }}
{{- end }}
{{- end }}

{{- define "dic.connectorMounts" -}}
- {name: config, mountPath: /etc/dic/connector, readOnly: true}
- {name: tls, mountPath: /etc/dic/tls, readOnly: true}
- {name: lineage, mountPath: /etc/dic/lineage, readOnly: true}
- {name: data, mountPath: /var/lib/dic}
- {name: tmp, mountPath: /tmp}
{{- if .Values.connector.mappingsConfigMap }}
- {name: mappings, mountPath: /etc/dic/mappings, readOnly: true}
{{- end }}
{{- end }}

{{- define "dic.connectorVolumes" -}}
- name: config
  configMap:
    name: {{ include "dic.fullname" . }}-connector
- name: tls
  secret:
    secretName: {{ include "dic.secret" (list . "connector-tls") }}
    defaultMode: 0440
- name: lineage
  secret:
    secretName: {{ include "dic.secret" (list . "connector-lineage") }}
    defaultMode: 0440
- name: data
  emptyDir: {sizeLimit: 1Gi}
- name: tmp
  emptyDir: {sizeLimit: 2Gi}
{{- with .Values.connector.mappingsConfigMap }}
- name: mappings
  configMap:
    name: {{ . }}
{{- end }}
{{- end }}
