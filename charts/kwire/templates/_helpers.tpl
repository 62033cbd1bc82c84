{{/*
Chart name, overridable with nameOverride.
*/}}
{{- define "kwire.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/*
Full name: fullnameOverride, else the release name if it contains the chart
name, else "<release>-<chart name>". Truncated so that "<fullname>-operator"
and "<fullname>-leader-election" stay within 63 characters.
*/}}
{{- define "kwire.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "kwire.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 45 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kwire.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels of every object. Call with (dict "ctx" $ "component" "operator").
*/}}
{{- define "kwire.labels" -}}
helm.sh/chart: {{ include "kwire.chart" .ctx }}
{{ include "kwire.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: kwire
{{- end -}}

{{/*
Labels that select one component's pods. Never change them: a Deployment's
and a DaemonSet's selector is immutable.
*/}}
{{- define "kwire.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kwire.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
The ServiceAccount names are fixed: the tests and docs grant and check
permissions for exactly these names.
*/}}
{{- define "kwire.operatorServiceAccount" -}}kwire-operator{{- end -}}
{{- define "kwire.nodeServiceAccount" -}}kwire-node{{- end -}}

{{/*
"<repository>:<tag>", the tag defaulting to the chart's appVersion. Call with
(dict "ctx" $ "image" .Values.operator.image).
*/}}
{{- define "kwire.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/*
Whether the operator runs more than one replica (leader election, PDB).
*/}}
{{- define "kwire.operatorHA" -}}
{{- if gt (int .Values.operator.replicas) 1 -}}true{{- end -}}
{{- end -}}
