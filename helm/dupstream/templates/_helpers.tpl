{{/* Chart name. */}}
{{- define "dupstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full resource name: "<release>-dupstream", or the release name when it contains the chart name. */}}
{{- define "dupstream.fullname" -}}
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

{{- define "dupstream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dupstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dupstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Pod labels of the lookup server: another name, so the consumer's selectors (Service, PDB,
anti-affinity) never pick server pods and the reverse. */}}
{{- define "dupstream.serverSelectorLabels" -}}
app.kubernetes.io/name: {{ include "dupstream.name" . }}-server
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dupstream.labels" -}}
helm.sh/chart: {{ include "dupstream.chart" . }}
{{ include "dupstream.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dupstream
{{- end -}}

{{- define "dupstream.image" -}}
{{- $tag := default (printf "%s-%s" .Chart.AppVersion .Values.image.variant) .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "dupstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "dupstream.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Flattens a settings map into DUPSTREAM_* environment variables, one "NAME: value" line each:
nested keys are upper-cased and joined with "__" (pydantic-settings' env_nested_delimiter);
strings are quoted as they are, other scalars and lists are written as JSON (so 52428800 stays an
integer and [a, b] parses as a list); null leaves the service default.
Call with (dict "map" .Values.config "prefix" "DUPSTREAM_").
*/}}
{{- define "dupstream.envLines" -}}
{{- $prefix := .prefix -}}
{{- range $key, $value := .map }}
{{- $name := printf "%s%s" $prefix (upper $key) }}
{{- if kindIs "map" $value }}
{{- include "dupstream.envLines" (dict "map" $value "prefix" (printf "%s__" $name)) }}
{{- else if kindIs "invalid" $value }}
{{- else if kindIs "string" $value }}
{{ $name }}: {{ $value | quote }}
{{- else }}
{{ $name }}: {{ toJson $value | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Same as envLines, values base64-encoded (Secret data). */}}
{{- define "dupstream.secretLines" -}}
{{- $prefix := .prefix -}}
{{- range $key, $value := .map }}
{{- $name := printf "%s%s" $prefix (upper $key) }}
{{- if kindIs "map" $value }}
{{- include "dupstream.secretLines" (dict "map" $value "prefix" (printf "%s__" $name)) }}
{{- else if kindIs "invalid" $value }}
{{- else if kindIs "string" $value }}
{{ $name }}: {{ $value | b64enc | quote }}
{{- else }}
{{ $name }}: {{ toJson $value | b64enc | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "dupstream.hasSecrets" -}}
{{- if .Values.secrets }}{{ include "dupstream.secretLines" (dict "map" .Values.secrets "prefix" "DUPSTREAM_") | trim }}{{ end -}}
{{- end -}}

{{/* Render-time checks that a JSON schema cannot express (relations between values). */}}
{{- define "dupstream.validate" -}}
{{- $partitions := int .Values.topics.inputPartitions -}}
{{- if and .Values.keda.enabled (gt (int .Values.keda.maxReplicaCount) $partitions) -}}
{{- fail (printf "keda.maxReplicaCount (%d) must be <= topics.inputPartitions (%d): a consumer beyond the partition count sits idle and never turns ready" (int .Values.keda.maxReplicaCount) $partitions) -}}
{{- end -}}
{{- if and .Values.keda.enabled (gt (int .Values.keda.minReplicaCount) (int .Values.keda.maxReplicaCount)) -}}
{{- fail (printf "keda.minReplicaCount (%d) must be <= keda.maxReplicaCount (%d)" (int .Values.keda.minReplicaCount) (int .Values.keda.maxReplicaCount)) -}}
{{- end -}}
{{- if and (not .Values.keda.enabled) (gt (int .Values.replicaCount) $partitions) -}}
{{- fail (printf "replicaCount (%d) must be <= topics.inputPartitions (%d): a consumer beyond the partition count sits idle and never turns ready" (int .Values.replicaCount) $partitions) -}}
{{- end -}}
{{- if le (int .Values.terminationGracePeriodSeconds) (int .Values.shutdownBudgetSeconds) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be greater than shutdownBudgetSeconds (%d): the pod would be killed before it flushes and commits" (int .Values.terminationGracePeriodSeconds) (int .Values.shutdownBudgetSeconds)) -}}
{{- end -}}
{{- if and .Values.server.enabled .Values.server.autoscaling.enabled (gt (int .Values.server.autoscaling.minReplicas) (int .Values.server.autoscaling.maxReplicas)) -}}
{{- fail (printf "server.autoscaling.minReplicas (%d) must be <= server.autoscaling.maxReplicas (%d)" (int .Values.server.autoscaling.minReplicas) (int .Values.server.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- if and .Values.server.enabled .Values.server.autoscaling.enabled (not .Values.server.autoscaling.targetCPUUtilizationPercentage) (not .Values.server.autoscaling.targetRequestsPerSecond) -}}
{{- fail "server.autoscaling needs a target: targetCPUUtilizationPercentage or targetRequestsPerSecond" -}}
{{- end -}}
{{- if not .Values.config.metrics_port -}}
{{- fail "config.metrics_port must be set: probes and metrics need the HTTP port" -}}
{{- end -}}
{{- end -}}

{{/* Pod environment shared by the Deployment and the snapshot CronJob. */}}
{{- define "dupstream.envFrom" -}}
- configMapRef:
    name: {{ include "dupstream.fullname" . }}
{{- if include "dupstream.hasSecrets" . }}
- secretRef:
    name: {{ include "dupstream.fullname" . }}
{{- end }}
{{- if .Values.existingSecret }}
- secretRef:
    name: {{ .Values.existingSecret }}
{{- end }}
{{- with .Values.extraEnvFrom }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "dupstream.env" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: HOME
  value: /tmp
- name: XDG_CACHE_HOME
  value: /tmp/.cache
- name: MPLCONFIGDIR
  value: /tmp/matplotlib
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Checksum of the rendered ConfigMap and Secret: a config change rolls the pods. */}}
{{- define "dupstream.configChecksum" -}}
{{- $cm := include (print .Template.BasePath "/configmap.yaml") . -}}
{{- $sec := include (print .Template.BasePath "/secret.yaml") . -}}
{{- print $cm $sec | sha256sum -}}
{{- end -}}
