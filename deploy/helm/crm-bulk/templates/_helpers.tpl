{{/* Names, labels and the pieces every crm-bulk pod shares. */}}

{{- define "crm-bulk.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "crm-bulk.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A component's resource name: (dict "root" $ "component" "api") */}}
{{- define "crm-bulk.componentName" -}}
{{- printf "%s-%s" (include "crm-bulk.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "crm-bulk.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "crm-bulk.selectorLabels" -}}
app.kubernetes.io/name: {{ include "crm-bulk.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "crm-bulk.labels" -}}
helm.sh/chart: {{ include "crm-bulk.chart" .root }}
{{ include "crm-bulk.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: crm-bulk
{{- end -}}

{{- define "crm-bulk.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "crm-bulk.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "crm-bulk.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The kafka:// hosts of config.queueUrl, as KEDA's bootstrapServers. */}}
{{- define "crm-bulk.kafkaBootstrap" -}}
{{- default (trimPrefix "kafka://" .Values.config.queueUrl) .Values.keda.bootstrapServers -}}
{{- end -}}

{{/* Refuse values the platform cannot run with, at render time rather than in a crash-looping pod. */}}
{{- define "crm-bulk.validate" -}}
{{- if not (hasPrefix "kafka://" .Values.config.queueUrl) -}}
{{- fail "config.queueUrl must be kafka://host:port[,host:port]: the chart scales workers on Kafka lag (the Postgres-table queue is for one machine)" -}}
{{- end -}}
{{- if not .Values.secrets.existingSecret -}}
{{- fail "secrets.existingSecret must name an existing Secret with the backend URLs and the JWT secret" -}}
{{- end -}}
{{- range $key := list "databaseUrl" "clickhouseUrl" "redisUrl" -}}
{{- if not (index $.Values.secrets.keys $key) -}}
{{- fail (printf "secrets.keys.%s is required: every pod needs that backend" $key) -}}
{{- end -}}
{{- end -}}
{{- if and (hasPrefix "HS" .Values.config.jwtAlgorithm) (not .Values.secrets.keys.jwtSecret) -}}
{{- fail "secrets.keys.jwtSecret is required with an HS* config.jwtAlgorithm" -}}
{{- end -}}
{{- if and (not (hasPrefix "HS" .Values.config.jwtAlgorithm)) (not .Values.jwtKeys.existingSecret) -}}
{{- fail "jwtKeys.existingSecret is required with an asymmetric config.jwtAlgorithm" -}}
{{- end -}}
{{- $consumers := mul (int .Values.worker.autoscaling.maxReplicas) (int .Values.worker.processesPerPod) -}}
{{- if gt $consumers (int .Values.config.kafkaPartitions) -}}
{{- fail (printf "worker.autoscaling.maxReplicas * worker.processesPerPod (%d) exceeds config.kafkaPartitions (%d): consumers beyond the partitions idle" $consumers (int .Values.config.kafkaPartitions)) -}}
{{- end -}}
{{- if lt (int .Values.worker.autoscaling.minReplicas) 0 -}}
{{- fail "worker.autoscaling.minReplicas must not be negative" -}}
{{- end -}}
{{- end -}}

{{/* Environment of every crm-bulk container: the ConfigMap, the secret settings, the key files. */}}
{{- define "crm-bulk.env" -}}
{{- $secret := .Values.secrets.existingSecret -}}
- name: CRM_BULK_WORKER_PROCESSES
  value: {{ .Values.worker.processesPerPod | quote }}
{{- range $setting, $key := .Values.secrets.keys }}
{{- if $key }}
- name: CRM_BULK_{{ $setting | snakecase | upper }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $key }}
{{- end }}
{{- end }}
{{- if .Values.jwtKeys.existingSecret }}
- name: CRM_BULK_JWT_PRIVATE_KEY_FILE
  value: /etc/crm-bulk/jwt/{{ .Values.jwtKeys.privateKey }}
{{- if .Values.jwtKeys.publicKey }}
- name: CRM_BULK_JWT_PUBLIC_KEY_FILE
  value: /etc/crm-bulk/jwt/{{ .Values.jwtKeys.publicKey }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The non-secret settings as name/value pairs (the ConfigMap's data, and the hook Job's env). */}}
{{- define "crm-bulk.configData" -}}
{{- range $setting, $value := .Values.config }}
{{- /* Helm reads YAML numbers as floats: whole ones are written as integers, not 1.048576e+07. */}}
{{- if and (kindIs "float64" $value) (eq $value (floor $value)) }}
CRM_BULK_{{ $setting | snakecase | upper }}: {{ int64 $value | toString | quote }}
{{- else }}
CRM_BULK_{{ $setting | snakecase | upper }}: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "crm-bulk.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: {{ .Values.config.dataDir }}
{{- if .Values.jwtKeys.existingSecret }}
- name: jwt-keys
  mountPath: /etc/crm-bulk/jwt
  readOnly: true
{{- end }}
{{- end -}}

{{- define "crm-bulk.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
- name: data
  emptyDir:
    sizeLimit: 64Mi
{{- if .Values.jwtKeys.existingSecret }}
- name: jwt-keys
  secret:
    secretName: {{ .Values.jwtKeys.existingSecret }}
    defaultMode: 0400
{{- end }}
{{- end -}}

{{/* Pod-level settings every component shares: (dict "root" $ "component" "api") */}}
{{- define "crm-bulk.podCommon" -}}
serviceAccountName: {{ include "crm-bulk.serviceAccountName" .root }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "crm-bulk.podMetadata" -}}
labels:
  {{- include "crm-bulk.selectorLabels" . | nindent 2 }}
  {{- with .root.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  checksum/config: {{ include "crm-bulk.configData" .root | sha256sum }}
  {{- with .root.Values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* Spread a component's pods over nodes and zones: (dict "root" $ "component" "api") */}}
{{- define "crm-bulk.topologySpread" -}}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "crm-bulk.selectorLabels" . | nindent 8 }}
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "crm-bulk.selectorLabels" . | nindent 8 }}
{{- end -}}

{{/* Checks checkov reports that these workloads do not meet, each with the reason (metadata.annotations). */}}
{{- define "crm-bulk.checkovSkips" -}}
checkov.io/skip1: CKV_K8S_35=crm-bulk reads settings only from CRM_BULK_* environment variables; the secret ones come from an existing Secret by secretKeyRef and are never in the manifest
{{- if not .Values.image.digest }}
checkov.io/skip2: CKV_K8S_43=image.digest is unset in these values, which name the release tag; a production release pins the digest (values-production.yaml)
{{- end }}
{{- end -}}
