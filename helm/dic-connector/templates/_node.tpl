{{/* The node config file (keys of dic_connector/node/config.py). The database URL, and in
all-in-one mode the index, certificate and key, come from the environment (DIC_*). */}}
{{- define "dic.nodeConfig" -}}
{{- $n := .Values.node -}}
{{- $peers := list -}}
{{- range $i, $p := (include "dic.peers" . | fromJsonArray) -}}
{{- /* a node listens for MPC on its own entry's host: every interface of the pod */ -}}
{{- $host := ternary "0.0.0.0" $p.mpcHost (and (not $n.allInOne) (eq (int $i) (int $n.index))) -}}
{{- $peers = append $peers (dict "api_url" $p.apiUrl "mpc_host" $host "mpc_port" (int $p.mpcPort) "name" $p.name) -}}
{{- end -}}
{{- $cfg := dict "listen_host" "0.0.0.0" "listen_port" (int $n.service.apiPort) "keyring_file" "/run/dic/keyring/keyring.json" "peers" $peers -}}
{{- if $n.allInOne -}}
{{- $_ := set $cfg "tls" (dict "ca_cert" "/etc/dic/tls/ca.crt") -}}
{{- else -}}
{{- $_ := set $cfg "node_index" (int $n.index) -}}
{{- $_ := set $cfg "tls" (dict "ca_cert" "/etc/dic/tls/ca.crt" "cert" "/etc/dic/tls/tls.crt" "key" "/etc/dic/tls/tls.key") -}}
{{- end -}}
{{- range $k, $v := $n.config -}}
{{- if not (kindIs "invalid" $v) }}{{ $_ := set $cfg $k $v }}{{ end -}}
{{- end -}}
{{- $auth := dict "failure_burst" (int $n.auth.failureBurst) "failure_refill_per_s" $n.auth.failureRefillPerS -}}
{{- if $n.auth.jwksConfigMap -}}
{{- $auth = merge $auth (dict "jwks_file" "/etc/dic/jwks/jwks.json" "jwt_issuer" $n.auth.jwtIssuer "jwt_audience" $n.auth.jwtAudience "jwt_algorithms" $n.auth.jwtAlgorithms) -}}
{{- end -}}
{{- $_ := set $cfg "auth" $auth -}}
{{- toYaml $cfg -}}
{{- end }}

{{/* Environment of a node container: include with (list $ FIELD_PATH_OF_THE_INDEX). */}}
{{- define "dic.nodeEnv" -}}
{{- $ := index . 0 -}}
{{- if $.Values.node.allInOne }}
- name: POD_INDEX
  valueFrom:
    fieldRef:
      fieldPath: {{ index . 1 }}
- name: DIC_NODE_INDEX
  value: $(POD_INDEX)
- name: DB_SERVER_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "dic.secret" (list $ "node-database") }}
      key: url
- name: DIC_DATABASE_URL
  value: $(DB_SERVER_URL)dic_node_$(POD_INDEX)
- name: DIC_TLS__CERT
  value: /etc/dic/tls/node-$(POD_INDEX).crt
- name: DIC_TLS__KEY
  value: /etc/dic/tls/node-$(POD_INDEX).key
{{- else }}
- name: DIC_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "dic.secret" (list $ "node-database") }}
      key: url
{{- end }}
{{- end }}

{{/* The node pod template's spec: include with (list $ FIELD_PATH_OF_THE_INDEX). */}}
{{- define "dic.nodePodSpec" -}}
{{- $ := index . 0 -}}
{{- $n := $.Values.node -}}
{{ include "dic.podCommon" $ }}
terminationGracePeriodSeconds: 30
initContainers:
  {{- /* the keyring must be mode 0600 (dic refuses group-readable keys); Secret volumes
  with fsGroup are 0440, so it is copied into memory first */}}
  - name: keyring
    image: {{ include "dic.image" $ }}
    imagePullPolicy: {{ $.Values.image.pullPolicy }}
    {{- if $n.allInOne }}
    env:
      - name: POD_INDEX
        valueFrom:
          fieldRef:
            fieldPath: {{ index . 1 }}
    {{- end }}
    command: [install, -m, "0600", {{ ternary "/etc/dic/keyring/node-$(POD_INDEX).keyring.json" "/etc/dic/keyring/keyring.json" $n.allInOne | quote }}, /run/dic/keyring/keyring.json]
    securityContext:
      {{- include "dic.containerSecurityContext" $ | nindent 6 }}
    resources:
      requests: {cpu: 10m, memory: 16Mi}
      limits: {cpu: 100m, memory: 64Mi}
    volumeMounts:
      - {name: keyring-secret, mountPath: /etc/dic/keyring, readOnly: true}
      - {name: keyring, mountPath: /run/dic/keyring}
  {{- if $.Values.dev.generateSecrets }}
  - name: migrate
    image: {{ include "dic.image" $ }}
    imagePullPolicy: {{ $.Values.image.pullPolicy }}
    args: [node, migrate, --config, /etc/dic/node/node.yaml]
    env:
      {{- include "dic.nodeEnv" (list $ (index . 1)) | nindent 6 }}
    securityContext:
      {{- include "dic.containerSecurityContext" $ | nindent 6 }}
    resources:
      {{- toYaml $n.resources | nindent 6 }}
    volumeMounts:
      - {name: config, mountPath: /etc/dic/node, readOnly: true}
      - {name: data, mountPath: /var/lib/dic}
      - {name: tmp, mountPath: /tmp}
  {{- end }}
containers:
  - name: node
    image: {{ include "dic.image" $ }}
    imagePullPolicy: {{ $.Values.image.pullPolicy }}
    args: [node, serve, --config, /etc/dic/node/node.yaml]
    env:
      {{- include "dic.nodeEnv" (list $ (index . 1)) | nindent 6 }}
    ports:
      - {name: api, containerPort: {{ $n.service.apiPort }}, protocol: TCP}
      - {name: mpc, containerPort: {{ $n.service.mpcPort }}, protocol: TCP}
    livenessProbe:
      httpGet: {path: /live, port: api, scheme: HTTPS}
      periodSeconds: 10
      timeoutSeconds: 5
      failureThreshold: 6
    readinessProbe:
      httpGet: {path: /ready, port: api, scheme: HTTPS}
      periodSeconds: 10
      timeoutSeconds: 5
      failureThreshold: 3
    securityContext:
      {{- include "dic.containerSecurityContext" $ | nindent 6 }}
    resources:
      {{- toYaml $n.resources | nindent 6 }}
    volumeMounts:
      - {name: config, mountPath: /etc/dic/node, readOnly: true}
      - {name: tls, mountPath: /etc/dic/tls, readOnly: true}
      - {name: keyring, mountPath: /run/dic/keyring, readOnly: true}
      - {name: data, mountPath: /var/lib/dic}
      - {name: tmp, mountPath: /tmp}
      {{- if $n.auth.jwksConfigMap }}
      - {name: jwks, mountPath: /etc/dic/jwks, readOnly: true}
      {{- end }}
volumes:
  - name: config
    configMap:
      name: {{ include "dic.fullname" $ }}-node
  - name: tls
    secret:
      secretName: {{ include "dic.secret" (list $ "node-tls") }}
      defaultMode: 0440
  - name: keyring-secret
    secret:
      secretName: {{ include "dic.secret" (list $ "node-keyring") }}
      defaultMode: 0440
  - name: keyring
    emptyDir: {medium: Memory, sizeLimit: 1Mi}
  - name: data
    emptyDir: {sizeLimit: 1Gi}
  - name: tmp
    emptyDir: {sizeLimit: 256Mi}
  {{- if $n.auth.jwksConfigMap }}
  - name: jwks
    configMap:
      name: {{ $n.auth.jwksConfigMap }}
  {{- end }}
{{- end }}
