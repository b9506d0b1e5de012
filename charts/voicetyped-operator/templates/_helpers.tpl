{{/* The chart's name, or nameOverride. */}}
{{- define "voicetyped-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "voicetyped-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "voicetyped-operator.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "voicetyped-operator.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "voicetyped-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "voicetyped-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "voicetyped-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "voicetyped-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: voicetyped
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "voicetyped-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "voicetyped-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator's permissions, the same for the ClusterRole and each namespaced Role:
only what it calls. Children: server-side apply (create, patch), list/watch (drift and
status), delete (pruning). Secrets: get by name only, never list or watch.
*/}}
{{- define "voicetyped-operator.rules" -}}
- apiGroups: ["voicetyped.io"]
  resources: ["voicedeployments", "dialogs", "integrations"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["voicetyped.io"]
  resources: ["voicedeployments/status", "dialogs/status", "integrations/status"]
  verbs: ["get", "patch"]
# ownerReferences with blockOwnerDeletion (OwnerReferencesPermissionEnforcement).
- apiGroups: ["voicetyped.io"]
  resources: ["voicedeployments/finalizers", "dialogs/finalizers", "integrations/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
  {{- with .Values.rbac.secretNames }}
  resourceNames: {{ toJson . }}
  {{- end }}
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# The media pods of VoiceDeployments with trunks: their IPs, to read GET /v1/trunks.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
{{- end }}
